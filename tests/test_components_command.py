"""`specrun components`: what a spec can name, with settings, types and defaults."""

from __future__ import annotations

import json
import subprocess
import sys

from click.testing import CliRunner

from specrun.cli.main import main


def _run(*args):
    return CliRunner().invoke(main, ["components", *args])


def test_lists_every_kind_built_in_torch_and_metrics():
    result = _run()
    assert result.exit_code == 0, result.output
    for word in ("task:", "model:", "loss:", "metrics:", "optimizer:", "rule_classification", "mlp",
                 "cross_entropy", "torch.nn.SmoothL1Loss", "torch.optim.RAdam", "accuracy", "topN"):
        assert word in result.output


def test_one_component_with_its_settings():
    result = _run("optimizer", "RAdam", "--json")
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.output)
    assert record["name"] == "torch.optim.RAdam" and record["origin"] == "torch"
    lr = next(p for p in record["params"] if p["name"] == "lr")
    assert lr == {"name": "lr", "type": "number", "required": False, "default": 0.001,
                  "description": "float | Tensor"}
    text = _run("model", "mlp").output
    assert "width" in text and "integer, default 64" in text


def test_the_specs_own_code(own_project):
    spec = own_project("spec own\ntask \"data.py:blobs\"\nmodel \"models.py:TinyNet\" { width 8 }\nloss cross_entropy\n"
                       "metrics [\"scores.py:margin\"]\noptimizer adamw { lr 1e-3 }\nbatch 4\n")
    listed = _run("--spec", str(spec), "--json")
    names = {(r["kind"], r["name"]) for r in json.loads(listed.output)}
    assert {("task", "data.py:blobs"), ("model", "models.py:TinyNet"), ("metrics", "scores.py:margin")} <= names
    detail = _run("model", "models.py:TinyNet", "--spec", str(spec)).output
    assert "Two linear layers over a feature vector." in detail
    assert "in_features  integer, required" in detail and "dropout      number, default 0.0" in detail


def test_unknown_names_say_how_to_name_your_own_code():
    result = _run("model", "mlpp")
    assert result.exit_code == 1
    assert "did you mean 'mlp'?" in result.output and 'model "models.py:MyNet"' in result.output
    assert "no component kind 'modle'" in _run("modle").output


def test_listing_is_torch_free():
    code = ("import sys\nfrom specrun.cli.main import main\ntry:\n    main(['components'])\nexcept SystemExit:\n"
            "    pass\nassert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
