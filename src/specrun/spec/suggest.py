"""suggest: the full path of a setting someone half-remembered (``lr`` -> ``optimizer.lr``).

An override names a setting by its whole dotted path, so a "did you mean" over the
keys of one block is not enough: ``--set lr=1e-3`` must point at ``optimizer.lr``.
The paths come from the spec schema and the parameters of the components the spec
names. Torch-free.
"""

from __future__ import annotations

import difflib

from specrun.spec import catalog as cat
from specrun.spec.schema import resolve_ref, spec_schema


def _paths(schema: dict, root: dict, prefix: str, depth: int = 0):
    schema = resolve_ref(schema, root)
    props = schema.get("properties") or {}
    for key, sub in props.items():
        sub = resolve_ref(sub, root)
        path = f"{prefix}{key}"
        nested = sub.get("properties")
        if nested and depth < 3 and key not in cat.KINDS:
            yield from _paths(sub, root, path + ".", depth + 1)
        else:
            yield path


def setting_paths(data: dict) -> list[str]:
    """Every dotted path a spec with these components may set."""
    root = spec_schema()
    out = [p for p in _paths(root, root, "") if p.split(".")[0] not in ("curriculum", "expect")]
    for kind in cat.KINDS:
        block = data.get(kind) if isinstance(data, dict) else None
        name = block.get("type") if isinstance(block, dict) else None
        comp = cat.lookup(kind, name) if isinstance(name, str) else None
        if comp is not None:
            out += [f"{kind}.{p}" for p in _paths(comp.params, comp.params, "")]
    return sorted(set(out))


def full_path_hint(key: str, data: dict) -> str | None:
    """``did you mean 'optimizer.lr'?`` for ``lr``, or for a misspelt whole path."""
    paths = setting_paths(data)
    parent, _, last = key.rpartition(".")
    leaf = lambda p: p.rsplit(".", 1)[-1]  # noqa: E731
    siblings = [p for p in paths if parent and p.startswith(parent + ".")]
    found = [f"{parent}.{c}" for c in difflib.get_close_matches(last, [p[len(parent) + 1:] for p in siblings],
                                                                  n=1, cutoff=0.6)]
    found = found or [p for p in paths if leaf(p) == last and p != key]
    if not found:
        by_leaf: dict[str, list[str]] = {}
        for p in paths:
            by_leaf.setdefault(leaf(p), []).append(p)
        found = [p for c in difflib.get_close_matches(last, list(by_leaf), n=2, cutoff=0.75) for p in by_leaf[c]]
    found = found or difflib.get_close_matches(key, paths, n=2, cutoff=0.6)
    if not found:
        return None
    return "did you mean " + " or ".join(f"'{p}'" for p in found[:3]) + "?"
