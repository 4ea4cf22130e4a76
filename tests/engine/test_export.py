"""export and load: the trained model out of a run, and back with the outputs it ended with.

The proof of "same outputs": the validation at the last step recorded val.loss (in
events.jsonl, at full precision) with the model as training left it; the loaded
model, on the same validation batches, must give that loss again.
"""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch
from click.testing import CliRunner

import specrun
from specrun.engine.export import ExportError

from .conftest import FAST_SPEC, events, make_run, run_inproc, write_spec

SPEC = FAST_SPEC + "validation {\n  every 12 steps\n  batches 2\n}\ncheckpoint.best { metric val.loss }\n"


def _val_loss(model, run) -> float:
    with torch.no_grad():
        losses = [run.loss_fn(model(batch), batch) for batch in run.task.val_batches(2)]
    return float(torch.stack(losses).mean())


@pytest.fixture
def trained(tmp_path):
    run_dir = tmp_path / "run"
    outcome = run_inproc(write_spec(tmp_path, SPEC), run_dir)
    assert outcome.status == "finished", outcome.message
    return run_dir


def test_loaded_model_gives_the_outputs_training_ended_with(trained, tmp_path):
    final_val = [e for e in events(trained, "validation") if e["step"] == 12][0]["metrics"]["loss"]
    done = specrun.export(trained, tmp_path / "out", which="final")
    assert done.step == 12 and done.weights.name == "model.safetensors"
    model = specrun.load(tmp_path / "out")
    assert not model.training  # eval mode
    (tmp_path / "ref").mkdir()
    reference = make_run(tmp_path / "ref", SPEC)  # the same task and loss, built from the spec
    try:
        assert math.isclose(_val_loss(model, reference), final_val, rel_tol=1e-6)
        straight = specrun.load(trained, which="final")  # from the run's checkpoint, no export
        batch = next(iter(reference.task.val_batches(1)))
        assert torch.equal(model(batch)["logits"], straight(batch)["logits"])
    finally:
        reference.task.close()


def test_manifest_says_what_rebuilds_the_model(trained, tmp_path):
    specrun.export(trained, tmp_path / "out", which="best")
    manifest = json.loads((tmp_path / "out" / "model.json").read_text())
    assert manifest["checkpoint"]["kind"] == "best"
    assert manifest["spec_name"] == "fast_test" and manifest["run_id"] == "run"
    assert manifest["model"]["type"] == "mlp" and manifest["model"]["info"] == {"in_features": 8, "classes": 3}
    assert manifest["plan_hash"] == json.loads((trained / "plan.json").read_text())["spec_hash"]
    assert manifest["spec"] == (trained / "spec.train").read_text()


def test_loading_an_export_reads_no_pickle(trained, tmp_path, monkeypatch):
    specrun.export(trained, tmp_path / "out")

    def refuse(*args, **kwargs):
        raise AssertionError("pickle read while loading an export")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    assert isinstance(specrun.load(tmp_path / "out" / "model.json"), torch.nn.Module)


def test_an_edited_manifest_is_refused(trained, tmp_path):
    specrun.export(trained, tmp_path / "out")
    path = tmp_path / "out" / "model.json"
    manifest = json.loads(path.read_text())
    manifest["spec"] = manifest["spec"].replace("width 16", "width 32")
    path.write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="the file was edited"):
        specrun.load(tmp_path / "out")
    path.write_text(json.dumps({**manifest, "model": "x"}))
    with pytest.raises(ExportError, match="not a specrun export"):
        specrun.load(tmp_path / "out")


def test_export_never_overwrites_and_names_missing_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    run_inproc(write_spec(tmp_path, FAST_SPEC), run_dir)  # no best checkpoint in this spec
    with pytest.raises(ExportError, match="no best checkpoint .*it has: final, regular"):
        specrun.export(run_dir, tmp_path / "out", which="best")
    specrun.export(run_dir, tmp_path / "out")
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    with pytest.raises(ExportError, match="exists"):
        specrun.export(run_dir, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before


def test_export_command(trained, tmp_path):
    from specrun.cli import main

    result = CliRunner().invoke(main, ["export", str(trained), "--which", "final", "-o", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert "step 12" in result.output and (tmp_path / "cli" / "model.safetensors").exists()
    missing = CliRunner().invoke(main, ["export", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "not a run directory" in missing.output


OWN_SPEC = """spec my
seed 0
task "data.py:blobs" { size 128 }
model "models.py:TinyNet" { width 16 }
loss cross_entropy
metrics [accuracy]
optimizer torch.optim.AdamW { lr 1e-2 }
batch 16
max_steps 6
"""


def test_a_user_model_exports_and_loads(own_project, tmp_path):
    """The user's code is found beside the spec the run was started from, at export and at load."""
    spec = own_project(OWN_SPEC)
    assert run_inproc(spec, tmp_path / "run").status == "finished"
    specrun.export(tmp_path / "run", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "model.json").read_text())["source"] == str(spec.resolve())
    exported, straight = specrun.load(tmp_path / "out"), specrun.load(tmp_path / "run")
    x = torch.randn(4, 8)
    assert not exported.training and torch.equal(exported({"inputs": x})["logits"], straight({"inputs": x})["logits"])
