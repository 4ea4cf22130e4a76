"""The user's nn.Module as a specrun model.

Built with the spec's settings plus what the data announces for the
constructor parameters the spec leaves out (``vocab_size``, ``num_classes``).
Its ``forward`` is called the way PyTorch code is written: ``forward(x)`` for a
batch given as ``(x, y)``; ``forward(input_ids=..., attention_mask=...)`` when
the batch is a dict holding the names forward takes; else ``forward(batch)``.
A tensor it returns is the logits; a dict (or a Hugging Face ModelOutput) is
kept as it is; a tuple's first item is the logits.

The wrapper's state_dict is the user module's own: a checkpoint's ``model``
loads into their class with ``load_state_dict``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import nn

from specrun.components.api import ComponentError, Context
from specrun.components.own import loader
from specrun.components.own.batches import TENSOR_OUTPUT, TupleBatch, describe


class OwnModel(nn.Module):
    def __init__(self, inner: nn.Module, reference: str, base: str | None):
        super().__init__()
        self.inner = inner
        self.reference, self.base = reference, base
        try:
            params = inspect.signature(inner.forward).parameters.values()
        except (TypeError, ValueError):
            params = []
        self._forward_names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self._forward_needs = [p.name for p in params if p.default is p.empty
                               and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for hook in ("set_params", "set_switch"):  # curriculum phases and gates reach the user's module
            if callable(getattr(inner, hook, None)):
                setattr(self, hook, getattr(inner, hook))
        if callable(getattr(inner, "gradient_checkpointing_enable", None)):  # Hugging Face models
            self.supports_gradient_checkpointing = True

    def set_gradient_checkpointing(self, on: bool) -> None:
        if on:
            self.inner.gradient_checkpointing_enable()

    def _call(self, batch):
        if isinstance(batch, TupleBatch):
            return self.inner(*batch.inputs())
        if isinstance(batch, Mapping):
            named = [n for n in self._forward_names if n in batch]
            if named and all(n in batch for n in self._forward_needs):
                return self.inner(**{n: batch[n] for n in named})
            if "inputs" in batch and len(self._forward_needs) <= 1:
                return self.inner(batch["inputs"])
        return self.inner(batch)

    def forward(self, batch):
        try:
            out = self._call(batch)
        except ComponentError:
            raise
        except Exception as exc:
            raise loader.failure(f"model {self.reference}: forward failed on a batch of {describe(batch)}",
                                 exc, self.base) from exc
        return as_outputs(out, self.reference)

    # A checkpoint holds the user's module as they built it: no "inner." in its keys.
    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.inner.load_state_dict(state_dict, strict=strict, assign=assign)


def as_outputs(out, reference: str) -> dict:
    if isinstance(out, torch.Tensor):
        return {"logits": out, TENSOR_OUTPUT: True}
    if isinstance(out, Mapping):
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return {"logits": out[0]}
    raise ComponentError(f"model {reference}: forward returned {type(out).__name__}; return a tensor "
                         "(the logits) or a dict of tensors")


def build_model(code: dict, params: dict, info: dict, ctx: Context) -> nn.Module:
    what = f"model {code['reference']}"
    cls = loader.import_code(code, what)
    if not callable(cls):
        raise ComponentError(f"{what} is a {type(cls).__name__}, not a class or function")
    kwargs = dict(params)
    try:
        takes = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        takes = {}
    for name, p in takes.items():
        if name not in kwargs and name in info and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            kwargs[name] = info[name]  # a shape the data announces: vocab_size, num_classes
    try:
        loader.check_settings(what, cls, kwargs)
    except ComponentError as exc:
        if "needs the setting" in str(exc):
            name = str(exc).rsplit("'", 2)[-2]
            raise ComponentError(f"{exc}: set `{name} VALUE` in the model block, or announce it from the "
                                 f"data (a `model_info` dict, or an attribute `{name}` of the training set)") from None
        raise
    module = loader.call(f"{what}: building it failed", code.get("base"), cls, **kwargs)
    if not isinstance(module, nn.Module):
        raise ComponentError(f"{what} built a {type(module).__name__}, not a torch.nn.Module")
    return OwnModel(module, code["reference"], code.get("base"))
