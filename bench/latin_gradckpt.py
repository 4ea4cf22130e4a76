"""Gradient checkpointing on vs off for the grid transformer: activation memory and step time.

    python bench/latin_gradckpt.py                       # width 256, depth 6, batch 32, 16x16
    python bench/latin_gradckpt.py --width 128 --steps 3 --threads 1

Each setting runs in a fresh subprocess (so peak RSS is its own) and reports:

- saved_mb: bytes held for backward at the end of the forward pass: every tensor packed by
  autograd (``torch.autograd.graph.saved_tensors_hooks``) plus, with checkpointing, the
  block inputs the checkpoint keeps to recompute from (the hook does not see those: inside
  a non-reentrant checkpoint its own hooks take over). Storages are counted once.
- rss_mb: peak resident memory (psutil, sampled every 5 ms) over all steps minus
  the resident memory before the first step: activations plus gradients and optimizer
  state (the same in both settings); allocator caching makes it noisier than saved_mb.
- cuda_mb (CUDA only): ``torch.cuda.max_memory_allocated`` over the step minus before.
- step_s / cpu_s: median wall and process-CPU time of forward + backward + AdamW step.
  On a shared, loaded machine wall time is noise; with ``--threads 1`` CPU time is the
  figure to compare.

Then the ratios: memory saved % and time lost %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")


def child(args) -> dict:
    sys.path.insert(0, SRC)
    import psutil
    import torch

    from specrun.components.api import Context
    from specrun.components.latin.model import build_model
    from specrun.components.latin.task import build_task
    from specrun.components.losses import build_cross_entropy

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    ctx = Context(seed=0, device=device, batch_size=args.batch, cache_dir=args.cache_dir)
    task = build_task({"sizes": [args.size, args.size], "modes": ["standard", "zero_inclusive", "negative"],
                       "fill": [0.3, 0.6], "pool_size": 64}, ctx)
    model = build_model({"width": args.width, "depth": args.depth, "heads": args.heads,
                         "relation_bias": not args.no_relation_bias}, task.model_info(), ctx).to(device)
    model.set_gradient_checkpointing(args.mode == "on")
    model.train()
    loss_fn = build_cross_entropy({}, ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = next(task.train_batches(0))
    proc = psutil.Process()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def saved_bytes() -> int:
        seen: dict[int, int] = {}
        forward_done = [False]

        def pack(t):
            if not forward_done[0]:
                st = t.untyped_storage()
                seen[st.data_ptr()] = st.nbytes()
            return t

        def pre_hook(module, inputs):  # block inputs the checkpoint keeps
            if not forward_done[0] and model.stack.gradient_checkpointing:
                for t in inputs:
                    if isinstance(t, torch.Tensor):
                        st = t.untyped_storage()
                        seen[st.data_ptr()] = st.nbytes()

        handles = [b.register_forward_pre_hook(pre_hook) for b in model.stack.blocks]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = loss_fn(model(batch), batch)
        forward_done[0] = True
        total = sum(seen.values())
        loss.backward()
        opt.zero_grad(set_to_none=True)
        for h in handles:
            h.remove()
        return total

    def one_step():
        out = model(batch)
        loss = loss_fn(out, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()

    peak = [proc.memory_info().rss]
    rss0 = peak[0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    one_step()  # warm-up: kernels, optimizer state, allocator
    saved = saved_bytes()
    times, cpu, cuda = [], [], []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            cuda_before = torch.cuda.memory_allocated()
        t0, c0 = time.perf_counter(), time.process_time()
        one_step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if device.type == "cuda":
            cuda.append(torch.cuda.max_memory_allocated() - cuda_before)
    stop.set()
    sampler.join()
    mb = 1 / 2**20
    return {
        "mode": args.mode,
        "saved_mb": saved * mb,
        "rss_mb": (peak[0] - rss0) * mb,
        "cuda_mb": statistics.median(cuda) * mb if cuda else None,
        "step_s": statistics.median(times),
        "cpu_s": statistics.median(cpu),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "threads": torch.get_num_threads(),
        "cells": batch["inputs"].shape[1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--depth", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=16, help="grid order n (n x n cells)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setting (after one warm-up)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cuda" if _cuda() else "cpu")
    ap.add_argument("--no-relation-bias", action="store_true")
    ap.add_argument("--cache-dir", default=".specrun-cache")
    ap.add_argument("--mode", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    results = {}
    passthrough = [a for a in sys.argv[1:]]
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, *passthrough, "--child", "--mode", mode],
                             check=True, capture_output=True, text=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    off, on = results["off"], results["on"]
    print(f"grid_transformer width {args.width} depth {args.depth} heads {args.heads}, batch {args.batch} "
          f"of {args.size}x{args.size} grids ({off['cells']} cells), {off['params_m']:.2f}M params, "
          f"device {args.device}, {off['threads']} thread(s), median of {args.steps} steps")
    print(f"{'checkpointing':<14}{'saved MB':>10}{'RSS rise MB':>13}{'CUDA MB':>9}{'wall s':>9}{'CPU s':>8}")
    for r in (off, on):
        cuda = f"{r['cuda_mb']:.0f}" if r["cuda_mb"] is not None else "-"
        print(f"{r['mode']:<14}{r['saved_mb']:>10.0f}{r['rss_mb']:>13.0f}{cuda:>9}{r['step_s']:>9.2f}"
              f"{r['cpu_s']:>8.2f}")

    def saved_pct(key):
        return 100 * (1 - on[key] / off[key]) if off.get(key) else float("nan")

    print(f"memory saved: {saved_pct('saved_mb'):.0f}% of saved-for-backward bytes, "
          f"{saved_pct('rss_mb'):.0f}% of the RSS rise"
          + (f", {saved_pct('cuda_mb'):.0f}% of CUDA peak" if off["cuda_mb"] else ""))
    print(f"time lost: {100 * (on['step_s'] / off['step_s'] - 1):.0f}% wall, "
          f"{100 * (on['cpu_s'] / off['cpu_s'] - 1):.0f}% CPU time per step")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
