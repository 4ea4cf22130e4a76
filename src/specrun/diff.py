"""diff: what changed in meaning between two specs, one line per setting.

Blind to layout and comments; phases and axes matched by name, so moving a
phase block around is no change, renaming one is a removal and an addition.
"""

from __future__ import annotations

from specrun import syntax as s
from specrun.document import locate
from specrun.fmt import format_expr, format_value
from specrun.values import describe


def flatten(doc: s.Document) -> dict[str, str]:
    """Every setting of a document as ``dotted.path -> canonical value text``."""
    loc = locate(doc)
    out: dict[str, str] = {}
    _flatten(loc.data, "", out)
    for name, prof in loc.profiles.items():
        for st in prof.statements:
            if isinstance(st, s.Expect):
                out[f"profile.{name}.expect {format_expr(st.expr)}"] = _by(st)
            else:
                _flatten_statement(st, f"profile.{name}.", out)
    return out


def _by(st: s.Expect) -> str:
    return f"by {format_value(st.by)}" if st.by is not None else "always"


def _flatten_statement(st: s.Setting, prefix: str, out: dict) -> None:
    key = prefix + st.dotted
    if st.gate is not None:
        out[key] = "when " + format_expr(st.gate)
    elif st.block is not None:
        if st.value is not None:
            out[key] = format_value(st.value)
        for inner in st.block.items:
            if isinstance(inner, s.Setting):
                _flatten_statement(inner, key + ".", out)
    elif st.value is not None:
        out[key] = format_value(st.value)


def _flatten(value, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("phases", "axes") and isinstance(v, list):
                for entry in v:
                    _flatten({kk: vv for kk, vv in entry.items() if kk != "name"},
                             f"{prefix}{entry.get('name')}.", out)
                    out.setdefault(f"{prefix}{entry.get('name')}", "(defined)")
            elif k == "expect" and isinstance(v, list):
                for e in v:
                    out[f"{prefix}expect {e['expr']}"] = f"by {describe(e['by'])}" if "by" in e else "always"
            elif k == "type":
                out[prefix.rstrip(".")] = describe(v)
            else:
                _flatten(v, f"{prefix}{k}.", out)
    else:
        text = describe(value)
        out[prefix.rstrip(".")] = ("when " + text) if type(value).__name__ == "Gate" else text


def diff(a: s.Document, b: s.Document) -> list[str]:
    old, new = flatten(a), flatten(b)
    lines = []
    for key in sorted(set(old) | set(new), key=_order(old, new)):
        if old.get(key) == new.get(key):
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
