"""overrides: profile statements and ``--set`` options applied to located data.

They are applied before anything is checked, recording their own spans
(``<--set N>``, ``profile smoke``), so they are checked exactly like the file
and errors point at them.
"""

from __future__ import annotations

from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic, SpecError, did_you_mean
from specrun.spec.document import (
    COLLECTIONS,
    PHASE_TARGETS,
    Located,
    assign,
    expect_entry,
    fill,
    merge,
)
from specrun.spec.parse import parse_statements

# ---- overrides ---------------------------------------------------------------------------

def apply_overrides(loc: Located, statements, origin: str) -> None:
    """Apply profile or --set statements to ``loc`` in place, recording their spans."""
    for st in statements:
        if isinstance(st, s.Expect):
            entries = loc.data.setdefault("expect", [])
            path = ("expect", len(entries))
            entries.append(expect_entry(st))
            loc.spans[path] = loc.key_spans[path] = st.span
            continue
        target = _resolve_path(loc, st, origin)
        if target is None:
            continue
        base, key = target
        tmp = Located({}, path=loc.path)
        fill(tmp, tmp.data, base, (s.Setting(key, st.key_span, st.value, st.block, st.gate, st.span),),
              in_phase=False)
        loc.diagnostics += tmp.diagnostics
        loc.spans.update(tmp.spans)
        loc.key_spans.update(tmp.key_spans)
        loc.value_spans.update(tmp.value_spans)
        node = loc.data
        for part in base:
            node = node[part]
        for k, v in tmp.data.items():
            if isinstance(v, dict) and isinstance(node.get(k), dict):
                merge(node[k], v)  # a block in an override merges into the block it overrides
            else:
                assign(loc, node, base, (k,), v, st.span, st.key_span, override=True)


def _resolve_path(loc: Located, st: s.Setting, origin: str):
    """Split an override's dotted key into (resolved base path, remaining key)."""
    node, base = loc.data, ()
    parts = list(st.key)
    while len(parts) > 1:
        part = parts[0]
        if isinstance(node, dict) and part in node and isinstance(node[part], (dict, list)):
            node, base = node[part], base + (part,)
            parts.pop(0)
            continue
        if isinstance(node, dict) and any(c in node for c in COLLECTIONS.values()):
            coll = "phases" if "phases" in node else "axes"
            names = [e.get("name") for e in node[coll]]
            if part in names:
                i = names.index(part)
                node, base = node[coll][i], base + (coll, i)
                parts.pop(0)
                if coll == "phases" and parts[0] in PHASE_TARGETS:
                    node = node.setdefault("set", {})
                    base = base + ("set",)
                continue
            kind = "phase" if coll == "phases" else "axis"
            loc.diagnostics.append(Diagnostic(
                "E500", f"{origin} targets no setting: there is no {kind} '{part}'", st.key_span,
                did_you_mean(part, names) or f"{kind}s: {', '.join(names)}"))
            return None
        if isinstance(node, dict) and part not in node:
            break  # a new block: create it below, the schema judges whether it may exist
        loc.diagnostics.append(Diagnostic(
            "E500", f"{origin} targets no setting: '{'.'.join(st.key)}' goes through a value",
            st.key_span))
        return None
    return base, tuple(parts)


def parse_set(option: str, index: int) -> s.Statement | Diagnostic:
    """``path=value`` from the command line -> a statement spanned at ``<--set N>``."""
    origin = f"<--set {index}>"
    key, eq, value = option.partition("=")
    if not eq or not key.strip():
        return Diagnostic("E502", f"--set expects path=value, got {option!r}", s.Span(origin, 1, 1, 1, 2),
                          "e.g. --set optimizer.lr=3e-4")
    if not value.strip():
        return Diagnostic("E502", f"--set {key.strip()}= has no value", s.Span(origin, 1, len(key) + 1,
                                                                                  1, len(key) + 2),
                          f"e.g. --set {key.strip()}=VALUE; a list is [a, b], a string \"in quotes\"")
    text = f"{key} {value}"  # same length, so columns in messages match what was typed
    try:
        items = parse_statements(text, origin)
    except SpecError as err:
        diag = err.diagnostics[0]
        raw = value.strip()
        if ";" in value or (diag.hint and diag.hint.startswith("one setting per line")):
            diag = Diagnostic(diag.code, diag.message, diag.span,
                              "--set takes one PATH=VALUE: quote the value if it has spaces, "
                              "repeat --set for another setting")
        elif diag.code == "E100" and not raw.startswith(('"', "[", "{")):
            diag = Diagnostic(diag.code, diag.message, diag.span,
                              f'a string value goes in double quotes: --set \'{key.strip()}="{raw}"\'')
        return diag
    if len(items) != 1 or not isinstance(items[0], s.Setting):
        return Diagnostic("E502", f"--set takes exactly one setting, got {option!r}", s.Span(origin, 1, 1, 1, 2),
                          "repeat --set for each setting")
    return items[0]


def precision_follows(data: dict, set_keys: list[str]) -> dict:
    """``--set precision.type=bf16`` alone on an fp16 spec (the keenkenning document's
    ``--dtype``): the file's ``loss_scale dynamic`` is fp16's and follows the type to
    ``none``, rather than making the one flag an error. Returns what followed, and why,
    for the plan to say."""
    prec = data.get("precision") if isinstance(data.get("precision"), dict) else {}
    typed = any(k in ("precision", "precision.type") for k in set_keys)
    if (not typed or "precision.loss_scale" in set_keys or prec.get("loss_scale") != "dynamic"
            or prec.get("type") in ("fp16", None)):
        return {}
    prec["loss_scale"] = "none"
    return {"precision.loss_scale": f"none: follows --set precision.type={prec.get('type')} "
                                    "(dynamic loss scaling is fp16's)"}
