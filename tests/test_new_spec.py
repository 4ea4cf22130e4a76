"""`specrun new NAME --from SPEC`: a renamed copy that keeps comments and validates."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from specrun.cli.commands import new_command
from specrun.cli.newspec import NewSpecError, new_spec, renamed

ROOT = Path(__file__).resolve().parents[1]

REFERENCE = """\
# Reference: a rule task. This comment must survive.
spec ref_rule   # the name
seed 0

task rule_classification {
  features 8
  classes 3
}
model mlp { width 32 }   # small
loss cross_entropy
optimizer adamw { lr 1e-2 }
batch 8
max_steps 10

profile smoke {
  max_steps 2
}
"""


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "ref_rule.train").write_text(REFERENCE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_renamed_keeps_everything_but_the_name():
    out = renamed(REFERENCE, "r.train", "my_rule")
    assert out == REFERENCE.replace("spec ref_rule   # the name", "spec my_rule   # the name")


def test_renamed_without_spec_line_adds_one():
    assert renamed("seed 0\n", "r.train", "x").startswith("spec x\nseed 0\n")


def test_new_from_reference_name(workdir):
    result = CliRunner().invoke(new_command, ["my_rule", "--from", "ref_rule"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {Path('specs') / 'my_rule.train'}"
    text = (workdir / "specs" / "my_rule.train").read_text()
    assert "# Reference: a rule task. This comment must survive." in text and "# small" in text
    assert "spec my_rule" in text and "ref_rule" not in text
    assert "profile smoke" in text

    from specrun.spec.check import check_all_profiles
    from specrun.spec.document import locate
    from specrun.spec.parse import parse

    doc = parse(text, "my_rule.train")
    assert check_all_profiles(doc) == []
    assert locate(doc).data["spec"] == "my_rule"


def test_new_from_path_to_output(workdir):
    out = workdir / "exp" / "deep" / "wide.train"
    path = new_spec("wide", str(workdir / "specs" / "ref_rule.train"), out)
    assert path == out and "spec wide" in out.read_text()


def test_refuses_to_overwrite(workdir):
    target = workdir / "specs" / "taken.train"
    target.write_text("# mine\n")
    result = CliRunner().invoke(new_command, ["taken", "--from", "ref_rule"])
    assert result.exit_code == 1 and "already exists" in result.output
    assert target.read_text() == "# mine\n"


def test_bad_name_and_unknown_reference(workdir):
    with pytest.raises(NewSpecError, match="not a spec name"):
        new_spec("../escape", "ref_rule")
    result = CliRunner().invoke(new_command, ["x", "--from", "nosuch"])
    assert result.exit_code == 1 and "ref_rule" in result.output and "savant" in result.output
    assert not (workdir / "specs" / "x.train").exists()


def test_an_invalid_reference_writes_nothing(workdir):
    (workdir / "specs" / "broken.train").write_text(REFERENCE.replace("lr 1e-2", "lr fast"))
    result = CliRunner().invoke(new_command, ["fixed", "--from", "broken"])
    assert result.exit_code == 1
    assert "nothing written" in result.output and "lr" in result.output
    assert not (workdir / "specs" / "fixed.train").exists()


def test_from_the_builtin_reference_spec(tmp_path):
    out = tmp_path / "mine.train"
    new_spec("mine", str(ROOT / "specs" / "builtin_rule.train"), out)
    original = (ROOT / "specs" / "builtin_rule.train").read_text()
    assert out.read_text() == original.replace("spec builtin_rule", "spec mine")


def test_an_output_that_cannot_be_written_is_one_line(workdir):
    (workdir / "blocker").write_text("a file where a folder should go")
    result = CliRunner().invoke(new_command, ["mine", "--from", "ref_rule", "-o", "blocker/mine.train"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "cannot write" in result.output


def test_new_from_a_spec_with_its_own_code_copies_the_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(new_command, ["mine", "--from", "shapes", "-o", "exp/mine.train"])
    assert result.exit_code == 0, result.output
    for name in ("shapes_data.py", "shapes_models.py"):
        assert (tmp_path / "exp" / name).read_text() == (ROOT / "specs" / name).read_text()
    (tmp_path / "exp" / "shapes_models.py").write_text("# mine now\n" + (ROOT / "specs" / "shapes_models.py").read_text())
    again = CliRunner().invoke(new_command, ["mine2", "--from", "shapes", "-o", "exp/mine2.train"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "exp" / "shapes_models.py").read_text().startswith("# mine now")  # never overwritten
