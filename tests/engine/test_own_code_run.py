"""The user's own model, data, loss, metrics and optimizer, trained by the engine."""

from __future__ import annotations

import signal

import pytest

from .conftest import csv_rows, kill_at, run_cli, run_inproc, train_losses, two_processes_match_one

SPEC = """
spec own
seed 5
task "data.py:blobs" { size 256 }
model "models.py:TinyNet" { width 32 }
loss cross_entropy
metrics [accuracy, top2, "scores.py:margin"]
optimizer adamw { lr 1e-2 }
batch 16
max_steps 24
validation { every 8 steps; batches all }
expect train.accuracy > 0.4
checkpoint { every 4 steps; resume latest }
log { every 1 step }
"""


def test_user_model_data_and_metrics_train(own_project, tmp_path):
    spec = own_project(SPEC + "curriculum {\n  phase a { promote when mean(train.margin, 2) > 0 }\n  phase b {}\n}\n")
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "finished", outcome.message
    columns, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    for name in ("train.accuracy", "train.top2", "train.margin", "train.hit", "val.accuracy", "val.margin"):
        assert name in columns
    val = [r for r in rows if r["val.accuracy"]]
    assert len(val) == 3
    assert float(rows[-1]["train.top2"]) >= float(rows[-1]["train.accuracy"])


def test_checkpoint_holds_the_users_module_as_built(own_project, tmp_path):
    import torch

    outcome = run_inproc(own_project(SPEC), tmp_path / "run")
    assert outcome.status == "finished", outcome.message
    state = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)["model"]
    assert sorted(state) == ["net.0.bias", "net.0.weight", "net.3.bias", "net.3.weight"]


def test_interrupted_and_resumed_run_repeats_the_same_losses(own_project, tmp_path, signal_at):
    spec = own_project(SPEC)
    assert run_inproc(spec, tmp_path / "whole").status == "finished"
    signal_at(10, signal.SIGINT)
    first = run_inproc(spec, tmp_path / "cut")
    assert first.status == "interrupted", first.message
    assert run_inproc(spec, tmp_path / "cut").status == "finished"
    assert train_losses(tmp_path / "cut") == train_losses(tmp_path / "whole")


DICT_SPEC = """
spec own_dict
seed 1
task "data.py:dict_blobs" { size 128 }
model "models.py:DictNet" { width 16 }
loss torch.nn.CrossEntropyLoss { label_smoothing 0.05 }
metrics [accuracy]
optimizer torch.optim.RAdam { lr 1e-2; betas [0.9, 0.99] }
batch 8
max_steps 10
validation { every 5 steps; batches 2 }
"""


def test_dict_batches_torch_loss_and_torch_optimizer(own_project, tmp_path):
    outcome = run_inproc(own_project(DICT_SPEC), tmp_path / "run")
    assert outcome.status == "finished", outcome.message
    columns, rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert "val.accuracy" in columns and rows


def test_own_loss_own_optimizer_and_iterable_data(own_project, tmp_path):
    spec = own_project(SPEC.replace('"data.py:blobs" { size 256 }', '"data.py:stream" { size 128 }')
                       .replace("loss cross_entropy", 'loss "losses.py:smooth_ce" { smoothing 0.2 }')
                       .replace("optimizer adamw { lr 1e-2 }", 'optimizer "optim.py:plain_sgd" { lr 0.2 }')
                       .replace("batches all", "batches 2"))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "finished", outcome.message


def test_regression_loss_from_torch_nn(own_project, tmp_path):
    spec = own_project(SPEC.replace("loss cross_entropy", "loss MSELoss")
                       .replace('model "models.py:TinyNet" { width 32 }',
                                'model "models.py:TinyNet" { width 32; classes 1 }')
                       .replace('metrics [accuracy, top2, "scores.py:margin"]', "")
                       .replace("expect train.accuracy > 0.4", ""))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "finished", outcome.message


def test_workers_and_pin_memory_are_settings(own_project, tmp_path):
    spec = own_project(SPEC.replace("max_steps 24", "max_steps 6") + "dataloader { workers 2; pin_memory true }\n")
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "finished", outcome.message


# ---- failures the user can fix: one clear message, their own frames, no specrun traceback ----

def test_forward_raising_shows_the_users_line_and_the_batch(own_project, tmp_path):
    spec = own_project(SPEC.replace('"models.py:TinyNet" { width 32 }', '"models.py:Broken"'))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "failed"
    msg = outcome.message
    assert "model models.py:Broken: forward failed on a batch of inputs float32[16, 8], targets int64[16]" in msg
    assert "models.py:" in msg and "return self.fc(x)" in msg
    assert "specrun/" not in msg and "Traceback" not in msg
    assert not (tmp_path / "run" / "error.txt").exists()


def test_dataset_raising_names_the_dataset(own_project, tmp_path):
    spec = own_project(SPEC.replace('"data.py:blobs" { size 256 }', '"data.py:faulty"')
                       .replace("validation { every 8 steps; batches all }", ""))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "failed"
    assert "task data.py:faulty: loading a training batch failed" in outcome.message
    assert "is corrupt" in outcome.message and "data.py:" in outcome.message


def test_targets_of_the_wrong_shape_at_the_first_step(own_project, tmp_path):
    spec = own_project(SPEC.replace("loss cross_entropy", "loss bce_with_logits")
                       .replace('metrics [accuracy, top2, "scores.py:margin"]', "")
                       .replace("expect train.accuracy > 0.4", ""))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "failed"
    assert "loss bce_with_logits failed on outputs logits float32[16, 3]" in outcome.message
    assert "targets int64[16]" in outcome.message


def test_metric_function_returning_undeclared_names(own_project, tmp_path):
    spec = own_project(SPEC.replace('metrics [accuracy, top2, "scores.py:margin"]',
                                    'metrics "scores.py:margin" { names [margin] }')
                       .replace("expect train.accuracy > 0.4", "expect train.margin > 0"))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "failed"
    assert "returned ['hit', 'margin']; the spec declares ['margin'] (not declared: hit)" in outcome.message


def test_signature_table_matches_the_installed_torch(repo):
    from specrun.components.own.torch_table import render

    shipped = (repo / "schemas" / "components" / "torch.json").read_text(encoding="utf-8")
    assert render() == shipped, ("schemas/components/torch.json differs from this torch: regenerate it with "
                                 "python -m specrun.components.own.torch_table > schemas/components/torch.json")


@pytest.mark.slow
def test_sigkill_and_resume_of_user_data_is_exact(own_project, tmp_path):
    spec = own_project(SPEC.replace("max_steps 24", "max_steps 40") + "dataloader { workers 2 }\n")
    reference = tmp_path / "reference"
    done = run_cli(spec, reference)
    assert done.returncode == 0, done.stderr
    killed = tmp_path / "killed"
    kill_at(spec, killed, 13)
    resumed = run_cli(spec, killed)
    assert resumed.returncode == 0, resumed.stderr
    assert train_losses(killed) == train_losses(reference)


def test_code_without_readable_signature_is_checked_when_the_run_starts(own_project, tmp_path):
    (tmp_path / "project" / "ext.py").write_text(
        "from torch import nn\n\n\nclass Wide(nn.Linear):\n    \"\"\"Its constructor is nn.Linear's.\"\"\"\n")
    spec = own_project(SPEC.replace('"models.py:TinyNet" { width 32 }', '"ext.py:Wide" { out_features 3; bais false }'))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "failed"
    assert outcome.message == "model ext.py:Wide takes no setting 'bais'; did you mean 'bias'?"
    good = own_project(SPEC.replace('"models.py:TinyNet" { width 32 }', '"ext.py:Wide" { out_features 3 }'))
    assert run_inproc(good, tmp_path / "run2").status == "finished"


def test_a_module_that_does_not_import(own_project, tmp_path):
    (tmp_path / "project" / "needs.py").write_text(
        "import helpers_that_are_not_there\n\n\nclass Net:\n    def __init__(self, in_features, classes):\n"
        "        pass\n")
    spec = own_project(SPEC.replace('"models.py:TinyNet" { width 32 }', '"needs.py:Net"'))
    outcome = run_inproc(spec, tmp_path / "run")
    assert outcome.status == "failed"
    assert outcome.message.startswith("model needs.py:Net: importing needs failed: ModuleNotFoundError: "
                                      "No module named 'helpers_that_are_not_there'")
    assert "needs.py:1 in <module>" in outcome.message and "Traceback" not in outcome.message
    gone = own_project(SPEC.replace('"models.py:TinyNet" { width 32 }', '"nowhere_lib.nets:Net"'))
    outcome = run_inproc(gone, tmp_path / "run2")
    assert outcome.status == "failed" and "model nowhere_lib.nets:Net: no module nowhere_lib.nets" in outcome.message


@pytest.mark.slow
def test_user_data_on_two_processes_matches_one_with_the_same_global_batch(own_project, tmp_path):
    spec = own_project(SPEC.replace("max_steps 24", "max_steps 8").replace("batch 16", "batch 8")
                       .replace("validation { every 8 steps; batches all }", "")
                       .replace("expect train.accuracy > 0.4", "")
                       + "distributed { strategy ddp; nproc_per_node 2; backend gloo }\n")
    two_processes_match_one(spec, tmp_path, steps=8)


def test_resuming_after_the_code_changed_says_so(own_project, tmp_path, signal_at):
    from .conftest import events

    spec = own_project(SPEC)
    signal_at(6, signal.SIGINT)
    assert run_inproc(spec, tmp_path / "run").status == "interrupted"
    models = tmp_path / "project" / "models.py"
    models.write_text(models.read_text() + "\n# tuned since\n")
    assert run_inproc(spec, tmp_path / "run").status == "finished"
    warnings = [e["message"] for e in events(tmp_path / "run", "warning")]
    assert any("models.py changed since the run began" in w for w in warnings), warnings
