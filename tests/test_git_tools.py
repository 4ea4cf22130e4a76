"""Git integration: the `specrun diff --git` driver in a real repository, pre-commit hooks, attributes."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spec_helpers import MINIMAL_SPEC

ROOT = Path(__file__).resolve().parents[1]

SPEC = "# a tiny spec for the diff driver\n" + (MINIMAL_SPEC.replace("spec minimal", "spec git_toy", 1)
                                                  .replace("  lr 1e-3\n", "  lr 3e-3   # the learning rate\n", 1))


def _specrun_command() -> str:
    script = Path(sys.executable).parent / "specrun"
    if script.exists():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m specrun.cli"


def _git(repo: Path, *args: str) -> str:
    """stdout of a git command in ``repo``, with no user or system config; fails on stderr output."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(repo.parent), "GIT_PAGER": "cat",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    env.pop("GIT_EXTERNAL_DIFF", None)
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_diff_driver_shows_meaning_not_comments(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "-c", "init.defaultBranch=main", "init", "-q")
    shutil.copy(ROOT / ".gitattributes", repo / ".gitattributes")
    spec = repo / "toy.train"
    spec.write_text(SPEC)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "spec")
    spec.write_text(SPEC.replace("lr 3e-3   # the learning rate", "lr 1e-3   # a smaller learning rate")
                    .replace("# a tiny spec", "# a reworded header comment for"))

    plain = _git(repo, "diff")  # driver not configured yet: git's text diff, comments and all
    assert "a smaller learning rate" in plain and "optimizer.lr" not in plain

    _git(repo, "config", "diff.specrun.command", f"{_specrun_command()} diff --git")
    out = _git(repo, "diff")
    assert "optimizer.lr: 0.003 -> 0.001" in out
    assert "comment" not in out and "learning rate" not in out and "#" not in out
    assert [line for line in out.splitlines() if line.strip()] == [
        "specrun diff a/toy.train b/toy.train", "optimizer.lr: 0.003 -> 0.001"]


def test_gitattributes_routes_train_files_to_the_driver():
    lines = [ln.split() for ln in (ROOT / ".gitattributes").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert ["*.train", "diff=specrun"] in lines


def test_pre_commit_hooks():
    yaml = pytest.importorskip("yaml")
    from specrun.cli import main

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"specrun-fmt", "specrun-validate"}
    assert hooks["specrun-fmt"]["entry"] == "specrun fmt"
    assert hooks["specrun-validate"]["entry"] == "specrun validate"
    for hook in hooks.values():
        assert hook["files"] == r"\.train$" and hook["language"] == "python" and hook["name"]
        assert re.search(hook["files"], "specs/a.train") and not re.search(hook["files"], "a.train.bak")
        assert hook["entry"].split()[1] in main.commands  # the subcommand exists
