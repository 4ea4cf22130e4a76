"""The layout shows the pipeline: no import circle anywhere, and the language
package imports neither torch nor (outside parse) lark.

Imports are read from the source, function-level ones included, so a lazy import
cannot hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import specrun

SRC = Path(specrun.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every specrun module or third-party top-level package the file imports."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = {t for t in _imports(path) if t in modules and t != name}
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_in_src():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_language_package_never_imports_torch_and_lark_only_to_parse():
    for path in [*(SRC / "spec").rglob("*.py"), SRC / "plan.py", SRC / "sections.py"]:
        tops = {name.split(".")[0] for name in _imports(path)}
        assert "torch" not in tops, path
        if path.name != "parse.py":
            assert "lark" not in tops, path


def test_engine_functions_read_in_one_screen():
    """The loop reads top to bottom like nanoGPT's: no function in engine/ over 60 lines."""
    long = []
    for path in (SRC / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.lineno} {node.name}")
    assert long == []


def test_the_engine_reads_the_plans_typed_sections_not_its_settings_dict():
    """plan.settings is the plan as a record (plan.json, `specrun plan`, trackers); the engine
    reads plan.checkpoint, plan.log, ... so a misspelt setting fails where it is misspelt."""
    reads = []
    for path in (SRC / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "settings":
                owner = node.value
                name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
                if name == "plan":
                    reads.append(f"{path.name}:{node.lineno}")
    assert reads == []
