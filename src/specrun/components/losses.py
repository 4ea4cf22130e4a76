"""Generic losses: they read ``outputs["logits"]`` and ``batch["targets"]``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def build_cross_entropy(params: dict, ctx):
    smoothing = float(params.get("label_smoothing", 0.0))
    ignore = int(params.get("ignore_index", -100))

    def cross_entropy(outputs: dict, batch: dict) -> torch.Tensor:
        logits, targets = outputs["logits"], batch["targets"]
        # Sequences (batch, time, classes) flatten to (tokens, classes); already-flat logits are
        # passed as they are (a reshape is an autograd node, a few us a step on a small model).
        if logits.dim() != 2:
            logits = logits.reshape(-1, logits.shape[-1])
        if targets.dim() != 1:
            targets = targets.reshape(-1)
        # fp32 for the softmax: bf16 log-probs lose the small differences that matter late in training.
        if logits.dtype != torch.float32:
            logits = logits.float()
        return F.cross_entropy(logits, targets, ignore_index=ignore, label_smoothing=smoothing)

    return cross_entropy


def build_bce_with_logits(params: dict, ctx):
    def bce_with_logits(outputs: dict, batch: dict) -> torch.Tensor:
        logits = outputs["logits"].float()
        return F.binary_cross_entropy_with_logits(logits, batch["targets"].to(logits.dtype))

    return bce_with_logits
