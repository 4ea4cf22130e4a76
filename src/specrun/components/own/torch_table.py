"""The signature table of torch.optim optimizers and torch.nn losses, as catalog entries.

``validate`` checks ``optimizer torch.optim.RAdam { lr 1e-3 }`` without importing
torch, against ``schemas/components/torch.json``: this module writes that file
from the installed torch, and a test fails when the two drift apart.

    python -m specrun.components.own.torch_table > schemas/components/torch.json
"""

from __future__ import annotations

import ast
import inspect
import json
import sys

import torch
from torch import nn

from specrun.spec.signature import annotation_schema

# Optimizers the engine cannot drive: LBFGS needs a closure at every step; SparseAdam
# takes sparse gradients only.
SKIP_OPTIMIZERS = {"LBFGS", "SparseAdam", "Optimizer"}
# Not elementwise: they need whole weight matrices, which FSDP does not give a rank.
NOT_FOR_SHARDS = {"Muon", "Adafactor"}
# Losses of more than (input, target), or deprecated spellings: not usable as `loss NAME`.
SKIP_LOSSES = {"CTCLoss", "CosineEmbeddingLoss", "MarginRankingLoss", "TripletMarginLoss",
               "TripletMarginWithDistanceLoss", "GaussianNLLLoss", "PoissonNLLLoss", "AdaptiveLogSoftmaxWithLoss",
               "LinearCrossEntropyLoss"}  # the last holds weights of its own, which no optimizer would train
CLASS_TARGETS = {"CrossEntropyLoss", "NLLLoss", "MultiMarginLoss", "MultiLabelMarginLoss"}
DEPRECATED = {"size_average", "reduce"}


def _annotation_text(annotation) -> str:
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("torch.", "")


def _schema(param: inspect.Parameter) -> dict:
    text = _annotation_text(param.annotation)
    try:
        schema = annotation_schema(ast.parse(text, mode="eval").body) if text else {}
    except SyntaxError:
        schema = {}
    default = param.default
    if isinstance(default, tuple):
        default = list(default)
    if default is not inspect.Parameter.empty and default is not None:
        schema["default"] = default
    if text:
        schema["description"] = text
    return schema


def _summary(cls) -> str:
    doc = inspect.getdoc(cls) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()[:200]


def _entry(kind: str, module: str, cls, skip: int, extra: dict) -> dict:
    params = list(inspect.signature(cls.__init__).parameters.values())[1 + skip:]
    props = {p.name: _schema(p) for p in params
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in DEPRECATED}
    required = [p.name for p in params if p.default is p.empty
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    schema = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        schema["required"] = required
    name = f"{module}.{cls.__name__}"
    return {"kind": kind, "name": name, "aliases": [cls.__name__], "summary": _summary(cls),
            "impl": f"specrun.components.own.{'optim:build_torch_optimizer' if kind == 'optimizer' else 'loss:build_torch_loss'}",
            "code": {"module": module, "name": cls.__name__, "reference": name, **extra},
            **({"fsdp": cls.__name__ not in NOT_FOR_SHARDS} if kind == "optimizer" else {}),
            "params": schema}


def _takes_input_and_target(cls) -> bool:
    params = list(inspect.signature(cls.forward).parameters)[1:]
    return len(params) == 2


def entries() -> list[dict]:
    out = []
    for name in sorted(torch.optim.__all__):
        cls = getattr(torch.optim, name)
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and name not in SKIP_OPTIMIZERS:
            out.append(_entry("optimizer", "torch.optim", cls, 1, {}))
    for name in sorted(dir(nn)):
        cls = getattr(nn, name)
        if isinstance(cls, type) and issubclass(cls, nn.modules.loss._Loss) and name.endswith("Loss") \
                and name not in SKIP_LOSSES and _takes_input_and_target(cls):
            out.append(_entry("loss", "torch.nn", cls, 0,
                              {"targets": "class" if name in CLASS_TARGETS else "values"}))
    return out


def render() -> str:
    return json.dumps(entries(), indent=1) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
