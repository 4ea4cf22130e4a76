"""What the optimizers here share: weight-decay groups, the closure call."""

from __future__ import annotations

import torch


def closure_loss(closure):
    """The loss ``closure`` recomputes (with gradients on inside a no-grad step), or None."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (dim >= 2) only; norms, biases and gains are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups
