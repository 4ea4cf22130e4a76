"""The component catalog: every task, model, loss and optimizer a spec may name.

Entries live as JSON in ``schemas/components/*.json`` (one file per family) and
in third-party packages through the ``specrun.components`` entry-point group
(an entry point resolves to a list of entry dicts). Loading the catalog never
imports torch: ``impl`` is a lazy ``"module:function"`` path that only
``specrun run`` imports.

An entry::

    {"kind": "task", "name": "sha256_trace",
     "summary": "one line for `specrun plan` and error hints",
     "impl": "specrun.components.sha256.task:build_task",
     "metrics": ["bit_accuracy", "accuracy"],          # tasks and models: the metrics they report
     "fsdp": true,                                     # optimizers: works on FSDP's sharded parameters
     "aliases": ["other_name"],                        # more names for the same component
     "params": {"type": "object", "additionalProperties": false,
                "properties": {"rounds": {"type": "integer", "minimum": 1, "default": 8}}}}

Besides JSON Schema's own types, parameter schemas may use the spec types
``bytes`` (10GB), ``duration`` (30s), ``span`` (500 steps, 3 epochs, 5%),
``range`` (3..16) and ``gate`` (an expression after ``when``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import import_module

from specrun.resources import resource_dir

KINDS = ("task", "model", "loss", "optimizer")


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    impl: str
    params: dict
    summary: str = ""
    metrics: tuple[str, ...] = ()
    source: str = ""
    extra: dict = field(default_factory=dict)

    def load(self):
        """Import the implementation (torch and all). Only ``run`` calls this."""
        module_name, _, attr = self.impl.partition(":")
        try:
            module = import_module(module_name)
        except ImportError as exc:
            raise ComponentUnavailable(
                f"{self.kind} '{self.name}' cannot be loaded: {exc}"
            ) from exc
        try:
            return getattr(module, attr)
        except AttributeError:
            raise ComponentUnavailable(
                f"{self.kind} '{self.name}': {module_name} has no '{attr}'"
            ) from None


class ComponentUnavailable(RuntimeError):
    """The catalog names a component whose implementation cannot be imported."""


def _entry(raw: dict, source: str) -> Component:
    known = {"kind", "name", "impl", "params", "summary", "metrics"}
    return Component(
        kind=raw["kind"],
        name=raw["name"],
        impl=raw["impl"],
        params=raw.get("params", {"type": "object", "additionalProperties": False}),
        summary=raw.get("summary", ""),
        metrics=tuple(raw.get("metrics", ())),
        source=source,
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _builtin_entries() -> list[Component]:
    entries = []
    for path in sorted(resource_dir("schemas", "components").glob("*.json")):
        for raw in json.loads(path.read_text(encoding="utf-8")):
            entries.append(_entry(raw, path.name))
    return entries


def _may_have_plugins() -> bool:
    """Whether an installed distribution may declare ``specrun.components`` entry points.

    A look at the entry_points.txt files on sys.path, without importing importlib.metadata
    (which costs about as much as the rest of `specrun validate`). False only when
    none mentions the group; the real scan below decides everything else.
    """
    import os
    import sys

    for folder in sys.path:
        folder = folder or "."
        try:
            names = os.listdir(folder)
        except OSError:  # a missing folder, or a zip: importlib.metadata looks into zips
            if os.path.isfile(folder):
                return True
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(folder, name, "entry_points.txt"), encoding="utf-8") as fh:
                        if "specrun.components" in fh.read():
                            return True
                except OSError:
                    continue
    return False


def _plugin_entries() -> list[Component]:
    entries = []
    if not _may_have_plugins():
        return entries
    from importlib.metadata import entry_points

    for ep in entry_points(group="specrun.components"):
        for raw in ep.load():
            entries.append(_entry(raw, f"plugin {ep.name}"))
    return entries


@lru_cache(maxsize=1)
def catalog() -> dict[tuple[str, str], Component]:
    table: dict[tuple[str, str], Component] = {}
    for comp in _builtin_entries() + _plugin_entries():
        table[(comp.kind, comp.name)] = comp
        for alias in comp.extra.get("aliases", ()):  # another name a spec may use; the plan shows comp.name
            table.setdefault((comp.kind, alias), comp)
    return table


def lookup(kind: str, name: str) -> Component | None:
    return catalog().get((kind, name))


def names(kind: str) -> list[str]:
    """Every name of ``kind`` a spec may write, aliases included."""
    return sorted(name for (k, name) in catalog() if k == kind)


def shown_names(kind: str) -> list[str]:
    """The names to list in a message: specrun's own components, then the torch classes as one
    item (the full list is `specrun components KIND`)."""
    own = sorted({c.name for (k, _), c in catalog().items() if k == kind and not c.name.startswith("torch.")})
    torch_ones = {c.name for (k, _), c in catalog().items() if k == kind and c.name.startswith("torch.")}
    if torch_ones:
        module = min(torch_ones).rpartition(".")[0]
        own.append(f"{module}.NAME ({len(torch_ones)} classes)")
    return own


# ---- the user's own code, and metrics ------------------------------------------------------

BUILTIN_METRICS = {
    "accuracy": "share of argmax(logits) equal to batch targets (-100 ignored; 0/1 targets: logits > 0)",
    "topN": "top-N accuracy, e.g. top5: the target is among the N largest logits",
    "perplexity": "exp of the cross-entropy of the logits against the targets",
}
TOP_K = __import__("re").compile(r"^top([1-9][0-9]{0,3})$")


def is_builtin_metric(name: str) -> bool:
    return name in ("accuracy", "perplexity") or bool(TOP_K.match(name))


def own_component(kind: str, reference: str, spec_path: str) -> Component:
    """A Component for ``"models.py:TinyNet"``; raises owncode.CodeProblem when it cannot be read."""
    from specrun.spec import owncode

    seen = owncode.analyse(kind, reference, spec_path)
    extra = {"code": owncode.code_of(seen.found)}
    if seen.signature is None:
        params = {"type": "object", "additionalProperties": True, "properties": {}}
        extra["unchecked"] = seen.unchecked
        summary = ""
    else:
        params = seen.signature.schema(required=kind != "model")
        summary = seen.signature.summary
        if kind == "model":
            extra["needs"] = [p.name for p in seen.signature.params if p.required]
    if kind == "task" and seen.tree is not None:
        extra["announces"] = sorted(owncode.sig.announced(seen.tree))
    if kind == "metrics" and seen.tree is not None:
        extra["returns"] = owncode.sig.returned_names(seen.tree, seen.found.name)
    return Component(kind, reference, owncode.IMPL[kind], params, summary, (), f"own code {seen.found.shown}",
                     extra)


def resolve(kind: str, name: str, spec_path: str = "") -> Component | None:
    """The component a spec names: a catalog entry, or the user's own code (may raise CodeProblem)."""
    from specrun.spec import owncode

    if owncode.is_reference(name):
        return own_component(kind, name, spec_path)
    return lookup(kind, name)


def factory(entry: dict, kind: str = "component"):
    """The factory of a plan's component entry ({"type", "impl", "params", "code"?}).

    Entries naming code (the user's, or a torch class from the signature table) get the
    code's location bound as the factory's first argument.
    """
    from functools import partial

    comp = Component(kind, entry["type"], entry["impl"], {})
    fn = comp.load()
    return partial(fn, entry["code"]) if entry.get("code") else fn
