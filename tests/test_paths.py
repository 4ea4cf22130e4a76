"""spec/paths.py: every output path a spec names stays below its run directory.

The golden file tests/data/errors/output_paths.train shows one of each kind of message in
place; these are the rules themselves, case by case, through the public functions.
"""

from __future__ import annotations

import pytest

from spec_helpers import MINIMAL_SPEC, codes, diags
from specrun.spec.paths import MAX_WIDTH, RUN_FILES, path_problem, template_problem


@pytest.mark.parametrize("value", ["logs/train.csv", "out", "./out/a.log", "a/./b", "checkpoints/", "a\\b.txt"])
def test_paths_below_the_run_directory_pass(value):
    assert path_problem(value, folder=False) is None


@pytest.mark.parametrize("value, problem", [
    ("", "is empty"),
    ("   ", "is empty"),
    ("logs/\0.csv", "holds a NUL character"),
    ("a" * 1025, "is longer than 1024 characters"),
    ("~/train.log", "must be relative to the run directory"),
    ("\\\\server\\share\\x.log", "must be relative to the run directory"),
    ("C:logs.csv", "must be relative to the run directory"),
    ("d:/logs.csv", "must be relative to the run directory"),
    ("logs/../../x.csv", "must stay inside the run directory (no `..`)"),
    ("logs\\..\\..\\x.csv", "must stay inside the run directory (no `..`)"),
    ("./", "names the run directory itself"),
    ("logs/" + "b" * 256, "has a part longer than 255 characters"),
    ("./events.jsonl", "would overwrite the run's own events.jsonl"),
    ("tensorboard/metrics.csv", "would overwrite the run's own tensorboard"),
])
def test_paths_that_leave_or_overwrite_the_run_are_refused(value, problem):
    assert path_problem(value, folder=False) == problem


def test_a_folder_that_is_the_run_directory_says_what_to_give():
    assert path_problem(".", folder=True) == "names the run directory itself; give a folder below it"
    assert path_problem(".", folder=False) == "names the run directory itself"


def test_each_of_the_runs_own_files_is_refused_as_a_path_and_a_template():
    for name in RUN_FILES:
        assert path_problem(name, folder=False) == f"would overwrite the run's own {name}", name
        assert template_problem(name) == f"would overwrite the run's own {name}", name


@pytest.mark.parametrize("value", ["step_{step}.pt", "e{epoch:03d}_s{step:06d}.pt", "final.pt",
                                   f"s{{step:{MAX_WIDTH}d}}.pt", "best_{step:>8}.pt"])
def test_templates_that_name_a_plain_file_pass(value):
    assert template_problem(value) is None


@pytest.mark.parametrize("value, problem", [
    ("", "is empty"),
    ("ck/step_{step}.pt", "must be a file name (the folder is checkpoint.dir)"),
    ("ck\\step.pt", "must be a file name (the folder is checkpoint.dir)"),
    ("step_{step.pt", "is not a valid template (expected '}' before end of string)"),
    ("step_{loss}.pt", "names {loss}, which is not filled in"),
    ("step_{0}.pt", "names {0}, which is not filled in"),
    ("step_{step:.2f}.pt", "formats {step} as '.2f'; only a width is allowed, as in {step:06d}"),
    ("step_{step:{epoch}}.pt", "formats {step} as '{epoch}'; only a width is allowed, as in {step:06d}"),
    (f"s{{step:0{MAX_WIDTH + 1}d}}.pt", f"pads {{step}} to {MAX_WIDTH + 1} characters (at most {MAX_WIDTH})"),
    (".step_{step}.pt", "must not start with a dot (hidden and partial files start with one)"),
    ("index.json.{step}", "would overwrite the run's own index.json.0"),
    ("step_{step}.pt.partial", "must not end in .partial or .damaged (names of files being written or set aside)"),
    ("step_{step}.damaged", "must not end in .partial or .damaged (names of files being written or set aside)"),
])
def test_templates_that_could_not_be_a_plain_checkpoint_name_are_refused(value, problem):
    assert template_problem(value) == problem


def test_two_checkpoints_with_one_file_name_are_refused_where_the_second_is_set():
    text = MINIMAL_SPEC + 'checkpoint {\n  every 10 steps\n  name "ck.pt"\n  final "ck.pt"\n}\n'
    (found,) = diags(text)
    assert (found.code, found.message) == ("E203", "checkpoint.final names the same file as checkpoint.name")
    assert found.span.line == text.splitlines().index('  final "ck.pt"') + 1
    assert codes(MINIMAL_SPEC + 'checkpoint {\n  every 10 steps\n  name "a_{step}.pt"\n  final "b.pt"\n}\n') == []
