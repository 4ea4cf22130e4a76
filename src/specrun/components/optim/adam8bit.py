"""Optimizer ``adamw8bit``: bitsandbytes' 8-bit AdamW wherever it runs, 32-bit AdamW elsewhere.

bitsandbytes is optional (it is in the ``dev`` extra for the tests): it is imported
lazily, and whether its ``AdamW8bit`` works on the run's device is found out by
trying it, not guessed from the device type. bitsandbytes 0.50 steps it on CPUs as
well as on CUDA. The probe (import, then one step of a 4096-element parameter, the
smallest bitsandbytes keeps in 8 bits, checking that the state is 8-bit and the
parameter moved) runs once per device type and process. Whenever it fails the
factory falls back to ``torch.optim.AdamW`` with the same settings and says why in
one line through ``ctx.note``:

    adamw8bit: bitsandbytes is not installed (pip install bitsandbytes); using 32-bit AdamW
    adamw8bit: bitsandbytes failed to import (RuntimeError: ...); using 32-bit AdamW
    adamw8bit: bitsandbytes 0.50.2 cannot step AdamW8bit on mps (NotImplementedError: ...); using 32-bit AdamW

Weight decay applies to matrices (embeddings and linear weights) only, not to norm
gains or biases (two parameter groups). bitsandbytes keeps 32-bit state for tensors
under 4096 elements. The two optimizers keep different state, so a checkpoint made
with one does not resume into the other.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging

import torch

from specrun.components.optim.common import decay_groups

FALLBACK = "using 32-bit AdamW"
PROBE_SIZE = 4096  # bitsandbytes' min_8bit_size: smaller tensors get 32-bit state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160] if text else ''}".rstrip(": ")


def _import_bitsandbytes():
    """(module, None) or (None, the reason it cannot be imported)."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return None, "bitsandbytes is not installed (pip install bitsandbytes)"
    # Its import logs warnings about optional 4-bit kernels this optimizer never uses.
    log = logging.getLogger("bitsandbytes")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        return importlib.import_module("bitsandbytes"), None
    except Exception as exc:  # a broken install raises all sorts (RuntimeError, OSError, ...)
        return None, f"bitsandbytes failed to import ({_first_line(exc)})"
    finally:
        log.setLevel(level)


def _try_step(bnb, device: torch.device) -> str | None:
    """None if AdamW8bit steps a parameter on ``device`` with 8-bit state, else why not."""
    version = getattr(bnb, "__version__", "")
    who = f"bitsandbytes {version}".rstrip()
    try:
        p = torch.nn.Parameter(torch.zeros(PROBE_SIZE, device=device))
        p.grad = torch.ones_like(p)
        opt = bnb.optim.AdamW8bit([p], lr=1e-3)
        opt.step()
        state = opt.state[p].get("state1")
        moved = bool(torch.isfinite(p).all()) and bool((p != 0).all())
    except Exception as exc:  # unsupported device, missing kernels, driver errors...
        return f"{who} cannot step AdamW8bit on {device.type} ({_first_line(exc)})"
    if not moved:
        return f"{who} AdamW8bit did not update a parameter on {device.type}"
    if not torch.is_tensor(state) or state.dtype != torch.uint8:
        return f"{who} AdamW8bit kept no 8-bit state on {device.type}"
    return None


@functools.cache
def probe_bitsandbytes(device_type: str) -> tuple[object | None, str | None]:
    """(bitsandbytes, None) if its AdamW8bit works on ``device_type``, else (None, why not).

    Once per device type and process (``probe_bitsandbytes.cache_clear()`` forgets).
    """
    bnb, reason = _import_bitsandbytes()
    if bnb is not None:
        reason = _try_step(bnb, torch.device(device_type))
    return (bnb if reason is None else None), reason


def build_optimizer(params: dict, model: torch.nn.Module, ctx) -> torch.optim.Optimizer:
    lr = float(params.get("lr", 1e-3))
    betas = tuple(float(b) for b in params.get("betas", (0.9, 0.999)))
    eps = float(params.get("eps", 1e-8))
    weight_decay = float(params.get("weight_decay", 0.01))
    groups = decay_groups(model, weight_decay)

    device = torch.device(ctx.device) if ctx.device is not None else torch.device("cpu")
    bnb, reason = probe_bitsandbytes(device.type)
    if bnb is not None:
        return bnb.optim.AdamW8bit(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    ctx.note(f"adamw8bit: {reason}; {FALLBACK}")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
