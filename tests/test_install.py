"""A real install: `pip install .` (not editable) into a fresh, plain venv, without torch.

The installed `specrun validate` must find its grammar and schemas inside the package
(specrun/_data/, put there by pyproject's force-include) and must not need torch: the
package is installed with its own dependencies, which must not pull torch in (torch is
the `train` extra), and the command runs from a folder outside the repository. This is
the CI recipe of docs/workflow.md, and what the pre-commit hooks install. Slow (builds a
venv): run with `pytest -m slow`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_pip_install_without_torch(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")}
    env["SPECRUN_CACHE_DIR"] = str(tmp_path / "cache")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    # a plain venv: no --system-site-packages, so nothing of the development venv leaks in
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    python, specrun = venv / "bin" / "python", venv / "bin" / "specrun"

    # the wheel `pip install .` builds, kept to look inside
    wheels = tmp_path / "wheels"
    _run([python, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, REPO], tmp_path, env)
    (wheel,) = wheels.glob("specrun-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "specrun/_data/grammar/train.lark" in names
    assert "specrun/_data/schemas/spec.schema.json" in names
    for schema in (REPO / "schemas" / "components").glob("*.json"):
        assert f"specrun/_data/schemas/components/{schema.name}" in names
    assert "specrun/cli/main.py" in names and "specrun/spec/parse.py" in names
    _run([python, "-m", "pip", "install", "--quiet", wheel], tmp_path, env)  # its dependencies: no torch

    # torch is absent, and the package is the installed copy, not the checkout
    probe = _run([python, "-c", "import importlib.util, specrun; "
                                "print(importlib.util.find_spec('torch') is None); print(specrun.__file__)"],
                 tmp_path, env).stdout.split()
    assert probe[0] == "True"
    assert str(venv) in probe[1] and str(REPO) not in probe[1]

    # validate the reference specs from outside the repository
    work = tmp_path / "elsewhere"
    shutil.copytree(REPO / "specs", work / "specs")
    specs = sorted(p.relative_to(work) for p in (work / "specs").glob("*.train"))
    assert specs
    result = _run([specrun, "validate", *specs], work, env)
    assert result.stdout.strip().splitlines()[-1].startswith(f"{len(specs)} spec(s) valid")
    assert "error[" not in result.stdout  # warnings (a smoke profile's short run) are not errors
    for command in (["plan", specs[0]], ["runs"]):
        _run([specrun, *command], work, env)

    # training says what to install instead of failing on an import
    no_torch = subprocess.run([str(specrun), "run", specs[0]], cwd=work, env=env, capture_output=True, text=True,
                              timeout=120)
    assert no_torch.returncode == 1 and "training needs PyTorch" in no_torch.stderr
    assert "Traceback" not in no_torch.stderr

    # a bad spec still fails the same way, with the installed grammar and catalog
    (work / "bad.train").write_text("spec bad\nmodel mlpp {\n", encoding="utf-8")
    bad = subprocess.run([str(specrun), "validate", "bad.train"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stdout.startswith("bad.train:2:12: error[E100]: '{' opened at line 2, column 12 is never closed")
    fmt = subprocess.run([str(specrun), "fmt", "--check", *specs], cwd=work, env=env, capture_output=True,
                         text=True, timeout=120)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr

    # the reference specs ship in the wheel: `new --from` works in an empty folder
    empty = tmp_path / "empty"
    empty.mkdir()
    _run([specrun, "new", "mine", "--from", "savant", "-o", "mine.train"], empty, env)
    assert "spec mine" in (empty / "mine.train").read_text(encoding="utf-8")
