"""Import the user's code, and turn its exceptions into messages that show their frames.

The spec's folder goes first on ``sys.path``: ``models.py`` next to the spec is
the module ``models``, and its own ``import helpers`` finds ``helpers.py``
there; DataLoader workers started by spawn or forkserver import it the same way.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from pathlib import Path

from specrun.components.api import ComponentError

SPECRUN_DIR = str(Path(__file__).resolve().parents[2])


def import_code(code: dict, what: str):
    """The class or function a plan entry's ``code`` names (``{"file"|"module", "name", "base"}``)."""
    base = code.get("base")
    if base:
        if base in sys.path:
            sys.path.remove(base)
        sys.path.insert(0, base)  # first: the spec's own folder wins over same-named modules elsewhere
    module_name = code.get("module") or _module_of_file(code)
    _forget_stale(module_name, code.get("file"))
    try:
        module = importlib.import_module(module_name)
    except ComponentError:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name == module_name or module_name.startswith(exc.name + ".")):
            raise ComponentError(f"{what}: no module {module_name} (looked in {base} and the environment)") from None
        raise failure(f"{what}: importing {module_name} failed", exc, base) from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise failure(f"{what}: importing {module_name} failed", exc, base) from exc
    path = getattr(module, "__file__", None)
    if path and module_name not in _LOADED and code.get("file"):
        _LOADED[module_name] = (path, os.path.getmtime(path))
    if code.get("file") and not _same_file(path, code["file"]):
        raise ComponentError(f"{what}: the module name '{module_name}' is taken by {module.__file__}; "
                             f"rename {code['file']}")
    try:
        return getattr(module, code["name"])
    except AttributeError:
        raise ComponentError(f"{what}: {module_name} has no '{code['name']}'") from None


_LOADED: dict[str, tuple[str, float]] = {}  # module name -> (file, mtime) of user code imported here


def _forget_stale(name: str, file: str | None) -> None:
    """A second run in this process (tests, the Python API) may name another project's
    ``models.py``, or an edited one: user code imported before is imported again then."""
    module = sys.modules.get(name)
    if module is None or name not in _LOADED:
        return
    path = getattr(module, "__file__", None)
    current = (path, os.path.getmtime(path)) if path and os.path.exists(path) else None
    if current != _LOADED[name] or (file and not _same_file(path, file)):
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        del _LOADED[name]


def _module_of_file(code: dict) -> str:
    rel = Path(os.path.relpath(code["file"], code["base"])).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    if not all(p.isidentifier() for p in parts):
        raise ComponentError(f"{code['reference']}: {rel} cannot be imported as a module; use a file name "
                             "made of letters, digits and _")
    return ".".join(parts)


def _same_file(a, b) -> bool:
    try:
        return a is not None and Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _is_user_frame(filename: str, base: str | None) -> bool:
    if filename.startswith("<") or "site-packages" in filename or "dist-packages" in filename:
        return False
    path = os.path.abspath(filename)
    if path.startswith(SPECRUN_DIR + os.sep):
        return False
    return base is None or path.startswith(os.path.abspath(base) + os.sep) or not path.startswith(sys.prefix)


def failure(what: str, exc: BaseException, base: str | None) -> ComponentError:
    """A ComponentError saying ``what`` failed, with the user's own frames of ``exc``."""
    frames = traceback.extract_tb(exc.__traceback__)
    mine = [f for f in frames if _is_user_frame(f.filename, base)]
    detail = str(exc).strip() or type(exc).__name__
    lines = [f"{what}: {type(exc).__name__}: {detail}" if str(exc).strip() else f"{what}: {detail}"]
    if isinstance(exc, SyntaxError) and exc.filename:
        lines.append(f"  {os.path.relpath(exc.filename)}:{exc.lineno}: {(exc.text or '').strip()}")
    for f in mine[-8:]:
        lines.append(f"  {os.path.relpath(f.filename)}:{f.lineno} in {f.name}")
        if f.line:
            lines.append(f"    {f.line.strip()}")
    return ComponentError("\n".join(lines))


def call(what: str, base: str | None, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; what it raises comes back as a ComponentError with the user's frames."""
    try:
        return fn(*args, **kwargs)
    except ComponentError:
        raise
    except Exception as exc:
        raise failure(what, exc, base) from exc


def check_settings(what: str, fn, given: dict, skip: int = 0, supplied=()) -> inspect.Signature | None:
    """Refuse settings ``fn`` does not take, and name the ones it needs that nobody gives.

    What ``validate`` checked from the source, checked again on the live object: this is
    the only check for code without source, and it catches a file edited since.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)][skip:]
    names = {p.name for p in params}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    from specrun.spec.diagnostics import did_you_mean

    for key in given:
        if key not in names and not takes_any:
            raise ComponentError(f"{what} takes no setting '{key}'"
                                 + (f"; {did_you_mean(key, names)}" if did_you_mean(key, names) else
                                    f"; it takes: {', '.join(sorted(names)) or 'nothing'}"))
    for p in params:
        if p.default is p.empty and p.name not in given and p.name not in supplied and \
                p.kind != p.POSITIONAL_ONLY:
            raise ComponentError(f"{what} needs the setting '{p.name}'")
    return sig
