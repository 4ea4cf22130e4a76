"""The language commands through click's CliRunner: exact exit codes and outputs.

validate: 0 valid, 1 invalid, 2 usage. fmt: 0, 1 (--check / --diff found a change),
123 (cannot format). diff: 0 same, 1 different, `--git` (7 arguments) always 0.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from spec_helpers import MINIMAL_SPEC

from specrun.cli import main

REPO = Path(__file__).resolve().parents[1]
SPECS = sorted((REPO / "specs").glob("*.train"))

VALID = MINIMAL_SPEC.replace("spec minimal", "spec tiny", 1).replace("max_steps 100", "max_steps 10", 1)
INVALID = VALID.replace("lr 1e-3", "lr -1")
UGLY = VALID.replace("model mlp {\n  width 16\n}", "model mlp { width 16 }")


def run(*args, **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "valid.train").write_text(VALID)
    (tmp_path / "invalid.train").write_text(INVALID)
    (tmp_path / "ugly.train").write_text(UGLY)
    (tmp_path / "broken.train").write_text("spec broken\nmodel mlp {\n")
    return tmp_path


# ---- validate -------------------------------------------------------------------------

def test_validate_valid(files):
    result = run("validate", "valid.train", "ugly.train")
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 spec(s) valid\n"


def test_validate_invalid(files):
    result = run("validate", "valid.train", "invalid.train")
    assert result.exit_code == 1
    assert result.stdout.startswith("invalid.train:10:6: error[E203]: optimizer.lr must be greater than 0, got -1\n")
    assert "1 problem(s) in 1 of 2 file(s)" in result.stderr


def test_validate_usage(files):
    result = run("validate")
    assert result.exit_code == 2
    assert "Missing argument" in result.output
    assert run("validate", "--format", "yaml", "valid.train").exit_code == 2


def test_validate_missing_file(files):
    result = run("validate", "nowhere.train")
    assert result.exit_code == 1
    assert result.stdout.startswith("nowhere.train:1:1: error[E900]: cannot read nowhere.train")


def test_validate_directory(files):
    result = run("validate", ".")
    assert result.exit_code == 1
    assert "invalid.train:10:6: error[E203]" in result.stdout
    assert "broken.train:2:11: error[E100]" in result.stdout
    assert "valid.train:" not in result.stdout.replace("invalid.train:", "")


@pytest.mark.parametrize("command", [("validate",), ("fmt", "--check")])
def test_a_folder_without_specs_is_a_usage_error(files, command):
    (files / "empty").mkdir()
    result = run(*command, "empty")
    assert result.exit_code == 2  # CI given a mistyped folder must not pass on "0 spec(s) valid"
    assert "no .train files in empty" in result.output


def test_a_bad_override_is_the_only_error(files):
    (files / "cosine.train").write_text(VALID + "schedule warmup_cosine { warmup 5% }\n")
    result = run("plan", "cosine.train", "--set", "max_steps=abc")
    assert result.exit_code == 1
    # the override's own error, not "a warmup in % needs a finite run" pointing at the valid file
    assert result.output.startswith("<--set 1>:1:11: error[E201]"), result.output
    assert "cosine.train:" not in result.output


def test_validate_with_a_profile_and_overrides(files):
    (files / "prof.train").write_text(VALID + "profile smoke {\n  max_steps 5\n}\n")
    assert run("validate", "prof.train", "-p", "smoke", "--set", "optimizer.lr=1e-4").exit_code == 0
    bad = run("validate", "prof.train", "-p", "smoke", "--set", "optimizer.lr=-1")
    assert bad.exit_code == 1 and bad.stdout.startswith("<--set 1>:1:14: error[E203]")
    missing = run("validate", "prof.train", "-p", "nope")
    assert missing.exit_code == 1 and "no profile 'nope'" in missing.stdout


def test_validate_json(files):
    ok = run("validate", "--format", "json", "valid.train")
    assert ok.exit_code == 0 and json.loads(ok.stdout) == []
    bad = run("validate", "--format", "json", "invalid.train", "broken.train")
    assert bad.exit_code == 1
    problems = json.loads(bad.stdout)
    assert [(p["path"], p["line"], p["col"], p["code"]) for p in problems] == [
        ("broken.train", 2, 11, "E100"), ("invalid.train", 10, 6, "E203")]
    assert set(problems[0]) == {"path", "line", "col", "end_line", "end_col", "code", "severity", "message", "hint"}
    assert bad.stderr == ""  # nothing but JSON on stdout, no summary


def test_validate_github(files):
    result = run("validate", "--format", "github", "invalid.train")
    assert result.exit_code == 1
    assert result.stdout == (
        "::error file=invalid.train,line=10,col=6,endLine=10,endColumn=8,title=E203::"
        "optimizer.lr must be greater than 0, got -1\n")
    hinted = run("validate", "--format", "github", "broken.train").stdout
    assert hinted.startswith("::error file=broken.train,line=2,col=11,")
    assert "(hint: add the matching '}')" in hinted and "\n" not in hinted.rstrip("\n")


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_reference_spec_validates(spec):
    result = run("validate", spec)
    assert result.exit_code == 0, result.output


# ---- fmt ----------------------------------------------------------------------------------

def test_fmt_unchanged(files):
    before = (files / "valid.train").stat().st_mtime_ns
    result = run("fmt", "valid.train")
    assert result.exit_code == 0 and result.output == ""
    assert (files / "valid.train").stat().st_mtime_ns == before


def test_fmt_check(files):
    result = run("fmt", "--check", "valid.train", "ugly.train")
    assert result.exit_code == 1
    assert result.stdout == "would reformat ugly.train\n"
    assert (files / "ugly.train").read_text() == UGLY  # --check changes nothing
    assert run("fmt", "--check", "valid.train").exit_code == 0


def test_fmt_diff(files):
    result = run("fmt", "--diff", "ugly.train")
    assert result.exit_code == 1
    assert result.stdout == (
        "--- a/ugly.train\n+++ b/ugly.train\n@@ -2,7 +2,9 @@\n"
        " task rule_classification {\n   features 8\n }\n"
        "-model mlp { width 16 }\n+model mlp {\n+  width 16\n+}\n"
        " loss cross_entropy\n optimizer adamw {\n   lr 1e-3\n")
    assert (files / "ugly.train").read_text() == UGLY


def test_fmt_syntax_error(files):
    result = run("fmt", "broken.train", "ugly.train")
    assert result.exit_code == 123
    assert "broken.train:2:11: error[E100]: '{' opened at line 2, column 11 is never closed" in result.stderr
    assert (files / "ugly.train").read_text() == VALID  # the good file is still formatted
    assert (files / "broken.train").read_text() == "spec broken\nmodel mlp {\n"


def test_fmt_writes_in_place_atomically(files):
    result = run("fmt", "ugly.train")
    assert result.exit_code == 0
    assert result.stdout == "reformatted ugly.train\n"
    assert (files / "ugly.train").read_text() == VALID
    assert sorted(p.name for p in files.iterdir()) == ["broken.train", "invalid.train", "ugly.train", "valid.train"]
    assert run("fmt", "--check", "ugly.train").exit_code == 0


def test_fmt_directory(files):
    (files / "broken.train").unlink()
    result = run("fmt", "--check", ".")
    assert result.exit_code == 1
    assert result.stdout == "would reformat ugly.train\n"


def test_fmt_keeps_file_mode(files):
    os.chmod(files / "ugly.train", 0o644)
    assert run("fmt", "ugly.train").exit_code == 0
    assert stat.S_IMODE((files / "ugly.train").stat().st_mode) == 0o644


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_reference_spec_is_formatted(spec):
    result = run("fmt", "--check", spec)
    assert result.exit_code == 0, f"run `specrun fmt {spec.relative_to(REPO)}`: {result.output}"


# ---- diff ---------------------------------------------------------------------------------

def test_diff_same_and_different(files):
    same = run("diff", "valid.train", "ugly.train")
    assert same.exit_code == 0 and same.stdout == ""
    (files / "other.train").write_text(VALID.replace("width 16", "width 32").replace("batch 4", "batch 8"))
    different = run("diff", "valid.train", "other.train")
    assert different.exit_code == 1
    assert different.stdout == "model.width: 16 -> 32\nbatch: 4 -> 8\n"


def test_diff_against_a_run_directory_or_a_specs_latest_run(files):
    for run_id, width in (("20260101-000000-00001", 32), ("20260102-000000-00001", 64)):
        run_dir = files / "runs" / "tiny" / run_id
        run_dir.mkdir(parents=True)
        (run_dir / "spec.train").write_text(VALID.replace("width 16", f"width {width}"))
        (run_dir / "plan.json").write_text('{"name": "tiny"}')
        (run_dir / "run.json").write_text(f'{{"started": {width}}}')
    first = run("diff", "valid.train", "runs/tiny/20260101-000000-00001")
    assert first.exit_code == 1 and first.stdout == "model.width: 16 -> 32\n"
    latest = run("diff", "valid.train", "tiny")  # a spec name: its latest run
    assert latest.exit_code == 1 and latest.stdout == "model.width: 16 -> 64\n"


def test_diff_usage(files):
    assert run("diff", "valid.train").exit_code == 2
    assert run("diff", "a", "b", "c").exit_code == 2
    assert run("diff", "--git", "a", "b").exit_code == 2


def test_diff_git_driver(files):
    (files / "other.train").write_text(VALID.replace("width 16", "width 32"))
    # git calls: path old-file old-hex old-mode new-file new-hex new-mode
    args = ["spec.train", "valid.train", "0" * 40, "100644", "other.train", "1" * 40, "100644"]
    result = run("diff", "--git", *args)
    assert result.exit_code == 0
    assert result.stdout == "specrun diff a/spec.train b/spec.train\nmodel.width: 16 -> 32\n"
    created = run("diff", "--git", "spec.train", "/dev/null", ".", ".", "valid.train", "1" * 40, "100644")
    assert created.exit_code == 0 and created.stdout == "spec.train: new file\n"
    deleted = run("diff", "--git", "spec.train", "valid.train", "0" * 40, "100644", "/dev/null", ".", ".")
    assert deleted.exit_code == 0 and deleted.stdout == "spec.train: deleted\n"
    broken = run("diff", "--git", "spec.train", "valid.train", "0" * 40, "100644", "broken.train", "1" * 40,
                 "100644")
    assert broken.exit_code == 0  # a driver must never fail git diff
    assert "error[E100]" in broken.stderr


def test_diff_unparseable_outside_git(files):
    result = run("diff", "valid.train", "broken.train")
    assert result.exit_code == 2
    assert "broken.train:2:11: error[E100]" in result.stderr
