"""Paths a spec names for a run's outputs, checked before anything runs. Torch-free.

A spec is untrusted input (it arrives in code review from someone else), so every
output path it names stays inside the run directory: relative, no ``..``, no
absolute path or drive, never one of the run's own files. Checkpoint file names
are plain names whose only placeholders are ``{step}`` and ``{epoch}``, with a
bounded width. Symbolic links cannot be judged here (the run directory does not
exist yet); the engine refuses a path that resolves outside the run when it
opens it (``engine/rundir.py``: ``inside_run``).
"""

from __future__ import annotations

import re
import string

from specrun.spec.diagnostics import Diagnostic
from specrun.spec.document import Located

# What a run directory holds of its own: a spec's outputs never take these names.
RUN_FILES = frozenset({"spec.train", "plan.json", "run.json", "metrics.csv", "events.jsonl", "error.txt",
                       "run.lock", "tensorboard", "index.json", "trackers", "wandb"})
# A spec may name a tracking server; a local store (sqlite:, file:, a path) would be a file it
# writes outside the run: that comes from the environment (MLFLOW_TRACKING_URI), not the spec.
TRACKING_SERVERS = ("http://", "https://", "databricks")
PLACEHOLDERS = ("step", "epoch")
MAX_WIDTH = 20  # {step:08d} is fine; {step:>4000000000} would build a 4 GB name
_FORMAT = re.compile(r"(?:[<>=^]|0)?(\d{1,3})?d?")
_DRIVE = re.compile(r"^[A-Za-z]:")


def path_problem(value: str, *, folder: bool) -> str | None:
    """Why ``value`` cannot be a path below the run directory, or None."""
    if not value.strip():
        return "is empty"
    if "\0" in value:
        return "holds a NUL character"
    if len(value) > 1024:
        return "is longer than 1024 characters"
    if value.startswith(("/", "\\", "~")) or _DRIVE.match(value):
        return "must be relative to the run directory"
    parts = [p for p in value.replace("\\", "/").split("/")]
    if ".." in parts:
        return "must stay inside the run directory (no `..`)"
    named = [p for p in parts if p not in ("", ".")]
    if not named:
        return "names the run directory itself" + ("; give a folder below it" if folder else "")
    if any(len(p) > 255 for p in named):
        return "has a part longer than 255 characters"
    if named[0] in RUN_FILES:
        return f"would overwrite the run's own {named[0]}"
    return None


def template_problem(value: str) -> str | None:
    """Why ``value`` cannot be a checkpoint file-name template, or None."""
    if not value.strip():
        return "is empty"
    if "/" in value or "\\" in value:
        return "must be a file name (the folder is checkpoint.dir)"
    try:
        pieces = list(string.Formatter().parse(value))
    except ValueError as exc:
        return f"is not a valid template ({exc})"
    literal = ""
    for text, field, spec, conversion in pieces:
        literal += text
        if field is None:
            continue
        if field not in PLACEHOLDERS:
            return f"names {{{field}}}, which is not filled in"
        if conversion:
            return f"uses a conversion (!{conversion}); placeholders take a width only, as in {{{field}:06d}}"
        m = _FORMAT.fullmatch(spec or "")
        if m is None or "{" in (spec or ""):
            return f"formats {{{field}}} as {spec!r}; only a width is allowed, as in {{{field}:06d}}"
        if m.group(1) and int(m.group(1)) > MAX_WIDTH:
            return f"pads {{{field}}} to {m.group(1)} characters (at most {MAX_WIDTH})"
        literal += "0"
    if literal in (".", "..") or literal.startswith("."):
        return "must not start with a dot (hidden and partial files start with one)"
    if literal in RUN_FILES or literal.startswith("index.json"):
        return f"would overwrite the run's own {literal}"
    if literal.endswith((".partial", ".damaged")):
        return "must not end in .partial or .damaged (names of files being written or set aside)"
    return None


_HINTS = {"dir": "a folder below the run directory, such as \"checkpoints\"",
          "template": "a file name such as \"step_{step}.pt\"; placeholders are {step} and {epoch}",
          "file": "a file name below the run directory, such as \"logs/training.log\""}


def output_path_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """Every output path the spec names, checked; clashing checkpoint names too."""
    ck = data.get("checkpoint") if isinstance(data.get("checkpoint"), dict) else {}
    best = ck.get("best") if isinstance(ck.get("best"), dict) else {}
    log = data.get("log") if isinstance(data.get("log"), dict) else {}
    prof = data.get("profiler") if isinstance(data.get("profiler"), dict) else {}
    checks = [(("checkpoint", "dir"), ck.get("dir"), "dir"), (("checkpoint", "name"), ck.get("name"), "template"),
              (("checkpoint", "final"), ck.get("final"), "template"),
              (("checkpoint", "best", "name"), best.get("name"), "template"),
              (("log", "csv"), log.get("csv"), "file"), (("log", "text"), log.get("text"), "file"),
              (("profiler", "dir"), prof.get("dir"), "dir")]
    out, names = [], {}
    for path, value, kind in checks:
        if not isinstance(value, str):
            continue
        problem = template_problem(value) if kind == "template" else path_problem(value, folder=kind == "dir")
        key = ".".join(path)
        if problem:
            out.append(Diagnostic("E203", f"{key} {value!r} {problem}", loc.value_span(path), _HINTS[kind]))
        elif kind == "template":
            names.setdefault(value.format(step=1, epoch=1), []).append(key)
    uri = (log.get("mlflow") or {}).get("tracking_uri") if isinstance(log.get("mlflow"), dict) else None
    if isinstance(uri, str) and not uri.startswith(TRACKING_SERVERS):
        out.append(Diagnostic("E203", f"log.mlflow.tracking_uri {uri!r} is not a tracking server: a spec writes "
                                      "nothing outside its run directory", loc.value_span(("log", "mlflow", "tracking_uri")),
                              "give an http(s):// server, or leave it out: runs go to MLFLOW_TRACKING_URI when set, "
                              "else to runs/.mlflow/mlflow.db"))
    for keys in names.values():
        if len(keys) > 1:  # each would overwrite the other, and rotation could delete a final one
            out.append(Diagnostic("E203", f"{keys[1]} names the same file as {keys[0]}",
                                  loc.value_span(tuple(keys[1].split("."))), "give each checkpoint its own name"))
    return out
