"""The user's own code in a spec, checked statically: validate reads the source, never runs it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from specrun.spec.check import load
from specrun.spec.diagnostics import SpecError

BASE = """
spec own
task "data.py:blobs" { size 256 }
model "models.py:TinyNet" { width 32 }
loss cross_entropy
metrics [accuracy, "scores.py:margin"]
optimizer adamw { lr 1e-2 }
batch 16
max_steps 20
"""


def _problems(path) -> list[str]:
    try:
        load(str(path))
    except SpecError as err:
        return [f"{d.span.path.rsplit('/', 1)[-1]}:{d.span.line}:{d.span.col} {d.code} {d.message} | {d.hint}"
                for d in err.diagnostics]
    return []


def test_a_spec_naming_its_own_code_is_valid(own_project):
    assert _problems(own_project(BASE + "expect train.margin > 0 and train.hit > 0.1\n")) == []


@pytest.mark.parametrize("setting, expected", [
    ("widht 32", "E200 unknown setting 'widht' in model | did you mean 'width'?"),
    ('width "32"', "E201 model.width expects a whole number"),
    ("dropout true", "E201 model.dropout expects a number"),
])
def test_settings_are_checked_against_the_constructor(own_project, setting, expected):
    spec = own_project(BASE.replace("{ width 32 }", "{ " + setting + " }"))
    problems = _problems(spec)
    assert len(problems) == 1 and expected in problems[0], problems
    assert problems[0].startswith("my.train:4:")


def test_a_model_argument_nobody_gives_is_missing(own_project, tmp_path):
    (tmp_path / "project" / "plain.py").write_text(
        "class Points:\n    in_features = 8\n\n\ndef points():\n    return Points()\n")
    spec = own_project(BASE.replace('"models.py:TinyNet" { width 32 }', '"models.py:DictNet"')
                       .replace('"data.py:blobs" { size 256 }', '"plain.py:points"'))
    problems = _problems(spec)
    assert len(problems) == 1 and "E204 missing setting 'num_features' in model" in problems[0]
    assert "announce" in problems[0]


def test_metric_names_are_what_gates_may_read(own_project):
    problems = _problems(own_project(BASE + "expect train.marign > 0\n"))
    assert len(problems) == 1 and "unknown metric 'train.marign'" in problems[0]
    assert "train.margin" in problems[0]


def test_metric_function_without_names(own_project, tmp_path):
    (tmp_path / "project" / "opaque.py").write_text("def score(outputs, batch):\n    return compute(outputs)\n")
    problems = _problems(own_project(BASE.replace('"scores.py:margin"', '"opaque.py:score"')))
    assert len(problems) == 1 and "E204 missing setting 'names' in metrics opaque.py:score" in problems[0]


def test_torch_optimizer_and_loss_by_name(own_project):
    spec = own_project(BASE.replace("optimizer adamw { lr 1e-2 }", "optimizer RAdam { lr 1e-2; betas [0.9, 0.99] }")
                       .replace("loss cross_entropy", "loss torch.nn.CrossEntropyLoss { label_smothing 0.1 }"))
    problems = _problems(spec)
    assert len(problems) == 1 and "unknown setting 'label_smothing' in loss" in problems[0]
    assert "did you mean 'label_smoothing'?" in problems[0]


def test_validate_neither_imports_torch_nor_runs_the_code(own_project, tmp_path):
    folder = tmp_path / "project"
    (folder / "models.py").write_text((folder / "models.py").read_text() +
                                      "\nopen(__file__ + '.ran', 'w').close()\n")
    spec = own_project(BASE)
    code = ("import sys\nfrom specrun.cli.main import main\n"
            f"try:\n    main(['validate', {str(spec)!r}])\nexcept SystemExit as e:\n    assert e.code in (0, None), e\n"
            "assert 'torch' not in sys.modules, 'validate imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 spec(s) valid" in done.stdout
    assert not (folder / "models.py.ran").exists()


def test_module_references_and_packages(own_project, tmp_path):
    pkg = tmp_path / "project" / "mylib"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('validate must not import this')\n")
    (pkg / "nets.py").write_text("from torch import nn\n\n\nclass Net(nn.Module):\n"
                                 "    def __init__(self, in_features: int, classes: int, depth: int = 2):\n"
                                 "        super().__init__()\n")
    spec = own_project(BASE.replace('"models.py:TinyNet" { width 32 }', '"mylib.nets:Net" { depth 3 }'))
    assert _problems(spec) == []
    bad = own_project(BASE.replace('"models.py:TinyNet" { width 32 }', '"mylib.nets:Net" { deep 3 }'))
    assert "did you mean 'depth'?" in _problems(bad)[0]


def test_code_without_source_is_checked_at_run_time(own_project):
    spec = own_project(BASE.replace('"models.py:TinyNet" { width 32 }', '"nowhere_lib.nets:Net" { anything 1 }'))
    assert _problems(spec) == []
    from specrun.plan import build_plan

    plan = build_plan(load(str(spec)))
    assert plan.components["model"]["code"]["module"] == "nowhere_lib.nets"
    from specrun.cli.report import describe_plan

    assert "checked when the run starts" in describe_plan(plan)
    from click.testing import CliRunner

    from specrun.cli.main import main

    result = CliRunner().invoke(main, ["validate", str(spec)])
    assert result.exit_code == 0, result.output
    assert "warning[W300]: model nowhere_lib.nets:Net: no source found" in result.output


@pytest.mark.parametrize("reference, code, words", [
    ('"/etc/models.py:Net"', "E301", "must stay inside the spec's folder"),
    ('"sub/../../models.py:Net"', "E301", "must stay inside the spec's folder"),
    ('"models.py:"', "E301", "is not a reference to code"),
    ('"models.py:Tiny"', "E303", "models.py defines no 'Tiny'"),
    ('"my models.py:Net"', "E301", "no file"),
])
def test_bad_references(own_project, reference, code, words):
    problems = _problems(own_project(BASE.replace('"models.py:TinyNet"', reference)))
    assert len(problems) == 1 and f" {code} " in problems[0] and words in problems[0], problems


def test_a_link_out_of_the_folder_is_refused(own_project, tmp_path):
    outside = tmp_path / "elsewhere.py"
    outside.write_text("class Net:\n    pass\n")
    (tmp_path / "project" / "linked.py").symlink_to(outside)
    problems = _problems(own_project(BASE.replace('"models.py:TinyNet" { width 32 }', '"linked.py:Net"')))
    assert len(problems) == 1 and "leads outside the spec's folder" in problems[0]


def test_signatures_read_from_source():
    import ast

    from specrun.spec.signature import signature

    tree = ast.parse('''
from dataclasses import dataclass
from typing import Literal, Optional

class Base:
    def __init__(self, depth: int, mode: Literal["a", "b"] = "a", sizes: list[int] = [1, 2],
                 scale: Optional[float] = None, pair: tuple[float, float] = (0.5, 0.5), **rest):
        """Not the summary."""

class Child(Base):
    """The child. More text."""

@dataclass
class Config:
    width: int = 64
    name: str = "x"

def loss(outputs, batch, *, gamma: float = 2.0, flag=False):
    return 0
''')
    child = signature(tree, "Child")
    assert child.summary == "The child. More text."
    schema = child.schema()
    assert schema["required"] == ["depth"] and schema["additionalProperties"] is True
    props = schema["properties"]
    assert props["mode"]["enum"] == ["a", "b"] and props["sizes"]["items"] == {"type": "integer"}
    assert props["scale"]["type"] == "number" and "default" not in props["scale"]
    assert props["pair"]["minItems"] == 2 and props["pair"]["default"] == [0.5, 0.5]
    assert signature(tree, "Config").schema()["properties"]["width"] == {"type": "integer", "default": 64,
                                                                           "description": "int"}
    fn = signature(tree, "loss", skip_function=2).schema()
    assert set(fn["properties"]) == {"gamma", "flag"} and fn["properties"]["flag"]["type"] == "boolean"
