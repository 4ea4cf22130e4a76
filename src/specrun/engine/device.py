"""Device and precision: what the spec asks, what this machine can do, and the difference said once.

Anything the machine cannot honour (fp16 autocast or torch.compile without
CUDA, a VRAM cap without CUDA, TF32 on a CPU) is either degraded with one
clear console line and an event (``precision.on_unsupported fallback``, the
default) or refused with an error (``error``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from specrun.sections import PrecisionPolicy

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Unsupported(RuntimeError):
    pass


@dataclass
class Precision:
    device: torch.device
    compute: str  # fp32 / fp16 / bf16 actually used for autocast
    weights: str  # fp32 / bf16
    scaler: object | None  # torch.amp.GradScaler when fp16 with loss scaling
    notes: list[str] = field(default_factory=list)

    def autocast(self):
        if self.compute == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.compute])


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise Unsupported("device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise Unsupported("device mps: Apple's Metal backend is not available here")
    return torch.device(requested)


def _degrade(policy: str, notes: list[str], need: str, instead: str) -> None:
    """``need`` cannot be had here: stop (policy error), or note what the run does ``instead``."""
    if policy == "error":
        raise Unsupported(f"{need}; stopping, as precision.on_unsupported is error (fallback would: {instead})")
    notes.append(f"{need}; {instead}")


def setup_precision(prec: PrecisionPolicy, device: torch.device) -> Precision:
    policy = prec.on_unsupported
    notes: list[str] = []
    compute = prec.type
    cuda = device.type == "cuda"
    # fp16 autocast and GradScaler exist for CUDA and, in torch >= 2.6, Apple's MPS (the sha256
    # document's machine); a CPU has no fp16 matmuls worth the name.
    fp16_here = cuda or (device.type == "mps" and torch.amp.is_autocast_available("mps"))
    if compute == "fp16" and not fp16_here:
        _degrade(policy, notes, "fp16 autocast needs a CUDA or MPS device", f"this run computes in fp32 on {device.type}")
        compute = "fp32"
    if compute == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        _degrade(policy, notes, "this GPU has no bf16 support", "computing in fp32")
        compute = "fp32"
    weights = prec.weights
    if weights == "bf16":  # what the spec asks, but a user should know its price
        notes.append("precision.weights bf16: parameters live in bf16 with no fp32 master copy, so an update "
                     "smaller than about 1/256 of a weight rounds away (at small learning rates, most of them)")
    scaler = None
    if compute == "fp16" and prec.loss_scale == "dynamic":
        scaler = torch.amp.GradScaler(device.type)
    if prec.tf32:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.set_float32_matmul_precision("high")
        else:
            notes.append(f"tf32 is a CUDA matmul mode; it has no effect on {device.type}")
    if prec.cudnn_benchmark:
        if cuda:
            torch.backends.cudnn.benchmark = True
        else:
            notes.append(f"cudnn_benchmark is a CUDA setting; it has no effect on {device.type}")
    return Precision(device, compute, weights, scaler, notes)


def maybe_compile(model, compile: bool, prec: PrecisionPolicy, device: torch.device, notes: list[str]):
    if not compile:
        return model
    policy = prec.on_unsupported
    if device.type != "cuda":
        _degrade(policy, notes, "torch.compile is enabled for CUDA runs only", f"running eagerly on {device.type}")
        return model
    return torch.compile(model)


def cap_vram(limit_bytes: int | None, device: torch.device, notes: list[str]) -> None:
    if not limit_bytes:
        return
    if device.type != "cuda":
        notes.append(f"memory.vram_limit ignored: no CUDA device (running on {device.type})")
        return
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, limit_bytes / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    notes.append(f"VRAM capped at {limit_bytes / 1e9:.1f} GB ({fraction:.0%} of {total / 1e9:.1f} GB)")


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
