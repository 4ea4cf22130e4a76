"""Syntax tree -> nested plain data, with every path's source span kept aside.

The checker validates plain data (JSON Schema wants dicts and lists); the span
index lets each schema error point back at the line that caused it. Overrides
(profiles, ``--set``) are applied to this data and record their own spans, so
an error in an override points at the override.

Shapes:

- ``key value``                 -> ``{"key": value}``
- ``key { ... }``               -> ``{"key": {...}}``
- ``task sha256_trace { ... }`` -> ``{"task": {"type": "sha256_trace", ...}}``
- ``phase r8 { ... }``          -> an entry ``{"name": "r8", ...}`` of ``phases``
  (likewise ``axis`` -> ``axes``); in a phase, ``task.rounds 8`` lands under
  ``set`` because it is what the phase applies, not a setting of the phase.
- ``key when expr``             -> ``{"key": Gate(expr)}``
- ``expect e by 100 steps``     -> an entry ``{"expr": Gate(e), "by": Qty}`` of ``expect``
- ``profile smoke { ... }``     -> kept as statements in ``profiles`` (applied on request)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from specrun import syntax as s
from specrun.diagnostics import Diagnostic
from specrun.values import Gate, plain

Path = tuple

COLLECTIONS = {"phase": "phases", "axis": "axes"}
COMPONENT_KEYS = {"task", "model", "loss", "optimizer", "schedule", "precision"}
PHASE_TARGETS = {"task", "model", "optimizer", "loss"}


@dataclass
class Profile:
    name: str
    statements: tuple[s.Statement, ...]
    span: s.Span


@dataclass
class Located:
    """Plain spec data plus where each path was written."""

    data: dict
    spans: dict = field(default_factory=dict)  # path -> Span of the setting (or list item)
    key_spans: dict = field(default_factory=dict)  # path -> Span of the key
    profiles: dict = field(default_factory=dict)  # name -> Profile
    diagnostics: list = field(default_factory=list)
    path: str = "<string>"

    def span(self, path: Path, key: bool = False) -> s.Span:
        """The span of ``path`` or of its nearest written ancestor."""
        table = self.key_spans if key else self.spans
        path = tuple(path)
        while path:
            if path in table:
                return table[path]
            if not key and path in self.key_spans:
                return self.key_spans[path]
            path = path[:-1]
        return s.Span(self.path, 1, 1, 1, 1)


def locate(doc: s.Document) -> Located:
    loc = Located({}, path=doc.path)
    fill(loc, loc.data, (), doc.items, in_phase=False)
    return loc


def fill(loc: Located, target: dict, base: Path, items, in_phase: bool) -> None:
    for item in items:
        if isinstance(item, s.Expect):
            entries = target.setdefault("expect", [])
            path = base + ("expect", len(entries))
            entries.append({"expr": Gate(item.expr), **({"by": plain(item.by)} if item.by else {})})
            loc.spans[path] = item.span
            loc.key_spans[path] = item.span
            continue
        key = item.key
        if in_phase and key[0] in PHASE_TARGETS:
            key = ("set",) + key
        if key == ("profile",) and base == () and isinstance(item.value, s.Name) and item.block:
            _add_profile(loc, item)
            continue
        if len(key) == 1 and key[0] in COLLECTIONS and isinstance(item.value, s.Name) and item.block:
            _add_entry(loc, target, base, item)
            continue
        value = _meaning(loc, base + key, item)
        if value is not None:
            assign(loc, target, base, key, value, item.span, item.key_span)


def _meaning(loc: Located, path: Path, item: s.Setting):
    """What one setting means, recursing into its block."""
    if item.gate is not None:
        return Gate(item.gate)
    if item.block is not None:
        inner: dict = {}
        if item.value is not None:
            inner["type"] = plain(item.value)
            loc.spans[path + ("type",)] = item.value.span
            loc.key_spans[path + ("type",)] = item.value.span
        fill(loc, inner, path, item.block.items, in_phase=False)
        return inner
    if item.value is None:
        loc.diagnostics.append(Diagnostic(
            "E108", f"setting '{item.dotted}' has no value", item.span,
            f"write `{item.dotted} VALUE`, `{item.dotted} {{ ... }}` or `{item.dotted} when EXPR`"))
        return None
    if path[-1] in COMPONENT_KEYS and isinstance(item.value, s.Name):
        loc.spans[path + ("type",)] = item.value.span
        return {"type": item.value.dotted}
    _index_list(loc, path, item.value)
    return plain(item.value)


def _index_list(loc: Located, path: Path, value) -> None:
    if isinstance(value, s.List):
        for i, v in enumerate(value.items):
            loc.spans[path + (i,)] = v.span
            loc.key_spans[path + (i,)] = v.span
            _index_list(loc, path + (i,), v)


def _add_entry(loc: Located, target: dict, base: Path, item: s.Setting) -> None:
    coll = COLLECTIONS[item.key[0]]
    entries = target.setdefault(coll, [])
    path = base + (coll, len(entries))
    entry = {"name": item.value.dotted}
    loc.spans[path] = item.span
    loc.key_spans[path] = item.value.span
    loc.spans[path + ("name",)] = item.value.span
    loc.key_spans[path + ("name",)] = item.value.span
    entries.append(entry)
    fill(loc, entry, path, item.block.items, in_phase=item.key[0] == "phase")


def _add_profile(loc: Located, item: s.Setting) -> None:
    name = item.value.dotted
    if name in loc.profiles:
        first = loc.profiles[name].span
        loc.diagnostics.append(Diagnostic(
            "E205", f"profile '{name}' is defined twice (first at line {first.line})", item.value.span))
        return
    loc.profiles[name] = Profile(name, item.block.items, item.span)


def assign(loc: Located, target: dict, base: Path, key: Path, value, span: s.Span,
           key_span: s.Span, override: bool = False) -> None:
    """Set ``target[key...] = value``, creating intermediate dicts, recording spans."""
    node = target
    for i, part in enumerate(key[:-1]):
        sub = node.get(part)
        if sub is None:
            sub = node[part] = {}
            loc.key_spans.setdefault(base + key[: i + 1], key_span)
        elif not isinstance(sub, dict):
            loc.diagnostics.append(Diagnostic(
                "E201", f"'{'.'.join(map(str, key[: i + 1]))}' holds a value, not settings",
                key_span, f"it was set at {loc.span(base + key[: i + 1])}"))
            return
        node = sub
    last = key[-1]
    path = base + key
    if last in node and not override:
        if isinstance(node[last], dict) and isinstance(value, dict):
            merge(node[last], value)  # `model x { ... }` then `model.width 64`
        else:
            first = loc.span(path)
            loc.diagnostics.append(Diagnostic(
                "E205", f"'{'.'.join(map(str, key))}' is set twice (first at line {first.line})",
                key_span, "remove one of them"))
            return
    else:
        node[last] = value
    loc.spans[path] = span
    loc.key_spans[path] = key_span


def merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
