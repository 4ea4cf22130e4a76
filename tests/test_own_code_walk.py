"""docs/own-code.md's walk, done as written: an empty folder outside the repository, the
files the page shows, then validate (torch left unimported), plan, run (Ctrl+C), run again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "own-code.md"


def _walk() -> tuple[dict[str, str], list[str]]:
    """The files the walk writes and the commands it runs, in order."""
    text = DOC.read_text(encoding="utf-8")
    walk = text[text.index("## A walk from an empty folder"):text.index("## Naming code")]
    files, commands = {}, []
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", walk, re.S):
        first = body.splitlines()[0]
        if lang in ("python", "") and re.fullmatch(r"# [\w.]+\.(py|train)", first):
            files[first[2:]] = body
        elif lang == "console":
            commands += [line[2:].split("  #")[0].strip() for line in body.splitlines() if line.startswith("$ ")]
    return files, commands


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}


def _specrun(args: list[str], cwd: Path) -> list[str]:
    return [sys.executable, "-m", "specrun.cli", *args]


@pytest.mark.slow  # four fresh processes importing torch: half a minute on a shared CPU
def test_the_walk_in_docs_own_code(tmp_path):
    files, commands = _walk()
    assert set(files) == {"models.py", "data.py", "my.train"}
    assert commands == ["specrun validate my.train", "specrun plan my.train", "specrun run my.train",
                        "specrun run my.train"]
    folder = tmp_path / "empty"
    folder.mkdir()
    assert ROOT not in folder.resolve().parents
    for name, body in files.items():
        (folder / name).write_text(body, encoding="utf-8")

    # validate: the settings are checked from the source; neither torch nor the user's code is imported
    probe = ("import sys\nfrom specrun.cli.main import main\ntry:\n    main(['validate', 'my.train'])\n"
             "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
             "assert 'torch' not in sys.modules and 'models' not in sys.modules and 'data' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=folder, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 spec(s) valid" in done.stdout

    plan = subprocess.run(_specrun(["plan", "my.train"], folder), cwd=folder, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr
    assert "models.py:TinyNet" in plan.stdout and str(folder / "models.py") in plan.stdout
    assert "from the data: in_features, classes" in plan.stdout

    # run, and press Ctrl+C once a checkpoint is there
    first = subprocess.Popen(_specrun(["run", "my.train"], folder), cwd=folder, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and first.poll() is None:
        if list(folder.glob("runs/my/*/checkpoints/step_*.pt")):
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)
    out, _ = first.communicate(timeout=120)
    assert first.returncode == 130, out
    assert "state saved" in out

    again = subprocess.run(_specrun(["run", "my.train"], folder), cwd=folder, env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed from" in again.stdout + again.stderr
    assert "finished: finished 200 steps" in again.stdout + again.stderr
    [run_dir] = list((folder / "runs" / "my").iterdir())
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "train.accuracy" in header and "val.accuracy" in header


def test_the_pages_error_example_is_what_validate_prints(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from specrun.cli.main import main

    files, _ = _walk()
    for name, body in files.items():
        (tmp_path / name).write_text(body.replace("{ width 32 }", "{ widht 32 }") if name == "my.train" else body)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["validate", "my.train"])
    assert result.exit_code == 1
    shown = re.search(r"```\n(my\.train:\d+:\d+: error\[E200\].*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert result.stdout == shown.group(1)


@pytest.mark.slow
def test_the_shapes_reference_spec_trains_from_files_next_to_it(tmp_path):
    run_dir = tmp_path / "shapes"
    done = subprocess.run(_specrun(["run", str(ROOT / "specs" / "shapes.train"), "--profile", "smoke",
                                    "--run-dir", str(run_dir), "--quiet"], tmp_path),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr  # it expects val.accuracy > 0.8 by 4 epochs
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "val.top2" in header
