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
    return sorted(name for (k, name) in catalog() if k == kind)
