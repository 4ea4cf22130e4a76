"""Batches as the user's data gives them (tuples or dicts) and as the engine reads them (dicts).

A tuple ``(inputs, targets)`` becomes ``{"inputs": ..., "targets": ...}`` so the
built-in losses and metrics find ``batch["targets"]``; the tuple is kept, so the
user's own model, loss and metric functions get back the shape they wrote for.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

TENSOR_OUTPUT = "_tensor_output"  # marks outputs whose forward returned a bare tensor


class TupleBatch(dict):
    """A batch the data gave as a tuple: the last item is the target, the others are inputs."""

    def __init__(self, items):
        items = tuple(items)
        if len(items) == 1:
            named = {"inputs": items[0]}
        else:
            named = {"inputs": items[0], **{f"inputs_{i}": x for i, x in enumerate(items[1:-1], 1)},
                     "targets": items[-1]}
        super().__init__(named)
        self.parts = items

    def inputs(self) -> tuple:
        return self.parts[:-1] if len(self.parts) > 1 else self.parts


def to_device(value, device, non_blocking: bool):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    return value


def as_batch(collated, device, non_blocking: bool = False) -> dict:
    """What the DataLoader collated -> a dict batch on ``device``."""
    if isinstance(collated, torch.Tensor):
        return {"inputs": collated.to(device, non_blocking=non_blocking)}
    if isinstance(collated, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in collated.items()}
    if isinstance(collated, (tuple, list)):
        return TupleBatch(to_device(v, device, non_blocking) for v in collated)
    raise TypeError(f"a batch must be a tensor, a tuple or a dict; the data gave {type(collated).__name__}")


def for_user(batch):
    """The batch in the shape the user's data gave it."""
    return batch.parts if isinstance(batch, TupleBatch) else batch


def describe(value) -> str:
    """``inputs float32[16, 8], targets int64[16]``: what a batch or an output holds."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).replace('torch.', '')}{list(value.shape)}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {describe(v)}" for k, v in value.items() if not str(k).startswith("_"))
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    return type(value).__name__


def outputs_for_user(outputs: dict):
    """The outputs in the shape the user's forward returned them."""
    if outputs.get(TENSOR_OUTPUT):
        return outputs["logits"]
    return outputs


def call_on(what: str, base: str | None, fn, outputs: dict, batch, params: dict):
    """``fn(outputs, batch, **params)`` for the user's loss or metric function, both in the shapes
    their code made them; a failure names the shapes it was given."""
    from specrun.components.api import ComponentError
    from specrun.components.own import loader

    try:
        return fn(outputs_for_user(outputs), for_user(batch), **params)
    except ComponentError:
        raise
    except Exception as exc:
        raise loader.failure(f"{what} failed on outputs {describe(outputs)} and a batch of {describe(batch)}",
                             exc, base) from exc
