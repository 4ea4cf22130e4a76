"""Shell completion (click's own, `_SPECRUN_COMPLETE=bash_source specrun`) and `--help` examples."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.shell_completion import BashComplete
from click.testing import CliRunner

from specrun.cli import main
from specrun.cli.commands import COMMANDS

from spec_helpers import MINIMAL_SPEC

SPEC = MINIMAL_SPEC.replace("spec minimal", "spec comp_toy", 1) + """\
profile smoke { max_steps 2 }
profile big { model.width 64 }
"""

# The CLI as users get it once cli.py registers the commands of this work.
CLI = click.Group("specrun", commands={**{c.name: c for c in COMMANDS}, **main.commands})


def complete(args: list[str], incomplete: str, cli=CLI) -> list[str]:
    return [item.value for item in BashComplete(cli, {}, "specrun", "_SPECRUN_COMPLETE")
            .get_completions(args, incomplete)]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "comp_toy.train").write_text(SPEC)
    (tmp_path / "specs" / "other.train").write_text(SPEC.replace("comp_toy", "other"))
    (tmp_path / "runs" / "comp_toy" / "20260101-000000-00001").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_commands_are_offered():
    assert {"validate", "fmt", "diff", "plan", "run"} <= set(complete([], "", main))
    assert set(complete([], "r")) == {"run", "runs"}
    assert complete([], "pl") == ["plan", "plot"]


def test_spec_paths_are_offered(workdir):
    assert complete(["run"], "specs/") == ["specs/comp_toy.train", "specs/other.train"]
    assert complete(["validate"], "specs/c") == ["specs/comp_toy.train"]


def test_spec_paths_in_any_folder(workdir):
    (workdir / "experiments" / "deep").mkdir(parents=True)
    (workdir / "experiments" / "a.train").write_text(SPEC)
    assert complete(["run"], "exp") == ["experiments/"]
    assert complete(["run"], "experiments/") == ["experiments/a.train", "experiments/deep/"]


def test_profile_names_are_offered(workdir):
    assert complete(["run", "specs/comp_toy.train", "--profile"], "") == ["smoke", "big"]
    assert complete(["plan", "specs/comp_toy.train", "-p"], "b") == ["big"]
    assert complete(["run", "specs/missing.train", "--profile"], "") == []  # never a traceback


def test_runs_plot_and_new_arguments(workdir):
    assert "comp_toy" in complete(["runs"], "")
    assert complete(["plot"], "runs/") == ["runs/comp_toy/20260101-000000-00001"]
    offered = complete(["new", "x", "--from"], "")
    assert {"comp_toy", "other", "specs/comp_toy.train", "specs/other.train"} <= set(offered)
    assert "savant" in offered  # the reference specs specrun ships, from any folder


def test_bash_completion_through_the_environment(workdir):
    """What the shell does: the installed `specrun` with _SPECRUN_COMPLETE set."""
    script = Path(sys.executable).parent / "specrun"
    command = [str(script)] if script.exists() else \
        [sys.executable, "-c", "from specrun.cli import main; main(prog_name='specrun')"]
    env = {**os.environ, "_SPECRUN_COMPLETE": "bash_complete", "COMP_WORDS": "specrun run specs/comp_toy.train -p ",
           "COMP_CWORD": "4"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["plain,smoke", "plain,big"]
    env.update(_SPECRUN_COMPLETE="bash_source")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert "_specrun_completion" in done.stdout and "_SPECRUN_COMPLETE=bash_complete" in done.stdout


def test_living_with_runs_commands_are_registered():
    """Fails until cli.py has `main.add_command(...)` for runs, plot and new."""
    missing = [c.name for c in COMMANDS if main.commands.get(c.name) is not c]
    assert not missing, f"not registered on specrun's main group: {missing}"


@pytest.mark.parametrize("name", sorted(CLI.commands))
def test_every_command_help_has_an_example(name):
    result = CliRunner().invoke(CLI, [name, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    # the \b block keeps example lines as written (click rewraps paragraphs otherwise)
    example = result.output.split("Example", 1)[1].splitlines()[1]
    assert example.startswith("  ") and "specrun " in example
