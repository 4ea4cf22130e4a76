"""specrun's Python API: what the command line does, for a notebook or a script.

The CLI is a thin layer over these functions; both take the same code paths::

    import specrun

    spec = specrun.load_spec("specs/builtin_rule.train", profile="smoke", overrides=["optimizer.lr=1e-3"])
    plan = specrun.build_plan(spec)
    result = specrun.run(spec, on_metrics=lambda row: print(row["step"], row.get("train.loss")))
    model = specrun.load(result.run_dir)          # eval mode, the weights the run ended with
    specrun.export(result.run_dir, "exported/")   # model.safetensors + model.json

Spec problems raise ``specrun.SpecError`` (``err.render()`` prints them as the CLI
does); export and load problems raise ``specrun.ExportError``. Only ``run``,
``export`` and ``load`` import torch. See docs/api.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from specrun.plan import Plan
from specrun.plan import build_plan as compile_plan
from specrun.spec.check import Spec, check, check_all_profiles
from specrun.spec.diagnostics import Diagnostic, SpecError
from specrun.spec.parse import parse, read_source

TORCH_MISSING = ("training needs PyTorch, which is not installed here: pip install \"specrun[train]\" "
                 "(install the torch build for your machine first, and pip keeps it; in a checkout: "
                 "pip install \"torch==2.13.0\" -e \".[train]\")")


class TorchMissing(RuntimeError):
    """``run``, ``export`` or ``load`` was called where torch is not installed."""


@dataclass
class RunResult:
    status: str  # finished / failed / interrupted
    code: int  # the exit code `specrun run` gives: 0, 1, 130, 143
    message: str
    step: int
    run_dir: str | None  # None when the run never got a directory (e.g. a refused resume)
    summary: dict | None = None  # the end-of-run summary (also the `summary` event); None if never set up

    @property
    def ok(self) -> bool:
        return self.code == 0


# ---- specs and plans ------------------------------------------------------------------------

def load_spec(path: str | Path, profile: str | None = None, overrides: Iterable[str] = ()) -> Spec:
    """Parse and check a .train file with a profile and ``path=value`` overrides applied.

    Raises SpecError listing every problem. ``spec.warnings`` holds settings that can never
    take effect (W codes), which do not stop a run.
    """
    path = str(path)
    return check(parse(read_source(path), path), profile, tuple(overrides))


def validate(path: str | Path, profile: str | None = None, overrides: Iterable[str] = ()) -> list[Diagnostic]:
    """Every problem of a spec file: errors and warnings (``d.severity``), sorted by place.

    Without a profile or overrides the file is checked as written and with each of its
    profiles, as ``specrun validate`` does; with them, exactly as ``run`` would see it.
    """
    path, overrides = str(path), tuple(overrides)
    try:
        doc = parse(read_source(path), path)
        if profile is None and not overrides:
            found = check_all_profiles(doc)
        else:
            found = list(check(doc, profile, overrides).warnings)
    except SpecError as err:
        found = list(err.diagnostics)
    return sorted(found, key=Diagnostic.sort_key)


def build_plan(spec: Spec | str | Path, profile: str | None = None, overrides: Iterable[str] = ()) -> Plan:
    """The compiled plan (defaults filled, units resolved) of a Spec, or of a spec file."""
    if not isinstance(spec, Spec):
        spec = load_spec(spec, profile, overrides)
    return compile_plan(spec)


# ---- running ----------------------------------------------------------------------------------

def require_torch() -> None:
    """Raise TorchMissing, with the install command, where torch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TorchMissing(TORCH_MISSING) from None


def _engine():
    require_torch()
    from specrun.engine import execute

    return execute


def run(spec: Spec | str | Path, profile: str | None = None, overrides: Iterable[str] = (), *,
        run_dir: str | None = None, new: bool = False, allow_spec_change: bool = False, quiet: bool = True,
        on_metrics: Callable[[dict], None] | None = None, runs_base: str = "runs",
        profile_trace: bool = False, progress_every: float | None = None, dist=None) -> RunResult:
    """Train in this process, as ``specrun run`` does, and return how it ended.

    ``on_metrics(row)`` is called with each metrics row (the dict written to metrics.csv:
    ``step``, ``train.loss``, ``val.accuracy``...). A spec asking for several processes
    is started by the command line (which relaunches itself under torchrun), not here.
    """
    if not isinstance(spec, Spec):
        spec = load_spec(spec, profile, overrides)
    compiled = compile_plan(spec)
    execute = _engine()
    if compiled.world_size > 1 and dist is None:
        raise ValueError(f"{spec.name} asks for {compiled.world_size} processes: start it with "
                         "`specrun run`, which launches them through torchrun")
    opts = execute.Options(run_dir=run_dir, new=new, allow_spec_change=allow_spec_change, quiet=quiet,
                           runs_base=runs_base, profile_trace=profile_trace, progress_every=progress_every,
                           on_metrics=on_metrics)
    outcome = execute.execute(compiled, opts, dist=dist)
    return RunResult(outcome.status, outcome.code, outcome.message, outcome.step, outcome.run_dir, outcome.summary)


# ---- reading runs ------------------------------------------------------------------------------------

def runs(spec: str | None = None, base: str | Path = "runs"):
    """Every run (of one spec, a name or a .train file), oldest first: a list of RunInfo."""
    from specrun.cli.runs import list_runs

    return list_runs(spec, base)


def find_run(ref: str | Path, base: str | Path = "runs") -> Path:
    """A run directory from a path, or the latest run of a spec name / .train file."""
    from specrun.cli.runs import resolve_run

    return resolve_run(str(ref), base)


def read_run(ref: str | Path, base: str | Path = "runs"):
    """Status, step, phases, best metric, profile and overrides of one run (a RunInfo)."""
    from specrun.cli.runs import read_run as read

    return read(find_run(ref, base))


def metrics(ref: str | Path, base: str | Path = "runs") -> dict[str, list[tuple[int, float]]]:
    """metrics.csv as ``column -> [(step, value), ...]``."""
    from specrun.cli.runs import read_metrics

    return read_metrics(find_run(ref, base))


def events(ref: str | Path, base: str | Path = "runs") -> list[dict]:
    """events.jsonl as a list of dicts (a torn last line is skipped)."""
    from specrun.cli.runs import read_events

    return read_events(find_run(ref, base))


# ---- the trained model ---------------------------------------------------------------------------------

def export(ref: str | Path, out_dir: str | Path, which: str = "latest", base: str | Path = "runs"):
    """Write ``model.safetensors`` and ``model.json`` for a run's checkpoint into ``out_dir``.

    ``which``: ``latest`` (the newest complete checkpoint), ``final`` or ``best``.
    """
    _engine()
    from specrun.engine.export import export as write

    return write(find_run(ref, base), out_dir, which)


def load(ref: str | Path, which: str = "latest", device: str = "cpu", base: str | Path = "runs"):
    """The trained model in eval mode, from an export folder (reads JSON and safetensors only),
    a run directory, or a spec name / .train file meaning its latest run."""
    _engine()
    from specrun.engine.export import MANIFEST, WEIGHTS, ExportError, from_export, from_run

    path = Path(ref)
    if (path / MANIFEST).is_file() or (path.is_file() and path.name in (MANIFEST, WEIGHTS)):
        return from_export(path, device)[0]
    try:
        run_dir = find_run(ref, base)
    except FileNotFoundError as exc:
        raise ExportError(f"{ref}: not an export folder, and {exc}") from None
    return from_run(run_dir, which, device)[0]
