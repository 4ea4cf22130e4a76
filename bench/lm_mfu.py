"""Throughput and MFU of the ``causal_lm`` model at the aura document's scale.

    python bench/lm_mfu.py                         # CUDA: width 768, 12 layers, 12 heads, 512 tokens
    python bench/lm_mfu.py --peak-tflops 1979      # another card's dense bf16 peak (TFLOP/s)
    python bench/lm_mfu.py --memory                # with the hippocampal memory switched on

On CUDA: bf16 autocast, ``torch.compile``, SDPA (FlashAttention kernels), fused
AdamW, random tokens (the data pipeline is not what is measured). MFU follows
nanoGPT's ``estimate_mfu``: ``6 N + 12 L H Q T`` FLOPs per token for forward and
backward (N = parameters without the position table, L layers, H heads, Q head
dim, T sequence length), divided by the peak dense bf16 rate (default 989
TFLOP/s, H100 SXM). Without CUDA it runs a tiny fp32 configuration as a smoke
test and prints tokens/s only: an MFU against a GPU peak means nothing on a CPU.

Prints one human line and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from specrun.components.api import Context  # noqa: E402
from specrun.components.lm.model import build_model  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    ap.add_argument("--width", type=int)
    ap.add_argument("--depth", type=int)
    ap.add_argument("--heads", type=int)
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--vocab", type=int, default=32000, help="the document's vocabulary (default 32000)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--memory", action="store_true", help="hippocampal memory (1000 cells, 100k buffer) on")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--checkpointing", action="store_true")
    a = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    full = dict(width=768, depth=12, heads=12, seq_len=512, batch=32)
    tiny = dict(width=128, depth=2, heads=4, seq_len=128, batch=8)
    cfg = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in (full if cuda else tiny).items()}
    vocab = a.vocab if cuda else 259
    params = {"width": cfg["width"], "depth": cfg["depth"], "heads": cfg["heads"], "dropout": 0.0}
    if a.memory:
        params["memory"] = {"place_cells": 1000 if cuda else 64, "replay_buffer": 100_000 if cuda else 1024,
                            "start_on": True}
    info = {"vocab_size": vocab, "seq_len": cfg["seq_len"]}
    ctx = Context(seed=0, device=device, batch_size=cfg["batch"])
    model = build_model(params, info, ctx).to(device)
    model.set_gradient_checkpointing(a.checkpointing)
    n_params = model.num_parameters()
    n_flops = n_params - model.pos_emb.weight.numel()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    step_model = torch.compile(model) if cuda and not a.no_compile else model

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (cfg["batch"], cfg["seq_len"] + 1), generator=g).to(device)
    batch = {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            logits = step_model(batch)["logits"]
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["targets"].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    started = time.perf_counter()
    for _ in range(a.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started

    tokens = cfg["batch"] * cfg["seq_len"] * a.steps
    tok_s = tokens / elapsed
    q = cfg["width"] // cfg["heads"]
    flops_per_token = 6 * n_flops + 12 * cfg["depth"] * cfg["heads"] * q * cfg["seq_len"]
    achieved = flops_per_token * tok_s
    mfu = achieved / (a.peak_tflops * 1e12) if cuda else None
    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu", "params": n_params, **cfg, "vocab": vocab,
        "memory": a.memory, "compile": cuda and not a.no_compile, "checkpointing": a.checkpointing,
        "steps": a.steps, "warmup_s": round(warm_s, 2), "step_ms": round(1000 * elapsed / a.steps, 2),
        "tokens_per_s": round(tok_s), "achieved_tflops": round(achieved / 1e12, 3),
        "peak_tflops": a.peak_tflops if cuda else None, "mfu": round(mfu, 4) if mfu is not None else None,
        "final_loss": round(float(loss), 4),
    }
    if cuda:
        result["max_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(f"{result['device']}: {n_params / 1e6:.1f}M params, {tok_s:,.0f} tokens/s, "
              f"{achieved / 1e12:.1f} TFLOP/s = MFU {100 * mfu:.1f}% of {a.peak_tflops:g} TFLOP/s")
    else:
        print(f"cpu (tiny config, fp32, no compile): {n_params / 1e6:.2f}M params, {tok_s:,.0f} tokens/s; "
              "MFU is only meaningful on a GPU (run this on CUDA for the aura-scale figure)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
