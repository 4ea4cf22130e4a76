"""The TensorBoard sink: metrics rows as scalars, events as text, and the missing-package message."""

from __future__ import annotations

import sys

import pytest

from specrun.engine.sinks.tensorboard import TensorBoardLog, TensorBoardUnavailable, describe_event, tag

ROW = {"step": 20, "epoch": 0.3125, "segment": 0, "phase.curriculum": "main", "train.loss": 1.25,
       "train.accuracy": 0.6, "val.loss": None, "skipped": 0, "steps_per_s": 4.5, "time": 1795457231.1,
       "train.flag": True, "train.inf": float("inf")}


def test_tags():
    assert tag("train.loss") == "train/loss" and tag("val.accuracy") == "val/accuracy" and tag("epoch") == "epoch"


def test_describe_event():
    text = describe_event("phase", {"axis": "size", "old": "r8", "new": "r16",
                                    "values": {"phase.steps": 500, "mean(train.accuracy, 100)": 0.95125}})
    assert text == "promoted size: r8 -> r16 (phase.steps=500, mean(train.accuracy, 100)=0.95125)"
    assert describe_event("checkpoint", {"kind": "best", "file": "best.pt"}) == "checkpoint: kind=best, file=best.pt"
    assert describe_event("start", {}) == "start"
    assert describe_event("validation", {"metrics": {"loss": 0.60545116, "accuracy": 0.75}}) == \
        "validation: loss=0.605451, accuracy=0.75"


def test_scalars_and_events_reach_the_event_file(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = TensorBoardLog(tmp_path / "tb")
    log.row({**ROW, "step": 10, "train.loss": 1.5})
    log.row(ROW)
    log.event({"time": 1.0, "step": 20, "event": "phase", "axis": "curriculum", "old": "warm", "new": "main",
               "values": {}})
    log.close()
    log.close()  # twice is fine
    log.row({**ROW, "step": 30})  # after close: ignored, no error
    log.event({"time": 2.0, "step": 30, "event": "end"})

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert scalars == {"epoch", "segment", "train/loss", "train/accuracy", "skipped", "steps_per_s"}
    assert [(e.step, round(e.value, 4)) for e in acc.Scalars("train/loss")] == [(10, 1.5), (20, 1.25)]
    (text,) = acc.Tensors("events/phase/text_summary")
    assert text.step == 20
    assert text.tensor_proto.string_val[0].decode() == "promoted curriculum: warm -> main"


def test_missing_tensorboard_package(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.startswith(("torch.utils.tensorboard", "tensorboard"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` raises ImportError
    with pytest.raises(TensorBoardUnavailable) as info:
        TensorBoardLog(tmp_path / "tb")
    assert str(info.value) == ("log.tensorboard is on but the tensorboard package is not installed: "
                               "pip install 'specrun[tensorboard]'")
    assert isinstance(info.value, RuntimeError)
    assert not (tmp_path / "tb").exists()
