"""W-code warnings: settings that are valid but can never take effect.

Located like errors, printed by validate / plan / run, never failing `validate`
unless --strict.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import specrun
from specrun.cli import main


@pytest.fixture
def warnings_of(tmp_path, minimal_spec):
    """warnings_of(extra): the W-code warnings of the minimal spec with ``extra`` added."""

    def check(extra: str):
        path = tmp_path / "x.train"
        path.write_text(minimal_spec + extra)
        found = specrun.validate(path)
        assert all(d.severity == "warning" for d in found), found
        return found

    return check


def only(found, code):
    assert [d.code for d in found] == [code], [(d.code, d.message) for d in found]
    return found[0]


def test_promotion_that_cannot_happen_in_the_run(warnings_of):
    w = only(warnings_of("curriculum {\n  phase a {\n    promote when phase.steps >= 60\n  }\n"
                         "  phase b {\n    promote when phase.steps >= 50 and step > 10\n  }\n"
                         "  phase c {}\n}\n"), "W100")
    assert "phase b cannot be promoted before step 110" in w.message and "c never trains" in w.message
    assert (w.span.line, w.span.col) == (19, 18)  # at the gate


def test_promotion_within_the_run_is_fine(warnings_of):
    assert warnings_of("curriculum {\n  phase a {\n    promote when phase.steps >= 60 or step > 5\n"
                       "  }\n  phase b {}\n}\n") == []


def test_stop_and_expect_after_the_end(warnings_of):
    found = warnings_of("stop when step > 500 and train.loss < 0.1\nexpect train.loss < 1 by 200 steps\n")
    assert sorted(d.code for d in found) == ["W100", "W101"]
    assert any("the stop gate cannot hold before step 501" in d.message for d in found)


@pytest.mark.parametrize("block, words", [
    ("validation {\n  every 500 steps\n}\n", "validation never runs"),
    ("checkpoint {\n  every 101 steps\n}\n", "only the final checkpoint"),
    ("log {\n  every 1000\n}\n", "no metric row"),
])
def test_interval_longer_than_the_run(block, words, warnings_of):
    w = only(warnings_of(block), "W102")
    assert words in w.message and "max_steps 100" in w.message


def test_interval_of_the_whole_run_is_fine(warnings_of):
    assert warnings_of("checkpoint {\n  every 100 steps\n}\n") == []


def test_missing_input_file(tmp_path, monkeypatch, minimal_spec):
    monkeypatch.chdir(tmp_path)
    text = minimal_spec.replace("task rule_classification {\n  features 8\n}",
                                'task text_lm {\n  source files\n  train "data/train.jsonl"\n  seq_len 16\n}')
    text = text.replace("model mlp {\n  width 16\n}", "model causal_lm {\n  width 16\n  depth 1\n  heads 2\n}")
    (tmp_path / "lm.train").write_text(text)
    w = only(specrun.validate(tmp_path / "lm.train"), "W103")
    assert "'data/train.jsonl' does not exist" in w.message and w.span.line == 4
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"text": "hi"}\n')
    assert specrun.validate(tmp_path / "lm.train") == []


def test_a_profile_that_shortens_the_run_says_so(warnings_of):
    w = only(warnings_of("validation {\n  every 50 steps\n}\nprofile smoke {\n  max_steps 20\n}\n"), "W102")
    assert w.message.endswith("(with profile smoke)")


def test_validate_passes_with_warnings_unless_strict(tmp_path, minimal_spec):
    (tmp_path / "x.train").write_text(minimal_spec + "validation {\n  every 500 steps\n}\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "x.train")])
    assert result.exit_code == 0
    assert "warning[W102]: validation.every 500 steps is longer than the run" in result.output
    assert "1 spec(s) valid, 1 warning(s)" in result.output
    strict = CliRunner().invoke(main, ["validate", "--strict", str(tmp_path / "x.train")])
    assert strict.exit_code == 1
    github = CliRunner().invoke(main, ["validate", "--format", "github", str(tmp_path / "x.train")])
    assert github.exit_code == 0 and github.output.startswith("::warning file=")
    as_json = CliRunner().invoke(main, ["validate", "--format", "json", str(tmp_path / "x.train")])
    assert json.loads(as_json.output)[0]["severity"] == "warning"


def test_plan_prints_warnings_to_stderr(tmp_path, minimal_spec):
    (tmp_path / "x.train").write_text(minimal_spec + "checkpoint {\n  every 500 steps\n}\n")
    result = CliRunner().invoke(main, ["plan", str(tmp_path / "x.train")])
    assert result.exit_code == 0
    assert "warning[W102]" in result.stderr and "warning" not in result.stdout


def test_every_warning_code_is_documented(repo):
    from specrun.spec.diagnostics import CODES

    doc = (repo / "docs" / "errors.md").read_text()
    for code in (c for c in CODES if c.startswith("W")):
        assert f"### {code}\n" in doc, code
