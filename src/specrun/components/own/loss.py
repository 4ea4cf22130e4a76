"""Losses: the user's own function of (outputs, batch), or any torch.nn loss by name.

``loss "losses.py:focal" { gamma 2.0 }`` calls ``focal(outputs, batch, gamma=2.0)``
with the outputs and batch in the shapes the user's code made them (a tensor
and a tuple, when that is what forward and the data give). A class is built
with the settings and called the same way.

``loss torch.nn.SmoothL1Loss { beta 0.5 }`` (or ``loss SmoothL1Loss``) builds
the torch class and calls it on ``outputs["logits"]`` and ``batch["targets"]``;
its settings are checked before the run against the signature table shipped in
``schemas/components/torch.json``.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from specrun.components.api import ComponentError, Context
from specrun.components.own import loader
from specrun.components.own.batches import call_on, describe


def _scalar(value, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ComponentError(f"{what} returned {type(value).__name__}; a loss is a scalar tensor")
    if value.dim() != 0:
        raise ComponentError(f"{what} returned a tensor of shape {list(value.shape)}; a loss is a scalar "
                             "(reduce it with .mean())")
    return value


def build_loss(code: dict, params: dict, ctx: Context):
    what = f"loss {code['reference']}"
    fn = loader.import_code(code, what)
    base = code.get("base")
    if inspect.isclass(fn):
        loader.check_settings(what, fn, params)
        fn = loader.call(f"{what}: building it failed", base, fn, **params)
        params = {}
    else:
        loader.check_settings(what, fn, params, skip=2)

    def own_loss(outputs: dict, batch: dict) -> torch.Tensor:
        return _scalar(call_on(what, base, fn, outputs, batch, params), what)

    return own_loss


def build_torch_loss(code: dict, params: dict, ctx: Context):
    """A torch.nn loss class from the signature table."""
    cls = getattr(nn, code["name"])
    what = f"loss {code['reference']}"
    kwargs = {k: torch.tensor(v, dtype=torch.float32, device=ctx.device) if isinstance(v, list) else v
              for k, v in params.items()}
    criterion = loader.call(f"{what}: building it failed", None, cls, **kwargs)
    class_targets = code.get("targets") == "class"

    def torch_loss(outputs: dict, batch: dict) -> torch.Tensor:
        logits = outputs["logits"]
        target = batch.get("targets")
        if target is None:
            raise ComponentError(f"{what} compares outputs with batch['targets'], and the batch has none "
                                 f"({describe(batch)}): give batches as (inputs, targets) or with a 'targets' key")
        if not class_targets:
            if not target.is_floating_point():
                target = target.to(logits.dtype)  # a regression or 0/1 target given as integers
            if target.shape != logits.shape and target.numel() == logits.numel():
                target = target.view_as(logits)  # [B] targets for [B, 1] outputs: not a broadcast
        try:
            value = criterion(logits.float() if class_targets else logits, target)
        except Exception as exc:
            raise ComponentError(f"{what} failed on logits {describe(logits)} and targets {describe(target)}: "
                                 f"{str(exc).splitlines()[0]}") from exc
        return value.mean() if value.dim() else value

    return torch_loss


def explained(loss_fn, name: str):
    """A built-in loss that says, rather than raises, when the user's data does not fit it."""

    def checked(outputs: dict, batch: dict) -> torch.Tensor:
        try:
            return loss_fn(outputs, batch)
        except ComponentError:
            raise
        except (KeyError, RuntimeError, ValueError, IndexError, TypeError) as exc:
            detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise ComponentError(f"loss {name} failed on outputs {describe(outputs)} and a batch of "
                                 f"{describe(batch)}: {detail}") from exc

    return checked
