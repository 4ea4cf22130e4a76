"""Each reference spec's smoke profile trains for real on a CPU (slow tier; CI runs it).

What each must show is the document's point, measured from the run's own files:
sha256 and keenkenning promote out of a first phase through a real gate; the
language models' validation loss falls.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _smoke(spec: str, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "specrun.cli", "run", str(ROOT / "specs" / f"{spec}.train"),
                           "--profile", "smoke", "--run-dir", str(run_dir), "--quiet"],
                          capture_output=True, text=True, timeout=900, cwd=run_dir.parent)


def _events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def _column(run_dir: Path, name: str) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [float(r[name]) for r in csv.DictReader(fh) if r.get(name)]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["sha256_bitnet", "keenkenning"])
def test_smoke_promotes_through_a_real_gate(spec, tmp_path):
    run_dir = tmp_path / spec
    done = _smoke(spec, run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    promotions = _events(run_dir, "phase")
    assert promotions, "no phase was promoted"
    assert all(p["values"] for p in promotions)  # the gate's inputs are logged with the promotion


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["savant", "aura_hippocampal", "cognate_phase1"])
def test_smoke_validation_loss_falls(spec, tmp_path):
    run_dir = tmp_path / spec
    done = _smoke(spec, run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    val = _column(run_dir, "val.loss")
    assert len(val) >= 2
    assert val[-1] < 0.9 * val[0], val


@pytest.mark.slow
def test_sha256_smoke_beats_the_copy_baseline(tmp_path):
    run_dir = tmp_path / "sha"
    done = _smoke("sha256_bitnet", run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    acc = _column(run_dir, "train.bit_accuracy")
    assert max(acc[-5:]) > 0.875, acc  # copying the 192 shifted bits and guessing the rest gives 0.875
