"""Each reference spec's smoke profile trains for real on a CPU (slow tier; CI runs it).

What each must show is the document's point, measured from the run's own files:
sha256 and keenkenning promote out of a first phase through a real gate; the
language models' validation loss falls.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _smoke(spec: str, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    sets = [arg for o in overrides for arg in ("--set", o)]
    # Small models on a shared 2-core box: a second OpenMP thread mostly spin-waits (docs/components/latin.md).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "specrun.cli", "run", str(ROOT / "specs" / f"{spec}.train"),
                           "--profile", "smoke", "--run-dir", str(run_dir), "--quiet", *sets],
                          capture_output=True, text=True, timeout=900, cwd=run_dir.parent, env=env)


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
    if spec == "keenkenning":
        _assert_beats_the_copy_baseline(run_dir)


def _assert_beats_the_copy_baseline(run_dir: Path) -> None:
    """In the first stage (3..5, 50-70% given) the valid-grid rate clears copy-and-guess by far."""
    from specrun.spec.check import load
    from specrun.components.api import Context
    from specrun.components.latin.task import LatinGridTask, copy_baseline_valid_rate
    from specrun.plan import build_plan

    plan = build_plan(load(str(ROOT / "specs" / "keenkenning.train"), "smoke", ()))
    task = LatinGridTask(plan.components["task"]["params"], Context(seed=plan.seed, device=torch.device("cpu"),
                                                                    batch_size=plan.batch))
    baseline = copy_baseline_valid_rate(task.val_batches(4))
    with open(run_dir / "metrics.csv", newline="") as fh:
        first_stage = [float(r["val.valid_grid_rate"]) for r in csv.DictReader(fh)
                       if r["phase.size"] == "n5" and r.get("val.valid_grid_rate")]
    assert baseline < 0.05 and max(first_stage) > baseline + 0.3, (baseline, first_stage)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["savant", "aura_hippocampal", "cognate_phase1"])
def test_smoke_validation_loss_falls(spec, tmp_path):
    run_dir = tmp_path / spec
    done = _smoke(spec, run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    val = _column(run_dir, "val.loss")
    assert len(val) >= 2
    assert val[-1] < 0.9 * val[0], val
    if spec == "cognate_phase1":  # the ACT variance is a logged metric (the spec expects it > 0.05)
        act = _column(run_dir, "val.act_variance")
        assert len(act) == len(val) and act[-1] > act[0], act


@pytest.mark.slow
def test_sha256_smoke_beats_the_copy_baseline(tmp_path):
    run_dir = tmp_path / "sha"
    done = _smoke("sha256_bitnet", run_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    # Copying the 192 shifted bits and guessing the 64 new ones gives 0.875 bit accuracy and 0.5 on
    # the new (non-shift) words. Over the last 10 log rows (100 steps) the smoke run measured 0.8785
    # and 0.514; one row's noise is about 0.003, so these margins are not luck.
    bits = _column(run_dir, "train.bit_accuracy")[-10:]
    new_words = _column(run_dir, "train.nonshift_accuracy")[-10:]
    assert sum(bits) / len(bits) > 0.8765, bits
    assert sum(new_words) / len(new_words) > 0.506, new_words


def _last_validation(run_dir: Path) -> dict:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [r for r in csv.DictReader(fh) if r.get("val.cell_accuracy")][-1]


@pytest.mark.slow
def test_keenkenning_bf16_reaches_the_fp32_accuracy(tmp_path):
    """The document's "BF16 training matches" criterion, on the smoke profile (CPU autocast).

    Tolerance: bf16's last validation cell accuracy is at most 0.03 below fp32's (its
    measured gap is +0.01: 0.447 against 0.437), in the same curriculum stages, and the
    checkpoint records the precision the run used.
    """
    last = {}
    for precision in ("fp32", "bf16"):
        run_dir = tmp_path / precision
        done = _smoke("keenkenning", run_dir, f"precision.type={precision}")
        assert done.returncode == 0, done.stdout + done.stderr
        last[precision] = _last_validation(run_dir)
        state = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True, map_location="cpu")
        assert state["precision"] == precision
    stages = ("phase.size", "phase.mode", "phase.fill")
    assert [last["bf16"][k] for k in stages] == [last["fp32"][k] for k in stages]
    fp32, bf16 = (float(last[p]["val.cell_accuracy"]) for p in ("fp32", "bf16"))
    assert bf16 >= fp32 - 0.03, (bf16, fp32)
