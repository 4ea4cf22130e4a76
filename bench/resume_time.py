"""Time from launching `specrun run` to the first step of a resumed run, per reference spec.

For each spec's smoke profile: start a run, SIGKILL it once its first checkpoint is
complete (index.json names it), then launch the same command again and time it:

- load_s: launch to the `resume` event (the process started, imported torch, parsed
  and checked the spec, built the plan, task and model, and loaded the checkpoint);
- first_step_s: launch to the first metrics.csv row past the checkpoint's step, the
  figure the issue asks for. Both runs log every step (`--set log.every=1`), so that
  row is the first optimizer step the resumed run takes.

    OMP_NUM_THREADS=1 python bench/resume_time.py [SPEC ...]

Times are wall clock on this machine, so they include whatever else it is doing; the
import of torch alone is measured beside them (`torch_import_s`) as the yardstick.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ["builtin_rule", "sha256_bitnet", "savant", "aura_hippocampal", "cognate_phase1", "keenkenning"]


def _command(spec: str, run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "specrun.cli", "run", str(ROOT / "specs" / f"{spec}.train"), "-p", "smoke",
            "--run-dir", str(run_dir), "--quiet", "--set", "log.every=1", "--set", "checkpoint.resume=latest"]


def _checkpointed_step(run_dir: Path) -> int | None:
    steps = []
    for index in run_dir.glob("**/index.json"):  # the spec may name its checkpoint folder
        try:
            steps += [e["step"] for e in json.loads(index.read_text()).get("checkpoints", [])
                      if e["kind"] in ("regular", "final")]  # best.pt is not where a run resumes from
        except (OSError, ValueError):
            continue
    return max(steps, default=None)


def _kill_after_first_checkpoint(spec: str, run_dir: Path, timeout: float = 600) -> int:
    proc = subprocess.Popen(_command(spec, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            step = _checkpointed_step(run_dir)
            if step is not None:
                proc.send_signal(signal.SIGKILL)
                return step
            if proc.poll() is not None:
                raise RuntimeError(f"{spec}: the first run ended (rc {proc.returncode}) before a checkpoint")
            time.sleep(0.05)
        raise TimeoutError(f"{spec}: no checkpoint in {timeout} s")
    finally:
        proc.kill()
        proc.wait()


def _first_row_after(run_dir: Path, resumed: dict) -> float | None:
    """The time of the resumed run's first row (the killed run's later rows stay in the file)."""
    try:
        with open(run_dir / "metrics.csv", newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    if float(row["time"]) >= resumed["time"] and int(row["step"]) > resumed["step"]:
                        return float(row["time"])
                except (TypeError, ValueError):  # a row still being written
                    continue
    except OSError:
        pass
    return None


def _resume_event(run_dir: Path) -> dict | None:
    try:
        lines = (run_dir / "events.jsonl").read_text().splitlines()
    except OSError:
        return None
    found = [e for e in map(json.loads, lines[:-1] if lines and not lines[-1] else lines) if e["event"] == "resume"]
    return found[-1] if found else None


def measure(spec: str, work: Path) -> dict:
    run_dir = work / spec
    _kill_after_first_checkpoint(spec, run_dir)
    launched = time.time()
    proc = subprocess.Popen(_command(spec, run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        resumed = first = None
        while first is None:
            ended = proc.poll() is not None  # read before the files: a run may end between the two
            resumed = resumed or _resume_event(run_dir)
            first = resumed and _first_row_after(run_dir, resumed)
            if first is None and ended:
                raise RuntimeError(f"{spec}: the resumed run ended (rc {proc.returncode}): {proc.stderr.read()}")
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGINT)  # it saves and exits: the figure is taken already
        proc.wait(timeout=300)
    size = max(p.stat().st_size for p in run_dir.glob("**/*.pt")) / 1e6
    return {"spec": spec, "resumed_at_step": resumed["step"], "load_s": round(resumed["time"] - launched, 2),
            "first_step_s": round(first - launched, 2), "checkpoint_mb": round(size, 2)}


def torch_import_s() -> float:
    start = time.time()
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    return round(time.time() - start, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", default=SPECS)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(json.dumps({"torch_import_s": torch_import_s()}))
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.specs:
            print(json.dumps(measure(spec, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
