"""Commands for living with runs: ``specrun runs``, ``specrun plot``, ``specrun new``.

Registered on the ``specrun`` group in cli.py with ``main.add_command(...)``.
Nothing here imports torch or matplotlib until a command needs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from specrun.spec.diagnostics import SpecError


# ---- completion -------------------------------------------------------------------------

def _items(values, incomplete: str):
    from click.shell_completion import CompletionItem

    return [CompletionItem(v) for v in sorted(set(values)) if v.startswith(incomplete)]


def _train_files(incomplete: str) -> list[str]:
    """.train files in the folder being typed (and specs/), and its sub-folders to go down into."""
    base = Path(incomplete) if incomplete.endswith("/") else (Path(incomplete).parent if incomplete else Path("."))
    found = [str(p) for p in list(base.glob("*.train")) + list(Path("specs").glob("*.train"))]
    if base.is_dir():
        found += [f"{p}/" for p in base.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))]
    return found


def _base(ctx) -> Path:
    return Path(ctx.params.get("base") or "runs")


def complete_run_specs(ctx, param, incomplete):
    """Spec names that have runs, and .train files."""
    try:
        base = _base(ctx)
        names = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
        return _items(names + _train_files(incomplete), incomplete)
    except Exception:  # completion must never print a traceback into the shell
        return []


def complete_runs(ctx, param, incomplete):
    """Spec names (their latest run) and run directories."""
    try:
        base = _base(ctx)
        values = []
        if base.is_dir():
            for spec in (p for p in base.iterdir() if p.is_dir()):
                values.append(spec.name)
                values += [str(r) for r in spec.iterdir() if r.is_dir()]
        return _items(values, incomplete)
    except Exception:
        return []


def complete_references(ctx, param, incomplete):
    """Reference spec names from specs/, and .train files."""
    try:
        from specrun.cli.newspec import reference_specs

        return _items(list(reference_specs()) + _train_files(incomplete), incomplete)
    except Exception:
        return []


# ---- runs --------------------------------------------------------------------------------

@click.command("runs")
@click.argument("spec", required=False, shell_complete=complete_run_specs)
@click.option("--base", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The runs folder: <base>/<spec>/<run-id>.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as a JSON list.")
def runs_command(spec, base, as_json):
    """List runs: status, step, phases, best metric, start and duration.

    SPEC is a spec name or a .train file; without it, every spec's runs.
    A run whose process died without a word (SIGKILL, power loss) shows
    as interrupted, not running. A sweep's trials follow, under their
    sweep, the best first.

    \b
    Example:
      specrun runs
      specrun runs specs/builtin_rule.train --json
    """
    from specrun.cli.runs import list_runs, render_table
    from specrun.cli.sweep_runs import list_sweeps, render_sweep

    try:
        found, sweeps = list_runs(spec, base), list_sweeps(spec, base)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:  # a sweep's trials follow the runs, each with its `trial` (best first per sweep)
        trials = [r for group in sweeps for r in group.trials]
        click.echo(json.dumps([r.to_json() for r in found + trials], indent=2))
        return
    if not found and not sweeps:
        where = Path(base) / spec if spec else Path(base)
        click.echo(f"no runs under {where}" if not spec else f"no runs of {spec} under {base}", err=True)
        return
    tables = ([render_table(found)] if found else []) + [render_sweep(group) for group in sweeps]
    click.echo("\n\n".join(tables))


# ---- plot --------------------------------------------------------------------------------

@click.command("plot")
@click.argument("runs", nargs=-1, required=True, metavar="RUN...", shell_complete=complete_runs)
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="plot.png", show_default=True,
              help="Image to write (PNG; .svg and .pdf work too).")
@click.option("--metric", "metrics", multiple=True, metavar="NAME",
              help="Plot this series instead of the defaults (repeatable); "
                   "`accuracy` means train.accuracy and val.accuracy.")
@click.option("--base", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where spec names are looked up: <base>/<spec>/<run-id>.")
def plot_command(runs, output, metrics, base):
    """Plot loss and the gate metrics of one or more runs against steps.

    RUN is a run directory, or a spec name (or .train file) meaning its latest
    run; several runs are overlaid. A sweep's folder (runs/SPEC/sweeps/NAME, or
    SPEC/sweeps/NAME under --base) draws its objective against trial number
    above its trials' curves. Phase promotions are dotted vertical lines,
    gate thresholds dash-dot horizontal ones. Needs matplotlib:
    pip install 'specrun[plot]'.

    \b
    Example:
      specrun plot builtin_rule -o loss.png
      specrun plot runs/builtin_rule/RUN_A runs/builtin_rule/RUN_B --metric accuracy
      specrun plot builtin_rule/sweeps/sweep -o sweep.png
    """
    from specrun.cli.plot import PlotError, PlotUnavailable, load_healthy, plot_runs, run_labels
    from specrun.cli.runs import resolve_run
    from specrun.cli.sweep_runs import find_sweep, read_sweep

    sweep = find_sweep(runs[0], base) if len(runs) == 1 else None
    if sweep is not None:
        from specrun.cli.sweep_plot import plot_sweep

        try:
            written, warnings = plot_sweep(read_sweep(sweep), output, list(metrics))
        except (PlotUnavailable, PlotError) as exc:
            raise click.ClickException(str(exc)) from None
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        click.echo(f"wrote {written}")
        return
    try:
        dirs = [resolve_run(ref, base) for ref in runs]
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    loaded, skipped = load_healthy(dirs, run_labels(dirs))
    if not loaded:
        raise click.ClickException("nothing to plot: " + "; ".join(skipped))
    try:
        written, warnings = plot_runs(loaded, output, list(metrics))
    except (PlotUnavailable, PlotError) as exc:
        raise click.ClickException(str(exc)) from None
    for warning in skipped + warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {written}")


# ---- export ------------------------------------------------------------------------------

@click.command("export")
@click.argument("run", metavar="RUN", shell_complete=complete_runs)
@click.option("--which", type=click.Choice(["latest", "final", "best"]), default="latest", show_default=True,
              help="The checkpoint: the newest complete one, the final one, or the best one.")
@click.option("-o", "--output", type=click.Path(file_okay=False),
              help="Folder to write model.safetensors and model.json into (default RUN/export).")
@click.option("--base", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Where spec names are looked up: <base>/<spec>/<run-id>.")
def export_command(run, which, output, base):
    """Export a run's trained model: weights as safetensors, and what rebuilds the model.

    RUN is a run directory, or a spec name (or .train file) meaning its latest run.
    Load the export in Python with specrun.load(FOLDER): the model, in eval mode,
    rebuilt from the spec through the catalog (no pickle is read).

    \b
    Example:
      specrun export builtin_rule --which best -o exported/rule
      python -c "import specrun; print(specrun.load('exported/rule'))"
    """
    from specrun import api

    try:
        api.require_torch()
    except api.TorchMissing as exc:
        raise click.ClickException(str(exc)) from None
    from specrun.engine.export import ExportError

    try:
        run_dir = api.find_run(run, base)
        done = api.export(run_dir, output or Path(run_dir) / "export", which)
    except (FileNotFoundError, ExportError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"exported {done.checkpoint} (step {done.step}) to {done.weights} and {done.manifest.name}")
    from specrun.engine.sinks.mlflow import attach_export

    note = attach_export(run_dir, done.weights.parent, base)  # None: the run had no MLflow tracker
    if note:
        click.echo(note)


# ---- new ---------------------------------------------------------------------------------

@click.command("new")
@click.argument("name")
@click.option("--from", "reference", required=True, metavar="SPEC", shell_complete=complete_references,
              help="The spec to start from: a .train file or a reference spec name from specs/.")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the new spec (default specs/NAME.train).")
def new_command(name, reference, output):
    """Start a new spec from an existing one, comments and profiles kept.

    The copy differs only in its `spec NAME` line; it must validate, and an
    existing file is never overwritten.

    \b
    Example:
      specrun new my_rule --from builtin_rule
      specrun new sha_wide --from specs/sha256_bitnet.train -o experiments/sha_wide.train
    """
    from specrun.cli.newspec import NewSpecError, new_spec

    try:
        path = new_spec(name, reference, output)
    except NewSpecError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {exc.filename or output}: {exc.strerror or exc}") from None
    except SpecError as err:
        click.echo(err.render(), err=True)
        click.echo("the new spec would not validate; nothing written", err=True)
        sys.exit(1)
    click.echo(f"wrote {path}")


COMMANDS = (runs_command, plot_command, export_command, new_command)
