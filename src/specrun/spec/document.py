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

from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic, source_lines
from specrun.spec.values import Gate, plain

Path = tuple

COLLECTIONS = {"phase": "phases", "axis": "axes"}
# `validate` checks the file with each profile applied: the work is profiles x file size,
# so their number is bounded (a handful is usual: smoke, full, ablations).
MAX_PROFILES = 100
COMPONENT_KEYS = {"task", "model", "loss", "optimizer", "schedule", "precision", "metrics"}
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
    value_spans: dict = field(default_factory=dict)  # path -> Span of the written value
    profiles: dict = field(default_factory=dict)  # name -> Profile
    diagnostics: list = field(default_factory=list)
    path: str = "<string>"
    source: str = ""  # the text of ``path``, to quote a value as it was written
    profiles_dropped: int = 0  # past MAX_PROFILES (an error)

    def variant(self) -> "Located":
        """A copy to apply a profile to: what ``locate`` would give again, without locating again
        (which would rebuild every profile too: quadratic in their number)."""
        import copy

        return Located(copy.deepcopy(self.data), dict(self.spans), dict(self.key_spans), dict(self.value_spans),
                       dict(self.profiles), list(self.diagnostics), self.path, self.source, self.profiles_dropped)

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
        return self.top_span()

    def top_span(self) -> s.Span:
        """Where a spec-wide problem points: its `spec NAME` line, else its first setting."""
        if ("spec",) in self.key_spans:
            return self.key_spans[("spec",)]
        firsts = [sp for sp in self.key_spans.values() if sp.path == self.path]
        return min(firsts, key=lambda sp: (sp.line, sp.col)) if firsts else s.Span(self.path, 1, 1, 1, 1)

    def value_span(self, path: Path) -> s.Span:
        """The span of the value written at ``path`` (``1e-4`` in ``lr 1e-4``), else ``span(path)``."""
        return self.value_spans.get(tuple(path)) or self.span(path)

    def written(self, path: Path) -> str | None:
        """The value at ``path`` as the file spells it (one line of this file only), else None."""
        span = self.value_spans.get(tuple(path))
        if span is None or span.path != self.path or span.line != span.end_line or not self.source:
            return None
        lines = source_lines(self.source)
        if not 1 <= span.line <= len(lines):
            return None
        text = lines[span.line - 1][span.col - 1: span.end_col - 1]
        return text if 0 < len(text) <= 60 else None


def expect_entry(item: s.Expect) -> dict:
    """``expect`` as data; the defaults (at end, fail) are left out, so a spec that never
    names them keeps its identity (its hash)."""
    entry = {"expr": Gate(item.expr)}
    if item.by is not None:
        entry["by"] = plain(item.by)
    elif item.when == "throughout":
        entry["when"] = "throughout"
    if item.severity == "warn":
        entry["severity"] = "warn"
    return entry


def locate(doc: s.Document) -> Located:
    loc = Located({}, path=doc.path, source=doc.source)
    fill(loc, loc.data, (), doc.items, in_phase=False)
    return loc


def fill(loc: Located, target: dict, base: Path, items, in_phase: bool) -> None:
    for item in items:
        if isinstance(item, s.Expect):
            entries = _list_at(loc, target, base, "expect", item.span)
            if entries is None:
                continue
            path = base + ("expect", len(entries))
            entries.append(expect_entry(item))
            loc.spans[path] = item.span
            loc.key_spans[path] = item.span
            loc.value_spans[path + ("expr",)] = item.expr.span
            if item.by is not None:
                loc.value_spans[path + ("by",)] = item.by.span
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
        # Work out the setting's meaning aside, so a rejected duplicate leaves no spans behind.
        written = Located({}, path=loc.path)
        value = _meaning(written, base + key, item)
        if value is not None and assign(loc, target, base, key, value, item.span, item.key_span,
                                        written=written):
            loc.spans.update(written.spans)
            loc.key_spans.update(written.key_spans)
            loc.value_spans.update(written.value_spans)
            loc.profiles.update(written.profiles)
        loc.diagnostics += written.diagnostics


def _list_at(loc: Located, target: dict, base: Path, key: str, span: s.Span):
    """The list ``target[key]`` (created if absent), or None with a diagnostic if it holds a value."""
    entries = target.setdefault(key, [])
    if isinstance(entries, list):
        return entries
    loc.diagnostics.append(Diagnostic(
        "E201", f"'{'.'.join(map(str, base + (key,)))}' holds a value, not a list of entries", span,
        f"it was set at {loc.span(base + (key,))}"))
    return None


def _meaning(loc: Located, path: Path, item: s.Setting):
    """What one setting means, recursing into its block."""
    if item.gate is not None:
        loc.value_spans[path] = item.gate.span
        return Gate(item.gate)
    if item.block is not None:
        inner: dict = {}
        if item.value is not None:
            inner["type"] = plain(item.value)
            loc.spans[path + ("type",)] = item.value.span
            loc.key_spans[path + ("type",)] = item.value.span
            loc.value_spans[path + ("type",)] = item.value.span
        fill(loc, inner, path, item.block.items, in_phase=False)
        return inner
    if item.value is None:
        loc.diagnostics.append(Diagnostic(
            "E108", f"setting '{item.dotted}' has no value", item.span,
            f"write `{item.dotted} VALUE`, `{item.dotted} {{ ... }}` or `{item.dotted} when EXPR`"))
        return None
    if path[-1] in COMPONENT_KEYS and isinstance(item.value, (s.Name, s.String)):
        # `model mlp`, or the user's own code: `model "models.py:TinyNet"`
        loc.spans[path + ("type",)] = item.value.span
        loc.value_spans[path + ("type",)] = item.value.span
        return {"type": plain(item.value)}
    loc.value_spans[path] = item.value.span
    _index_list(loc, path, item.value)
    return plain(item.value)


def _index_list(loc: Located, path: Path, value) -> None:
    if isinstance(value, s.List):
        for i, v in enumerate(value.items):
            loc.spans[path + (i,)] = v.span
            loc.key_spans[path + (i,)] = v.span
            loc.value_spans[path + (i,)] = v.span
            _index_list(loc, path + (i,), v)


def _add_entry(loc: Located, target: dict, base: Path, item: s.Setting) -> None:
    coll = COLLECTIONS[item.key[0]]
    entries = _list_at(loc, target, base, coll, item.span)
    if entries is None:
        return
    path = base + (coll, len(entries))
    entry = {"name": item.value.dotted}
    loc.spans[path] = item.span
    loc.key_spans[path] = item.value.span
    loc.spans[path + ("name",)] = item.value.span
    loc.key_spans[path + ("name",)] = item.value.span
    loc.value_spans[path + ("name",)] = item.value.span
    entries.append(entry)
    fill(loc, entry, path, item.block.items, in_phase=item.key[0] == "phase")


def _add_profile(loc: Located, item: s.Setting) -> None:
    name = item.value.dotted
    if name in loc.profiles:
        first = loc.profiles[name].span
        loc.diagnostics.append(Diagnostic(
            "E205", f"profile '{name}' is defined twice (first at line {first.line})", item.value.span))
        return
    if len(loc.profiles) >= MAX_PROFILES:
        loc.profiles_dropped += 1
        if loc.profiles_dropped == 1:  # said once, at the first one over
            loc.diagnostics.append(Diagnostic(
                "E106", f"more than {MAX_PROFILES} profiles: each one is checked against the whole file",
                item.value.span, "keep the profiles people run; variations of one setting can go in --set"))
        return
    loc.profiles[name] = Profile(name, item.block.items, item.span)


def assign(loc: Located, target: dict, base: Path, key: Path, value, span: s.Span,
           key_span: s.Span, override: bool = False, written: Located | None = None) -> bool:
    """Set ``target[key...] = value``, creating intermediate dicts, recording spans.

    Returns False (with a diagnostic) when the key is already set, unless ``override``.
    Two blocks for one key merge (``model x { ... }`` then ``model.width 64``); a
    setting both of them write is still a duplicate. ``written`` holds the spans of
    the new value, to point at the second of two clashing settings.
    """
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
            return False
        node = sub
    last = key[-1]
    path = base + key
    if last in node and not override:
        if isinstance(node[last], dict) and isinstance(value, dict):
            clashes = list(_clashes(node[last], value, path))
            if not clashes:
                merge(node[last], value)
                loc.key_spans.setdefault(path, key_span)
                return True
            for clash in clashes:
                shown = clash[len(base):]
                shown = shown[:-1] if shown[-1] == "type" and len(shown) > 1 else shown
                where = written.span(clash, key=True) if written is not None else key_span
                loc.diagnostics.append(Diagnostic(
                    "E205", f"'{_dotted(shown)}' is set twice (first at line {loc.span(clash).line})",
                    where, "remove one of them"))
            return False
        first = loc.span(path)
        loc.diagnostics.append(Diagnostic(
            "E205", f"'{_dotted(key)}' is set twice (first at line {first.line})",
            key_span, "remove one of them"))
        return False
    node[last] = value
    loc.spans[path] = span
    loc.key_spans[path] = key_span
    return True


def _dotted(key: Path) -> str:
    """A key as the user wrote it (inside a phase, ``task.rounds`` is stored under ``set``)."""
    key = key[1:] if len(key) > 1 and key[0] == "set" else key
    return ".".join(str(p) for p in key if not isinstance(p, int))


def _clashes(old: dict, new: dict, path: Path):
    """Paths that both ``old`` and ``new`` set (blocks merge; values and lists clash)."""
    for k, v in new.items():
        if k in old:
            if isinstance(v, dict) and isinstance(old[k], dict):
                yield from _clashes(old[k], v, path + (k,))
            else:
                yield path + (k,)


def merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = v
