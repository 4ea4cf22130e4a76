"""Shared test helpers. Keep this small: several test suites use it.

``SPECRUN_UPDATE_GOLDEN=1 pytest tests/test_*_golden.py`` rewrites the expected files
of the golden tests from the current output (review the diff before committing).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spec_helpers import MINIMAL_SPEC

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo() -> Path:
    """The repository root."""
    return REPO


@pytest.fixture
def golden():
    """``golden(path, actual)``: the expected text stored at ``path``.

    With SPECRUN_UPDATE_GOLDEN=1 the file is (re)written from ``actual`` first.
    """

    def read(path: Path, actual: str) -> str:
        if os.environ.get("SPECRUN_UPDATE_GOLDEN") == "1":
            path.write_text(actual, encoding="utf-8")
        if not path.exists():
            pytest.fail(f"{path} is missing; run with SPECRUN_UPDATE_GOLDEN=1 to create it")
        return path.read_text(encoding="utf-8")

    return read




@pytest.fixture
def minimal_spec() -> str:
    """A small valid spec of 100 steps, to add settings to."""
    return MINIMAL_SPEC


OWN_CODE = REPO / "tests" / "data" / "own"


@pytest.fixture
def own_project(tmp_path):
    """``own_project(spec_text)``: a folder holding tests/data/own's user code (models.py, data.py,
    scores.py, losses.py, optim.py) and ``my.train`` with ``spec_text``; returns the spec's path."""
    import shutil

    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    for source in OWN_CODE.glob("*.py"):
        shutil.copy(source, folder / source.name)

    def make(text: str, name: str = "my.train"):
        path = folder / name
        path.write_text(text, encoding="utf-8")
        return path

    return make


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of tiny-tensor tests (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): a second thread only costs, and on a
    shared 2-core machine it thrashes."""
    import torch  # here, not at the top: the language tests never import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
