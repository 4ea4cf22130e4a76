"""Metrics a spec asks for by name (accuracy, topN, perplexity) or as the user's own function.

``metrics [accuracy, top5, "scores.py:f1"]``; a function is called as
``fn(outputs, batch, **settings)`` and returns a dict of scalars (tensors or
numbers) under the names the spec declares (``names [...]``, or the keys of the
dict literal it returns). Values stay on the device: the engine syncs them once
per step with everything else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from specrun.components.api import ComponentError, Context
from specrun.components.own import loader
from specrun.components.own.batches import call_on
from specrun.spec.catalog import TOP_K


def accuracy(outputs: dict, batch: dict) -> torch.Tensor:
    logits, targets = outputs["logits"], batch["targets"]
    if targets.is_floating_point() and logits.shape == targets.shape:  # 0/1 targets, one logit each
        return ((logits > 0) == (targets > 0.5)).float().mean()
    keep = targets != -100
    hits = (logits.argmax(-1) == targets) & keep
    return hits.sum().float() / keep.sum().clamp(min=1)


def top_k(k: int):
    def top(outputs: dict, batch: dict) -> torch.Tensor:
        logits, targets = outputs["logits"], batch["targets"]
        best = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
        keep = targets != -100
        hits = (best == targets.unsqueeze(-1)).any(-1) & keep
        return hits.sum().float() / keep.sum().clamp(min=1)

    return top


def perplexity(outputs: dict, batch: dict) -> torch.Tensor:
    logits, targets = outputs["logits"], batch["targets"]
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=-100)
    return torch.exp(ce.clamp(max=50.0))  # exp(50): a model this lost is lost; inf would poison means


def builtin(name: str):
    if name == "accuracy":
        return accuracy
    if name == "perplexity":
        return perplexity
    return top_k(int(TOP_K.match(name).group(1)))


def _own(entry: dict, device):
    code, names, params = entry["code"], list(entry["names"]), entry.get("params", {})
    what = f"metrics {code['reference']}"
    fn = loader.import_code(code, what)
    loader.check_settings(what, fn, params, skip=2)
    base = code.get("base")

    def own(outputs: dict, batch: dict) -> dict:
        got = call_on(what, base, fn, outputs, batch, params)
        if not isinstance(got, dict):
            if len(names) != 1:
                raise ComponentError(f"{what} returned {type(got).__name__}; return a dict with {', '.join(names)}")
            got = {names[0]: got}
        missing, extra = [n for n in names if n not in got], [k for k in got if k not in names]
        if missing or extra:
            raise ComponentError(f"{what} returned {sorted(got)}; the spec declares {names}"
                                 + (f" (missing {', '.join(missing)})" if missing else "")
                                 + (f" (not declared: {', '.join(map(str, extra))})" if extra else ""))
        return {n: _scalar(got[n], f"{what}: '{n}'", device) for n in names}

    return own


def _scalar(value, what: str, device) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ComponentError(f"{what} is a tensor of shape {list(value.shape)}; a metric is one number")
        return value.detach().float().reshape(())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value), device=device)
    raise ComponentError(f"{what} is {type(value).__name__}; a metric is a number or a one-element tensor")


class Metrics:
    """Every metric the spec's `metrics` names, as one function of (outputs, batch)."""

    def __init__(self, params: dict, ctx: Context):
        self.parts = []
        names = []
        for entry in params["entries"]:
            if "code" in entry:
                self.parts.append(_own(entry, ctx.device))
                names += entry["names"]
            else:
                fn = builtin(entry["name"])
                self.parts.append(lambda o, b, fn=fn, n=entry["name"]: {n: fn(o, b)})
                names.append(entry["name"])
        self.names = tuple(dict.fromkeys(names))

    def __call__(self, outputs: dict, batch: dict) -> dict:
        out = {}
        for part in self.parts:
            out.update(part(outputs, batch))
        return out


class WithMetrics:
    """A task whose metrics are its own plus the spec's `metrics`."""

    def __init__(self, task, metrics: Metrics):
        self._task, self._metrics = task, metrics
        self.metric_names = tuple(dict.fromkeys(tuple(getattr(task, "metric_names", ())) + metrics.names))

    def __getattr__(self, name):
        return getattr(self._task, name)

    def metrics(self, outputs: dict, batch: dict) -> dict:
        out = dict(self._task.metrics(outputs, batch))
        out.update(self._metrics(outputs, batch))
        return out


def build_metrics(params: dict, ctx: Context) -> Metrics:
    return Metrics(params, ctx)
