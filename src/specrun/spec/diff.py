"""diff: what changed in meaning between two specs, one line per setting.

Blind to layout and comments; phases and axes matched by name, so moving a
phase's settings around, or moving one axis before another, is no change. The
order of the phases on an axis is the order they run in: when it changes, one
line says so. Renaming a phase is a removal and an addition.
"""

from __future__ import annotations

from specrun.spec import syntax as s
from specrun.spec.document import locate
from specrun.spec.printer import expect_entry_tail, expect_tail, format_expr, format_value
from specrun.spec.values import Gate, Qty, describe

ORDER = " phase order"  # key suffix of the line that records the order of an axis's phases


def flatten(doc: s.Document, amounts: dict | None = None) -> dict[str, str]:
    """Every setting of a document as ``dotted.path -> canonical value text``.

    ``amounts`` (when given) receives what each quantity amounts to, so that ``60s``
    and ``1min``, or ``10GB`` and ``10_000_000_000B``, are no change.
    """
    loc = locate(doc)
    out: dict[str, str] = {}
    amounts = {} if amounts is None else amounts
    _flatten(loc.data, "", out, amounts)
    for name, prof in loc.profiles.items():
        out[f"profile.{name}"] = "(defined)"
        for st in prof.statements:
            if isinstance(st, s.Expect):
                out[f"profile.{name}.expect {format_expr(st.expr)}"] = _by(st)
            else:
                _flatten_statement(st, f"profile.{name}.", out, amounts)
    return out


def _amount(value: Qty) -> tuple:
    if value.dimension == "bytes":
        return ("bytes", value.bytes)
    if value.dimension == "duration":
        return ("duration", value.seconds)
    return ("span", value.span_unit, value.value)


def _by(st: s.Expect) -> str:
    when = expect_tail(st.when, format_value(st.by) if st.by is not None else None, st.severity).strip()
    return when or "always"


def _flatten_statement(st: s.Setting, prefix: str, out: dict, amounts: dict) -> None:
    key = prefix + st.dotted
    if st.gate is not None:
        out[key] = "when " + format_expr(st.gate)
    elif st.block is not None:
        if st.value is not None:
            out[key] = format_value(st.value)
        for inner in st.block.items:
            if isinstance(inner, s.Setting):
                _flatten_statement(inner, key + ".", out, amounts)
            else:
                out[f"{key}.expect {format_expr(inner.expr)}"] = _by(inner)
    elif st.value is not None:
        out[key] = format_value(st.value)
        if isinstance(st.value, s.Quantity):
            amounts[key] = _amount(Qty(st.value.value, st.value.unit))


def _flatten(value, prefix: str, out: dict, amounts: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("phases", "axes") and isinstance(v, list):
                entries = [e for e in v if isinstance(e, dict)]
                if k == "phases":
                    out[prefix.rstrip(".") + ORDER] = ", ".join(str(e.get("name")) for e in entries)
                for entry in entries:
                    here = f"{prefix}{entry.get('name')}"
                    out.setdefault(here, "(defined)")
                    body = {kk: vv for kk, vv in entry.items() if kk not in ("name", "set")}
                    _flatten(entry.get("set") or {}, here + ".", out, amounts)  # task.rounds, not set.task.rounds
                    _flatten(body, here + ".", out, amounts)
            elif k == "expect" and isinstance(v, list) and not prefix:
                for e in v:
                    out[f"expect {e['expr']}"] = expect_entry_tail(
                        e, describe(e["by"]) if "by" in e else None).strip() or "always"
            elif k == "type":
                out[prefix.rstrip(".")] = describe(v)
            else:
                _flatten(v, f"{prefix}{k}.", out, amounts)
    else:
        text = describe(value)
        out[prefix.rstrip(".")] = ("when " + text) if isinstance(value, Gate) else text
        if isinstance(value, Qty):
            amounts[prefix.rstrip(".")] = _amount(value)


def _same_order(old: str, new: str) -> bool:
    """Whether the phases both sides have run in the same order (additions and
    removals have lines of their own)."""
    a, b = old.split(", "), new.split(", ")
    common = set(a) & set(b)
    return [n for n in a if n in common] == [n for n in b if n in common]


def diff(a: s.Document, b: s.Document) -> list[str]:
    old_amounts, new_amounts = {}, {}
    old, new = flatten(a, old_amounts), flatten(b, new_amounts)
    lines = []
    for key in sorted(set(old) | set(new), key=_order(old, new)):
        if old.get(key) == new.get(key) or (key in old_amounts and old_amounts[key] == new_amounts.get(key)):
            continue
        if key.endswith(ORDER):
            if key in old and key in new and not _same_order(old[key], new[key]):
                lines.append(f"{key}: {old[key]} -> {new[key]}")
            continue
        if key not in old:
            lines.append(f"{key}: (unset) -> {new[key]}")
        elif key not in new:
            lines.append(f"{key}: {old[key]} -> (unset)")
        else:
            lines.append(f"{key}: {old[key]} -> {new[key]}")
    return lines


def _order(old: dict, new: dict):
    seen = list(old) + [k for k in new if k not in old]
    index = {k: i for i, k in enumerate(seen)}
    return lambda k: index[k]
