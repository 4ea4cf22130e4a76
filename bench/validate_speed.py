"""How long `specrun validate specs/*.train` takes, beside `python -c "import torch"`.

Both run as subprocesses on this machine in the same session, best of N (default 5).
Target: validate at most 0.4 s and at most a fifth of the torch import, because
`validate` runs in CI and in editors on every save, and must never pay for torch.

    python bench/validate_speed.py [--runs 5] [--specs 'specs/*.train']

Prints both times, the ratio and the CPU time of the best validate run; exits 1 when a
target is missed (use it as a CI check only on a quiet machine).

Then the spec shapes of tests/spec_shapes.py (duplicate lines, profiles, a list one item
per line, a uniqueItems list, a long sum, many expectations), each validated in this
process at a large size: CPU seconds, and seconds per 10k units (lines, items, terms). The
linear-growth test (tests/test_validate_growth.py) holds the ratios; this prints the rates.

    python bench/validate_speed.py --shapes-only [--scale 1.0]
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 0.4
TARGET_RATIO = 0.2


def _specrun() -> list[str]:
    exe = Path(sys.executable).parent / "specrun"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("specrun")
    return [found] if found else [sys.executable, "-m", "specrun.cli"]


# As installed: pip compiles bytecode at install time, so a run does not compile the sources.
# (PYTHONDONTWRITEBYTECODE=1 in a development shell would make every run compile specrun.)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def best_of(cmd: list[str], runs: int) -> tuple[float, float]:
    """(best wall seconds, CPU seconds of that run) over ``runs`` runs of ``cmd``."""
    best = (float("inf"), 0.0)
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{proc.stderr.decode()[-2000:]}")
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, (wall, cpu))
    return best


# Sizes of the shapes, in their own units; --scale multiplies them.
SHAPE_SIZES = {"duplicate lines": 20_000, "profiles": 10_000, "list, one item per line": 20_000,
               "uniqueItems list": 8_000, "long sum": 300_000, "many expectations": 5_000}


def shapes(scale: float) -> None:
    sys.path.insert(0, str(REPO / "tests"))
    from spec_shapes import SHAPES
    from test_validate_growth import validate_text

    validate_text(SHAPES["duplicate lines"](10))  # warm: parser, schemas, catalog
    print(f"{'shape':26s} {'size':>8s} {'lines':>8s} {'cpu s':>8s} {'s/10k units':>12s}  outcome")
    for name, make in SHAPES.items():
        n = max(1, int(SHAPE_SIZES[name] * scale))
        text = make(n)
        start = time.process_time()
        out = validate_text(text)
        cpu = time.process_time() - start
        first = out.split("\n", 1)[0].split(": ", 1)[-1][:50] if out else "valid"
        print(f"{name:26s} {n:8d} {text.count(chr(10)):8d} {cpu:8.3f} {cpu / n * 10_000:12.4f}  {first}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--specs", default="specs/*.train")
    parser.add_argument("--shapes-only", action="store_true", help="only the spec shapes")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the shapes' sizes")
    args = parser.parse_args()
    if args.shapes_only:
        shapes(args.scale)
        return 0
    specs = sorted(glob.glob(str(REPO / args.specs)))
    if not specs:
        sys.exit(f"no specs match {args.specs}")
    validate_cmd = _specrun() + ["validate", *specs]
    torch_cmd = [sys.executable, "-c", "import torch"]
    best_of(validate_cmd, 1)  # warm the file cache, the bytecode and specrun's parser cache
    validate, validate_cpu = best_of(validate_cmd, args.runs)
    torch, torch_cpu = best_of(torch_cmd, args.runs)
    ratio = validate / torch
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"specrun validate ({len(specs)} specs): {validate:.3f} s   (cpu {validate_cpu:.3f} s)")
    print(f"python -c 'import torch':       {torch:.3f} s   (cpu {torch_cpu:.3f} s)")
    print(f"ratio validate/torch: {ratio:.3f}   (target <= {TARGET_RATIO}; validate target <= {TARGET_SECONDS} s)")
    print(f"best of {args.runs}; load average {load:.2f} on {os.cpu_count()} cpus")
    ok = validate <= TARGET_SECONDS and ratio <= TARGET_RATIO
    print("OK" if ok else "MISSED")
    print()
    shapes(args.scale)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
