"""check: syntax tree -> Spec, or every problem at once with its location.

Order: overrides (profile, then ``--set``) are applied to the located data
first, so they are checked exactly like the file and errors point at them;
then the JSON Schema (``schemas/spec.schema.json``); then each component's
parameters against its catalog entry; then semantic rules the schema cannot
say (names in gate expressions, duplicate phases, settings that contradict
each other). Nothing here imports torch.

Each part is its own module: overrides.py applies profiles and --set, schema.py
holds the schema and its validators, messages.py words their errors, rules.py and
gates.py are the semantic rules. This module runs them in order.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field

from specrun.spec import owncode
from specrun.spec import sweep
from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic, SpecError, did_you_mean
from specrun.spec.document import Located, locate
from specrun.spec.messages import schema_diagnostics
from specrun.spec.overrides import apply_overrides, parse_set, precision_follows
from specrun.spec.parse import parse, read_source
from specrun.spec.gates import known_metrics
from specrun.spec.rules import component_diagnostics, semantic_diagnostics
from specrun.spec.schema import spec_schema
from specrun.spec.values import canonical_json


@dataclass
class Spec:
    """A checked spec: plain data that satisfies the schema and every rule."""

    name: str
    data: dict
    located: Located
    path: str
    profile: str | None = None
    overrides: tuple[str, ...] = ()
    sources: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)  # W-code Diagnostics: settings that never take effect
    follows: dict = field(default_factory=dict)  # setting -> why it changed with an override

    @property
    def hash(self) -> str:
        """The experiment's identity. `checkpoint.resume`, `checkpoint.async` and `sweep` are left
        out: where a run starts from, whether its checkpoints are written in the background, or
        how others around it are searched, is not what it is."""
        data = {k: v for k, v in self.data.items() if k != "sweep"}  # how to search is not what a run is
        if isinstance(data.get("checkpoint"), dict):
            data["checkpoint"] = {k: v for k, v in data["checkpoint"].items() if k not in ("resume", "async")}
            if not data["checkpoint"]:  # `--set checkpoint.resume=latest` on a spec without the block
                del data["checkpoint"]
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]


# ---- entry points ---------------------------------------------------------------------------------

def _diagnose(loc: Located) -> list[Diagnostic]:
    data = loc.data
    out = list(loc.diagnostics)
    out += schema_diagnostics(loc, data, spec_schema(), (), "the spec")
    out += component_diagnostics(loc, data)
    out += semantic_diagnostics(loc, data)
    if isinstance(data.get("sweep"), dict):
        out += _sweep_diagnostics(loc, data)
    return _dedupe(out)


def _sweep_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """The sweep block (spec/sweep.py), each choice checked as the --set it becomes."""

    def without_sweep() -> Located:
        return Located(copy.deepcopy({k: v for k, v in data.items() if k != "sweep"}), dict(loc.spans),
                       dict(loc.key_spans), dict(loc.value_spans), loc.profiles, [], loc.path, loc.source)

    base = {(d.code, d.span, d.message) for d in _diagnose(without_sweep())}

    def try_set(setting: s.Setting) -> list[Diagnostic]:
        variant = without_sweep()
        apply_overrides(variant, (setting,), "sweep")
        return [d for d in _diagnose(variant) if (d.code, d.span, d.message) not in base]

    return sweep.diagnostics(loc, data, known_metrics(data, loc.path), try_set)


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen, out = set(), []
    for d in diags:
        key = (d.code, d.span, d.message)
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def check(doc: s.Document, profile: str | None = None, overrides: tuple[str, ...] = ()) -> Spec:
    """The checked Spec for ``doc`` with a profile and ``--set`` overrides applied."""
    sources = {doc.path: doc.source}
    loc = locate(doc)
    if profile is not None:
        if profile not in loc.profiles:
            raise SpecError([Diagnostic("E501", f"no profile '{profile}' in {doc.path}", loc.top_span(),
                                        did_you_mean(profile, loc.profiles)
                                        or f"profiles: {', '.join(loc.profiles) or 'none'}")], sources)
        apply_overrides(loc, loc.profiles[profile].statements, f"profile {profile}")
    applied = []
    for i, option in enumerate(overrides, 1):
        sources[f"<--set {i}>"] = option.replace("=", " ", 1)
        st = parse_set(option, i)
        if isinstance(st, Diagnostic):
            loc.diagnostics.append(st)
        else:
            apply_overrides(loc, (st,), "--set")
            applied.append(st.dotted)
    follows = precision_follows(loc.data, applied)
    diags = _diagnose(loc)
    if diags:
        raise SpecError(diags, sources | owncode.sources())  # a syntax error in user code quotes it
    return Spec(loc.data.get("spec"), loc.data, loc, doc.path, profile, tuple(overrides), sources,
                _warnings(loc), follows)


def _warnings(loc: Located) -> list[Diagnostic]:
    from specrun.spec.lint import warnings

    return warnings(loc)


def check_all_profiles(doc: s.Document) -> list[Diagnostic]:
    """What ``validate`` reports: the file itself, then each profile applied to it."""
    loc = locate(doc)
    pristine = loc.variant()  # located once: locating again per profile would rebuild every profile
    diags = _diagnose(loc)
    warned = _warnings(loc) if not diags else []
    for name, prof in loc.profiles.items():
        variant = pristine.variant()
        apply_overrides(variant, prof.statements, f"profile {name}")
        errors = _diagnose(variant)
        diags += errors
        if not errors:  # a warning only this profile causes says so
            seen = {(w.code, w.span, w.message) for w in warned}
            warned += [Diagnostic(w.code, f"{w.message} (with profile {name})", w.span, w.hint)
                       for w in _warnings(variant) if (w.code, w.span, w.message) not in seen]
    return _dedupe(diags + warned)


def load(path: str, profile: str | None = None, overrides: tuple[str, ...] = ()) -> Spec:
    text = read_source(path)
    return check(parse(text, path), profile, overrides)
