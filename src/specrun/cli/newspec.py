"""newspec: start a new spec from a reference one (``specrun new NAME --from SPEC``).

The copy is the reference text with only the ``spec NAME`` value replaced, so
comments, layout and profiles survive. The result must validate before it is
written, and an existing file is never overwritten.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NewSpecError(RuntimeError):
    pass


def reference_specs(specs_dir: str | Path = "specs") -> dict[str, Path]:
    """Reference specs by file stem: ``specs/savant.train`` -> ``savant``.

    The project's ``specs_dir`` first; then the five reference specs specrun ships
    (in the wheel, or the checkout's ``specs/``), so ``specrun new x --from savant``
    works in any folder.
    """
    found: dict[str, Path] = {}
    for d in (_shipped_specs(), Path(specs_dir)):  # the project's own win on a clash
        if d is not None and d.is_dir():
            found.update({p.stem: p for p in sorted(d.glob("*.train"))})
    return found


def _shipped_specs() -> Path | None:
    from specrun.resources import resource_dir

    try:
        return resource_dir("specs")
    except FileNotFoundError:
        return None


def find_reference(ref: str, specs_dir: str | Path = "specs") -> Path:
    path = Path(ref)
    if path.is_file():
        return path
    known = reference_specs(specs_dir)
    if ref in known:
        return known[ref]
    choices = ", ".join(known) or f"none in {specs_dir}/"
    raise NewSpecError(f"{ref}: no such spec file, and not a reference spec name (known: {choices})")


def renamed(text: str, path: str, name: str) -> str:
    """``text`` with its ``spec`` value replaced by ``name`` (added on top when missing)."""
    from specrun.spec import syntax as s
    from specrun.spec.parse import parse

    doc = parse(text, path)
    spec = next((st for st in doc.items if isinstance(st, s.Setting) and st.key == ("spec",)
                 and st.value is not None), None)
    if spec is None:
        return f"spec {name}\n" + text
    span = spec.value.span
    lines = text.splitlines(keepends=True)
    start = sum(len(line) for line in lines[:span.line - 1]) + span.col - 1
    end = sum(len(line) for line in lines[:span.end_line - 1]) + span.end_col - 1
    return text[:start] + name + text[end:]


def new_spec(name: str, reference: str, output: str | Path | None = None,
             specs_dir: str | Path = "specs") -> Path:
    """Write the new spec and return its path. Raises NewSpecError / SpecError."""
    from specrun.spec.check import check_all_profiles
    from specrun.spec.diagnostics import SpecError
    from specrun.spec.parse import read_source

    if not NAME.match(name):
        raise NewSpecError(f"{name!r} is not a spec name: letters, digits and _, not starting with a digit")
    source = find_reference(reference, specs_dir)
    target = Path(output) if output else Path(specs_dir) / f"{name}.train"
    if target.exists():
        raise NewSpecError(f"{target} already exists; not overwriting it (choose another name or -o PATH)")
    text = renamed(read_source(str(source)), str(source), name)
    from specrun.spec.parse import parse

    target.parent.mkdir(parents=True, exist_ok=True)
    copied = copy_own_code(text, source, target)
    diagnostics = check_all_profiles(parse(text, str(target)))
    if diagnostics:
        for path in copied:  # nothing is left behind by a spec that is not written
            path.unlink()
        raise SpecError(diagnostics, {str(target): text})
    # "x": create, never overwrite, even if the file appeared since the check above
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return target


def copy_own_code(text: str, source: Path, target: Path) -> list[Path]:
    """The files of the user's own code the reference names (``model "shapes_models.py:SmallCNN"``),
    copied beside the new spec where they are not there yet. Returns what was copied."""
    import shutil

    from specrun.spec.document import locate
    from specrun.spec.own_rules import metric_entries
    from specrun.spec.owncode import CodeProblem, is_reference, locate as locate_code
    from specrun.spec.parse import parse

    data = locate(parse(text, str(source))).data
    names = [(data.get(k) or {}).get("type") for k in ("task", "model", "loss", "optimizer")
             if isinstance(data.get(k), dict)] + [name for _, name, _ in metric_entries(data)]
    copied = []
    for name in names:
        if not is_reference(name):
            continue
        try:
            found = locate_code(name, str(source))
        except CodeProblem:
            continue
        if found.module is not None or found.file is None:
            continue  # a module: importable from wherever the new spec lives
        rel = found.file.relative_to(found.base)
        dest = target.parent / rel
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found.file, dest)
            copied.append(dest)
    return copied
