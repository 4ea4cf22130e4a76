"""Optimizer ``adamw8bit``: bitsandbytes' 8-bit AdamW on CUDA, 32-bit AdamW elsewhere.

bitsandbytes is not a dependency of specrun: it is imported lazily, only when the run
is on a CUDA device. Whenever the 8-bit optimizer cannot be used the factory falls back
to ``torch.optim.AdamW`` with the same settings and says why in one line through
``ctx.note``:

    adamw8bit: needs CUDA; this run is on cpu; using 32-bit AdamW
    adamw8bit: bitsandbytes is not installed (pip install bitsandbytes); using 32-bit AdamW
    adamw8bit: bitsandbytes failed to import (RuntimeError: ...); using 32-bit AdamW

Weight decay applies to matrices (embeddings and linear weights) only, not to norm
gains or biases (two parameter groups). The two optimizers keep different state, so a
checkpoint made with one does not resume into the other.
"""

from __future__ import annotations

import importlib
import importlib.util

import torch

FALLBACK = "using 32-bit AdamW"


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _load_bitsandbytes():
    """(module, None) or (None, the reason it cannot be used)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return None, "bitsandbytes is not installed (pip install bitsandbytes)"
    try:
        return importlib.import_module("bitsandbytes"), None
    except Exception as exc:  # a broken install raises all sorts (RuntimeError, OSError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"bitsandbytes failed to import ({type(exc).__name__}: {first[:160]})"


def build_optimizer(params: dict, model: torch.nn.Module, ctx) -> torch.optim.Optimizer:
    lr = float(params.get("lr", 1e-3))
    betas = tuple(float(b) for b in params.get("betas", (0.9, 0.999)))
    eps = float(params.get("eps", 1e-8))
    weight_decay = float(params.get("weight_decay", 0.01))
    groups = _param_groups(model, weight_decay)

    device = torch.device(ctx.device) if ctx.device is not None else torch.device("cpu")
    if device.type != "cuda":
        reason = f"needs CUDA; this run is on {device.type}"
        bnb = None
    else:
        bnb, reason = _load_bitsandbytes()
    if bnb is not None:
        return bnb.optim.AdamW8bit(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    ctx.note(f"adamw8bit: {reason}; {FALLBACK}")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
