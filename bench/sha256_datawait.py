"""Fraction of training-step time spent waiting for data, with sha256_trace producers running.

    .venv/bin/python bench/sha256_datawait.py [--producers 2] [--steps 60] [--transport shared_memory]

A plain loop: take a batch from the task's iterator (the time blocked in
``next()`` is the data wait), then forward, BCE loss, backward and a Lion step
of the smoke-size model (width 64, depth 2, batch 64 x 8 rounds). The first
``--warmup`` steps (producer start-up) are left out. Target: under 5 %.
``--transport inline`` shows, for contrast, the cost of generating in the loop.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))


def main() -> None:
    import torch

    from specrun.components.api import Context
    from specrun.components.losses import build_bce_with_logits
    from specrun.components.optim.lion import build_optimizer
    from specrun.components.sha256.model import build_model
    from specrun.components.sha256.task import build_task

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--producers", type=int, default=2)
    ap.add_argument("--transport", default="shared_memory", choices=["shared_memory", "inline", "device"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--tokens", default="bits", choices=["bits", "words"])
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    ctx = Context(seed=0, device=torch.device("cpu"), batch_size=args.batch)
    task = build_task({"rounds": args.rounds, "transport": args.transport, "producers": args.producers}, ctx)
    try:
        model = build_model({"width": args.width, "depth": args.depth, "heads": 4, "weights": "ternary",
                             "tokens": args.tokens}, task.model_info(), ctx)
        opt = build_optimizer({"lr": 1e-3, "betas": [0.9, 0.99], "weight_decay": 0.0,
                               "state_dtype": "fp32"}, model, ctx)
        loss_fn = build_bce_with_logits({}, ctx)
        it = task.train_batches(0)
        wait = total = 0.0
        for step in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            batch = next(it)
            t1 = time.perf_counter()
            loss = loss_fn(model(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            t2 = time.perf_counter()
            if step >= args.warmup:
                wait += t1 - t0
                total += t2 - t0
    finally:
        task.close()
    print(f"{'transport':<14} {'producers':>9} {'steps':>6} {'step ms':>8} {'wait ms':>8} {'wait %':>7}")
    print(f"{args.transport:<14} {args.producers:>9} {args.steps:>6} {1e3 * total / args.steps:>8.1f} "
          f"{1e3 * wait / args.steps:>8.2f} {100 * wait / total:>6.2f}%")
    print(f"(batch {args.batch} x {args.rounds} rounds, width {args.width}, depth {args.depth}, "
          f"tokens {args.tokens}, torch threads {torch.get_num_threads()}, os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
