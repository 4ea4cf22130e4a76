"""Optimizers: any torch.optim class by name, or the user's own.

``optimizer torch.optim.RAdam { lr 1e-3 }`` (or ``optimizer RAdam``): settings
checked before the run against the signature table in
``schemas/components/torch.json``; lists become tuples (``betas [0.9, 0.99]``).

``optimizer "opt.py:MyOpt" { lr 0.1 }``: a class is built as ``MyOpt(params,
lr=0.1)`` with the trainable parameters; a function gets the model when its first
parameter is named ``model``, else the trainable parameters.
"""

from __future__ import annotations

import inspect

import torch

from specrun.components.api import ComponentError, Context
from specrun.components.own import loader


def _trainable(model: torch.nn.Module) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def build_torch_optimizer(code: dict, params: dict, model: torch.nn.Module, ctx: Context):
    cls = getattr(torch.optim, code["name"])
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return loader.call(f"optimizer {code['reference']}", None, cls, _trainable(model), **kwargs)


def build_optimizer(code: dict, params: dict, model: torch.nn.Module, ctx: Context):
    what = f"optimizer {code['reference']}"
    fn = loader.import_code(code, what)
    loader.check_settings(what, fn, params, skip=1)  # the parameters (or the model) come first
    if inspect.isclass(fn):
        made = loader.call(f"{what}: building it failed", code.get("base"), fn, _trainable(model), **params)
    else:
        first = next(iter(inspect.signature(fn).parameters), "")
        given = model if first == "model" else _trainable(model)
        made = loader.call(f"{what}: building it failed", code.get("base"), fn, given, **params)
    if not isinstance(made, torch.optim.Optimizer):
        raise ComponentError(f"{what} gave {type(made).__name__}, not a torch.optim.Optimizer")
    return made
