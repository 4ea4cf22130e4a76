"""What the command line answers to forms people type by mistake, and how `plan` reads.

`--set k v` and a bare `k=v` get the form that works; an unknown key in `--set`
gets a did-you-mean over full paths; `fmt --diff` headers stay readable for
absolute paths; `plan` shows sizes and durations with units and quotes strings
holding line breaks; the README's example spec exists and is canonical.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from specrun.cli import main
from specrun.cli.args import misplaced_setting

RULE = "specs/builtin_rule.train"


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(autouse=True)
def at_repo(repo, monkeypatch):
    monkeypatch.chdir(repo)


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_set_with_a_space_names_the_right_form(command):
    result = run(command, RULE, "--set", "optimizer.lr", "1e-3")
    assert result.exit_code == 2
    assert "--set optimizer.lr=1e-3 (not --set optimizer.lr 1e-3)" in result.output


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_bare_setting_names_the_right_form(command):
    result = run(command, RULE, "optimizer.lr=1e-3")
    assert result.exit_code == 2
    assert "write --set optimizer.lr=1e-3" in result.output


def test_well_formed_arguments_pass_the_check():
    assert misplaced_setting([RULE, "--set", "optimizer.lr=1e-3", "-p", "smoke"]) is None
    assert misplaced_setting([RULE, "--set", "task.val=\"a=b\""]) is None
    assert misplaced_setting(["specs/a=b.train"]) is None  # a file with = in its name
    assert misplaced_setting(["--run-dir", "runs/x", RULE]) is None


@pytest.mark.parametrize("key, suggestion", [
    ("lr", "optimizer.lr"),
    ("optimizer.lrr", "optimizer.lr"),
    ("checkpoint.evry", "checkpoint.every"),
    ("max_step", "max_steps"),
])
def test_unknown_set_key_suggests_the_full_path(key, suggestion):
    result = run("validate", RULE, "--set", f"{key}=1")
    assert result.exit_code == 1
    assert f"did you mean '{suggestion}'" in result.output


def test_fmt_diff_headers_for_an_absolute_path(tmp_path):
    spec = tmp_path / "x.train"
    spec.write_text((open(RULE).read()).replace("model mlp {\n  width 64\n  depth 2\n}", "model mlp { width 64; depth 2 }"))
    result = run("fmt", "--diff", spec)
    assert result.exit_code == 1
    assert result.output.startswith(f"--- {spec}\n+++ {spec}\n")


def test_plan_shows_units_and_quotes_line_breaks():
    result = run("plan", "specs/savant.train", "--set", "memory.ram_limit=10GiB", "--set", "memory.pause=5min",
                 "--set", "distributed.nproc_per_node=2", "--set", 'task.separator="\\n\\n"')
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    memory = next(line for line in lines if line.startswith("memory "))
    assert "ram_limit=10GiB" in memory and "pause=5min" in memory
    assert any(line.startswith("distributed nproc_per_node=2") for line in lines)
    assert 'separator="\\n\\n"' in result.output


def test_readme_example_is_in_specs_and_canonical(repo):
    readme = (repo / "README.md").read_text(encoding="utf-8")
    start = readme.index("# specs/example.train\n") + len("# specs/example.train\n")
    shown = readme[start:readme.index("```", start)]
    assert shown == (repo / "specs" / "example.train").read_text(encoding="utf-8")
    assert run("fmt", "--check", "specs/example.train").exit_code == 0
    assert run("validate", "specs/example.train").exit_code == 0
