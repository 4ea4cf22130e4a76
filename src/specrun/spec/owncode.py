"""The user's own code named in a spec: ``model "models.py:TinyNet" { width 64 }``.

A reference is ``WHERE:NAME`` in quotes, where WHERE is a file (``models.py``,
``nets/cnn.py``: relative to the spec's folder, and kept inside it) or a dotted
module importable from the spec's folder or the environment (``mylib.nets``).
Any component kind takes one: task (the data), model, loss, metrics, optimizer.

Here the reference is turned into a catalog ``Component`` whose parameter
schema comes from the source (``signature.py``), without importing anything:
``validate`` checks a user's settings exactly like a built-in component's. The
run imports the code (``specrun.components.own``). Problems come back as
``CodeProblem``s: a message, a hint, and where in the user's file when the
problem is there (a syntax error).
"""

from __future__ import annotations

import ast
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from specrun.spec import signature as sig
from specrun.spec.syntax import Span

MAX_SOURCE = 2_000_000  # bytes: a larger "models.py" is not a model file
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
HOW = 'name your own code by file or module: `model "models.py:MyNet"` or `model "mylib.nets:MyNet"`'

# What the engine passes before the settings: (function, method) positional parameters.
LEADING = {"task": (0, 0), "model": (0, 0), "loss": (2, 0), "metrics": (2, 0), "optimizer": (1, 1)}
# A data callable may take `split` ("train" / "val"); the engine passes it, the spec does not.
ENGINE_SUPPLIED = {"task": {"split"}}
IMPL = {
    "task": "specrun.components.own.data:build_task",
    "model": "specrun.components.own.model:build_model",
    "loss": "specrun.components.own.loss:build_loss",
    "metrics": "specrun.components.own.metrics:build_metrics",
    "optimizer": "specrun.components.own.optim:build_optimizer",
}


def is_reference(name) -> bool:
    return isinstance(name, str) and ":" in name


@dataclass(eq=False)
class CodeProblem(Exception):
    code: str
    message: str
    hint: str | None = None
    at: Span | None = None  # in the user's file; None: at the reference in the spec

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Located:
    """Where a reference's code lives. ``file`` is None for a module found without source."""

    reference: str
    name: str
    module: str | None  # dotted module (None for a file reference)
    file: Path | None  # the source file, when there is one
    shown: str  # the file as messages name it (relative to where the user is)
    base: Path  # the spec's folder: put on sys.path when the run imports the code


def base_dir(spec_path: str) -> Path:
    """The folder a spec's references start from (the current one for a spec given as text)."""
    if not spec_path or spec_path.startswith("<"):
        return Path(".")
    return Path(spec_path).parent


def locate(reference: str, spec_path: str) -> Located:
    where, _, name = reference.rpartition(":")
    where = where.strip()
    if not where or not NAME.match(name):
        raise CodeProblem("E301", f"'{reference}' is not a reference to code", HOW)
    base = base_dir(spec_path)
    if where.endswith(".py") or "/" in where or "\\" in where:
        return _locate_file(reference, where, name, base)
    if not MODULE.match(where):
        raise CodeProblem("E301", f"'{where}' is neither a .py file nor a dotted module name", HOW)
    return _locate_module(reference, where, name, base)


def _locate_file(reference: str, where: str, name: str, base: Path) -> Located:
    rel = Path(where.replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts:
        raise CodeProblem("E301", f"'{where}' must stay inside the spec's folder",
                          "put the file next to the spec (or below it), or make it importable and name "
                          "it by module: `mylib.nets:MyNet`")
    path = base / rel
    try:
        inside = path.resolve().is_relative_to(base.resolve())
    except OSError:
        inside = False
    if not inside:  # a link out of the folder is as far out as '..'
        raise CodeProblem("E301", f"'{where}' leads outside the spec's folder",
                          "a user-code file must lie inside the spec's folder tree")
    if not path.is_file():
        near = sorted(p.name for p in path.parent.glob("*.py")) if path.parent.is_dir() else []
        from specrun.spec.diagnostics import did_you_mean

        raise CodeProblem("E301", f"no file {_shown(path)} (named relative to the spec's folder)",
                          did_you_mean(rel.name, near) or (f".py files there: {', '.join(near)}" if near
                                                           else None))
    return Located(reference, name, None, path, _shown(path), base)


def _locate_module(reference: str, module: str, name: str, base: Path) -> Located:
    parts = module.split(".")
    roots = [base] + [Path(p) for p in sys.path if p and Path(p).is_dir()]
    for root in roots:
        folder = root.joinpath(*parts[:-1])
        if not folder.is_dir():
            continue
        for candidate in (folder / f"{parts[-1]}.py", folder / parts[-1] / "__init__.py"):
            if candidate.is_file():
                return Located(reference, name, module, candidate, _shown(candidate), base)
        if any(folder.glob(f"{parts[-1]}.*.so")) or any(folder.glob(f"{parts[-1]}.*.pyd")):
            return Located(reference, name, module, None, module, base)  # compiled: no source
    # Not found by looking: it may still import (an editable install's finder, a zip). The run
    # imports it and checks then; validate says so.
    return Located(reference, name, module, None, module, base)


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


SOURCES: dict[str, str] = {}  # user files read by this process, for excerpts in error messages


def sources() -> dict[str, str]:
    return dict(SOURCES)


@lru_cache(maxsize=64)
def _parse(path: str, mtime: float, size: int) -> tuple[ast.Module, str]:
    data = Path(path).read_bytes()
    if len(data) > MAX_SOURCE:
        raise CodeProblem("E302", f"{_shown(Path(path))} is larger than {MAX_SOURCE // 1_000_000} MB; "
                                  "not read as a source file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CodeProblem("E302", f"{_shown(Path(path))} is not UTF-8 text (byte {exc.start})") from None
    SOURCES[_shown(Path(path))] = text
    try:
        return ast.parse(text, _shown(Path(path))), text
    except SyntaxError as exc:
        line, col = exc.lineno or 1, exc.offset or 1
        end = exc.end_offset if exc.end_lineno == exc.lineno and exc.end_offset and exc.end_offset > col \
            else col + 1
        raise CodeProblem("E302", f"syntax error in {_shown(Path(path))}: {exc.msg}",
                          "specrun reads this file to check the spec's settings against it",
                          Span(_shown(Path(path)), line, col, line, end)) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise CodeProblem("E302", f"cannot read {_shown(Path(path))} as Python: {exc}") from None


def read(found: Located) -> tuple[ast.Module, str] | None:
    if found.file is None:
        return None
    try:
        st = found.file.stat()
    except OSError as exc:
        raise CodeProblem("E301", f"cannot read {found.shown}: {exc.strerror or exc}") from None
    return _parse(str(found.file), st.st_mtime, st.st_size)


def code_of(found: Located) -> dict:
    """How the run imports it: recorded in the plan (and plan.json)."""
    out = {"reference": found.reference, "name": found.name, "base": str(found.base.resolve())}
    if found.module:
        out["module"] = found.module
    if found.file is not None:
        out["file"] = str(found.file.resolve())
        out["sha256"] = hashlib.sha256(found.file.read_bytes()).hexdigest()[:16]
    return out


@dataclass(frozen=True)
class Analysed:
    """A reference located and read: its signature (None without source) and its module tree."""

    found: Located
    signature: sig.Signature | None
    tree: ast.Module | None
    unchecked: str | None = None  # why the settings wait for the run


def analyse(kind: str, reference: str, spec_path: str) -> Analysed:
    found = locate(reference, spec_path)
    parsed = read(found)
    if parsed is None:
        why = f"no source found for {found.module}" if found.module else "no source"
        return Analysed(found, None, None, f"{why}: its settings are checked when the run starts")
    tree, _ = parsed
    names = sig.top_level(tree)
    if found.name not in names:
        re_exported = _imported_names(tree)
        if found.name in re_exported or "*" in re_exported:
            return Analysed(found, None, tree, f"'{found.name}' is imported into {found.shown} from "
                                               "elsewhere: its settings are checked when the run starts")
        from specrun.spec.diagnostics import did_you_mean

        defined = sorted(n for n, node in names.items()
                         if isinstance(node, (ast.ClassDef, ast.FunctionDef)))
        raise CodeProblem("E303", f"{found.shown} defines no '{found.name}'",
                          did_you_mean(found.name, defined)
                          or (f"it defines: {', '.join(defined)}" if defined else "it defines no class or function"))
    fn_skip, method_skip = LEADING[kind]
    try:
        signature = sig.signature(tree, found.name, fn_skip, method_skip)
    except sig.Unreadable as exc:
        return Analysed(found, None, tree, f"{found.reference}: {exc}; its settings are checked when the run starts")
    supplied = ENGINE_SUPPLIED.get(kind, set())
    signature.params = [p for p in signature.params if p.name not in supplied]
    return Analysed(found, signature, tree)


def _imported_names(tree: ast.Module) -> set[str]:
    out = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            out.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
    return out
