"""Retention and choosing what to resume from: only complete, listed, loadable checkpoints."""

import json

import pytest
import torch

from specrun.engine.checkpoint import Checkpointer


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((32,), float(step))}, "counters": {"step": step}}


def _ck(directory, keep=2):
    return Checkpointer(directory, keep, "step_{step}.pt", "best.pt", "final.pt")


def _listed(directory) -> list[tuple[str, str, int]]:
    entries = json.loads((directory / "index.json").read_text())["checkpoints"]
    return sorted((e["kind"], e["file"], e["step"]) for e in entries)


def _files(directory) -> set[str]:
    return {p.name for p in directory.iterdir()} - {"index.json"}


def test_keep_k_newest_regular_and_never_best_or_final(tmp_path):
    d = tmp_path / "ck"
    ck = _ck(d, keep=2)
    ck.save(_state(1), "regular", 1, 0)
    ck.save(_state(2), "best", 2, 0)
    for step in range(2, 7):
        ck.save(_state(step), "regular", step, 0)
    ck.save(_state(6), "final", 6, 0)
    for step in range(7, 10):
        ck.save(_state(step), "regular", step, 0)
    assert _listed(d) == [("best", "best.pt", 2), ("final", "final.pt", 6),
                          ("regular", "step_8.pt", 8), ("regular", "step_9.pt", 9)]
    assert _files(d) == {"best.pt", "final.pt", "step_8.pt", "step_9.pt"}
    assert torch.load(d / "best.pt", weights_only=True)["counters"]["step"] == 2


def test_a_new_best_replaces_the_old_one(tmp_path):
    d = tmp_path / "ck"
    ck = _ck(d, keep=1)
    ck.save(_state(2), "best", 2, 0)
    ck.save(_state(3), "regular", 3, 0)
    ck.save(_state(4), "best", 4, 0)
    assert _listed(d) == [("best", "best.pt", 4), ("regular", "step_3.pt", 3)]


def test_keep_one(tmp_path):
    d = tmp_path / "ck"
    ck = _ck(d, keep=1)
    for step in (5, 10, 15):
        ck.save(_state(step), "regular", step, 0)
        assert _files(d) == {f"step_{step}.pt"}


def test_partial_and_unlisted_files_are_never_picked(tmp_path):
    d = tmp_path / "ck"
    ck = _ck(d, keep=3)
    ck.save(_state(4), "regular", 4, 0)
    ck.save(_state(8), "regular", 8, 0)
    (d / ".step_12.pt.partial").write_bytes(b"\x00" * 100)  # a write that died half way
    torch.save(_state(99), d / "step_99.pt")  # complete, but the index never recorded it
    torch.save(_state(50), d / "final.pt")  # a final.pt the index does not list
    assert [e["file"] for e in ck.candidates()] == ["step_8.pt", "step_4.pt"]
    state, path = ck.load_latest(lambda msg: pytest.fail(msg))
    assert path.name == "step_8.pt" and state["counters"]["step"] == 8


def test_best_is_never_a_resume_candidate_and_final_wins_a_tie(tmp_path):
    d = tmp_path / "ck"
    ck = _ck(d, keep=3)
    ck.save(_state(6), "regular", 6, 0)
    ck.save(_state(9), "best", 9, 0)
    ck.save(_state(6), "final", 6, 0)
    assert [e["file"] for e in ck.candidates()] == ["final.pt", "step_6.pt"]


@pytest.mark.parametrize("damage", ["truncate", "zeros", "delete"])
def test_a_damaged_newest_checkpoint_falls_back_and_says_so(tmp_path, damage):
    d = tmp_path / "ck"
    ck = _ck(d, keep=3)
    for step in (3, 6, 9):
        ck.save(_state(step), "regular", step, 0)
    newest = d / "step_9.pt"
    size = newest.stat().st_size
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[: size // 2])
    elif damage == "zeros":
        newest.write_bytes(b"\x00" * size)  # same size: only loading can tell
    else:
        newest.unlink()
    warnings = []
    state, path = ck.load_latest(warnings.append)
    assert path.name == "step_6.pt" and state["counters"]["step"] == 6
    assert len(warnings) == 1
    assert warnings[0].startswith("checkpoint step_9.pt cannot be loaded")
    assert "falling back to the previous one" in warnings[0]


def test_nothing_loadable(tmp_path):
    d = tmp_path / "ck"
    ck = _ck(d, keep=2)
    ck.save(_state(3), "regular", 3, 0)
    (d / "step_3.pt").write_bytes(b"junk")
    warnings = []
    assert ck.load_latest(warnings.append) is None
    assert len(warnings) == 1
    assert _ck(tmp_path / "empty").load_latest(warnings.append) is None


def test_rotation_after_a_fallback_keeps_the_checkpoint_just_written(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    ck = _ck(d, keep=1)
    # the index lists step_5 (good) and step_10 (damaged by a disk fault, a bad copy...);
    # the resumed run falls back to step_5 and goes on, saving step_6 next (checkpoint.every
    # or keep changed with --allow-spec-change, an epoch-based `every`...)
    torch.save(_state(5), d / "step_5.pt")
    (d / "step_10.pt").write_bytes(b"\x00" * 10)
    (d / "index.json").write_text(json.dumps({"checkpoints": [
        {"file": "step_5.pt", "step": 5, "epoch": 0, "kind": "regular",
         "bytes": (d / "step_5.pt").stat().st_size, "time": 1.0},
        {"file": "step_10.pt", "step": 10, "epoch": 0, "kind": "regular", "bytes": 10, "time": 2.0}]}))
    state, path = ck.load_latest(lambda msg: None)
    assert path.name == "step_5.pt"
    ck.save(_state(6), "regular", 6, 0)  # the resumed run goes on and checkpoints step 6
    assert (d / "step_6.pt").exists()
    state, path = ck.load_latest(lambda msg: None)
    assert state["counters"]["step"] == 6


def test_best_needs_to_beat_the_last_by_min_delta():
    """cognate: best_model.pt only when val loss beats the best by min_delta (0.01)."""
    from collections import deque
    from types import SimpleNamespace

    from specrun.engine.loop import best_improved
    from specrun.sections import Best

    series = deque(maxlen=1)
    run = SimpleNamespace(best_value=None, history=SimpleNamespace(context=SimpleNamespace(series={"val.loss": series})),
                          plan=SimpleNamespace(checkpoint=SimpleNamespace(best=Best("val.loss", min_delta=0.01))))
    kept = []
    for loss in (1.0, 0.995, 0.985, 0.98, 0.97):
        series.append(loss)
        kept.append(best_improved(run))
    assert kept == [True, False, True, False, True]  # 0.995 and 0.98 are within 0.01 of the best
    assert run.best_value == 0.97


def _patterned(directory, keep=1, repair=True):
    return Checkpointer(directory, keep, "step_{step}.pt", "best_{step}.pt", "final.pt", repair=repair)


def test_a_rebuilt_index_keeps_each_files_kind(tmp_path):
    """best_{step}.pt after a rebuild is still a best: rotation never deletes it."""
    ck = _patterned(tmp_path)
    ck.save(_state(5), "best", 5, 0)
    ck.save(_state(10), "regular", 10, 0)
    ck.save(_state(20), "regular", 20, 0)
    torch.save(_state(3), tmp_path / "step_3.pt")  # written before checkpoints said their kind: the name tells
    (tmp_path / "index.json").write_text("{not json")
    assert {(e["file"], e["kind"]) for e in ck.index()} == {
        ("best_5.pt", "best"), ("step_20.pt", "regular"), ("step_3.pt", "regular")}
    ck.save(_state(30), "regular", 30, 0)  # keep 1: the rotation may remove regular ones only
    assert _files(tmp_path) >= {"best_5.pt", "step_30.pt"}
    assert "best_5.pt" in {e["file"] for e in ck.index()}


def test_only_the_repairing_process_writes_the_index(tmp_path):
    writer = _patterned(tmp_path)
    writer.save(_state(10), "regular", 10, 0)
    (tmp_path / "index.json").write_text("{not json")
    reader = _patterned(tmp_path, repair=False)  # rank 1 of a distributed run
    assert [e["file"] for e in reader.index()] == ["step_10.pt"]  # the same answer, from the files
    assert (tmp_path / "index.json").read_text() == "{not json"  # and nothing written
    assert [e["file"] for e in writer.index()] == ["step_10.pt"]
    assert json.loads((tmp_path / "index.json").read_text())["checkpoints"][0]["kind"] == "regular"
    assert list(tmp_path.glob("index.json.damaged-*"))
