"""``specrun sweep``: many runs of one spec, searched by Optuna (docs/sweeps.md).

The spec is checked (its sweep block choice by choice) before Optuna is imported;
each trial is an ordinary run directory under runs/<spec>/sweeps/<name>/.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys

import click

from specrun.spec.diagnostics import SpecError


@click.command("sweep")
@click.argument("spec", type=click.Path())
@click.option("--profile", "-p", help="Apply a profile defined in the spec (its sweep settings too).")
@click.option("--set", "sets", multiple=True, metavar="PATH=VALUE", help="Override a setting (repeatable).")
@click.option("--trials", type=click.IntRange(min=1), help="The budget in trials (sweep.trials); "
              "a sweep that has run some goes on up to this many.")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials at once, each in its own process, on one study.")
@click.option("--name", help="The sweep's name (default the profile's, else `sweep`): "
              "runs/<spec>/sweeps/<name>. Another name starts another sweep.")
@click.option("--storage", envvar="SPECRUN_SWEEP_STORAGE", metavar="URL",
              help="An Optuna storage URL shared by several machines (postgresql://user@host/db); "
                   "default sweep.storage, else an SQLite file in the sweep's folder. "
                   "Also $SPECRUN_SWEEP_STORAGE, to keep a password out of the spec.")
@click.option("--base", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The runs folder.")
@click.option("--summary", is_flag=True, help="Run nothing: print the best trial and its settings as --set flags.")
@click.option("--worker", type=int, hidden=True)  # a process started by --jobs
def sweep_command(spec, profile, sets, trials, jobs, name, storage, base, summary, worker):
    """Run a sweep: trials of SPEC with the settings its sweep block searches.

    Optuna chooses each trial's settings (TPE unless the block says otherwise);
    a `prune when` gate or the median pruner stops a poor trial early. Each trial
    is a normal run directory, named by its settings. Interrupted, the same
    command continues the sweep: finished trials are not run again, and the one
    cut short continues from its checkpoint. Needs Optuna: pip install 'specrun[sweep]'.

    \b
    Example:
      specrun sweep specs/builtin_rule.train --trials 12 --jobs 2
      specrun sweep specs/builtin_rule.train --summary
    Exit 0 when the budget is spent, 1 on a bad spec or failing trials, 130/143 interrupted.
    """
    from specrun.sweep.study import OptunaMissing, SweepRefused

    job = _job(spec, profile, sets, trials, name, storage, base)
    try:
        if summary:
            sys.exit(_summary(job))
        if worker is not None or jobs == 1:
            sys.exit(_work(job, worker or 0, header=worker is None))
        sys.exit(_parallel(spec, profile, sets, trials, name, storage, base, jobs, job))
    except (OptunaMissing, SweepRefused) as exc:
        raise click.ClickException(str(exc)) from None


def _job(spec, profile, sets, trials, name, storage, base):
    from specrun.spec.check import check
    from specrun.spec.parse import parse, read_source
    from specrun.spec.sweep import definition
    from specrun.sweep import layout
    from specrun.sweep.study import identity
    from specrun.sweep.worker import SweepJob

    overrides = tuple(sets) + ((f"sweep.trials={trials}",) if trials else ())
    try:
        doc = parse(read_source(spec), spec)
        checked = check(doc, profile, overrides)
    except SpecError as err:
        click.echo(err.render(), err=True)
        sys.exit(1)
    sweep = definition(checked.data)
    if sweep is None:
        raise click.ClickException(f"{spec} has no sweep block: add one, e.g.\n"
                                   "  sweep {\n    minimize val.loss\n    optimizer.lr log 1e-4..1e-2\n  }\n"
                                   "(docs/sweeps.md)")
    world = (checked.data.get("distributed") or {})
    if world.get("nproc_per_node", 1) * world.get("nnodes", 1) > 1:
        raise click.ClickException("a sweep runs each trial in one process; set distributed.nproc_per_node 1 "
                                   "(--set distributed.nproc_per_node=1) and use --jobs for trials at once")
    name = name or profile or "sweep"
    if not name.replace("-", "_").isidentifier():
        raise click.BadParameter(f"{name!r}: letters, digits, _ and -", param_hint="--name")
    folder = layout.sweep_dir(base, checked.name, name)
    url = storage or sweep.storage or layout.default_storage(folder)
    # The run's identity with the trial's own --set options left out: they are what the sweep varies.
    ident = identity(sweep, checked.hash)
    return SweepJob(doc, profile, tuple(sets), sweep, name, f"{checked.name}.{name}", folder, url, ident,
                    int(checked.data.get("seed", 0)))


def _say(text: str) -> None:
    click.echo(text)


def _work(job, worker: int, header: bool) -> int:
    from specrun.sweep import layout
    from specrun.sweep.worker import work

    if header:
        _header(job)
    layout.write_sweep(job.folder, _sweep_info(job))
    try:
        code = work(job, worker, _say)
    except KeyboardInterrupt:  # between trials: a trial asked for and not begun is retried next time
        click.echo("interrupted between trials; `specrun sweep` again continues the sweep", err=True)
        return 130
    except Exception as exc:  # the study's database failing under us: say so, no traceback
        if not type(exc).__module__.startswith(("sqlalchemy", "optuna")):
            raise
        raise click.ClickException(f"the study's storage failed: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    if header:
        _summary(job)
    return code


def _sweep_info(job) -> dict:
    from specrun.sweep import layout

    sw = job.sweep
    return {"spec": job.doc.path, "name": job.name, "study": job.study_name, "profile": job.profile,
            "overrides": list(job.overrides), "metric": sw.metric, "direction": sw.direction,
            "trials": sw.trials, "sampler": sw.sampler, "pruner": sw.pruner,
            "prune": str(sw.prune) if sw.prune else None,
            "dimensions": {d.path: d.describe() for d in sw.dimensions},
            "storage": layout.shown_storage(job.storage)}


def _header(job) -> None:
    from specrun.sweep import layout
    from specrun.sweep.study import budget_of

    sw = job.sweep
    dims = ", ".join(f"{d.path} {d.describe()}" for d in sw.dimensions)
    click.echo(f"sweep {job.folder}: {sw.direction} {sw.metric} over {dims}; {budget_of(sw)} trials, "
               f"sampler {sw.sampler}; study in {layout.shown_storage(job.storage)}")


def _parallel(spec, profile, sets, trials, name, storage, base, jobs: int, job) -> int:
    """``jobs`` worker processes on one study; signals reach them, the summary comes after."""
    from specrun.sweep import layout
    from specrun.sweep.study import open_study

    _header(job)
    layout.write_sweep(job.folder, _sweep_info(job))
    open_study(job.sweep, job.study_name, job.storage, job.seed, 0, job.identity)  # tables made once, here
    cmd = [sys.executable, "-m", "specrun.cli", "sweep", spec, "--base", base, "--name", job.name]
    cmd += (["--profile", profile] if profile else []) + [f"--set={s}" for s in sets]
    cmd += ([f"--trials={trials}"] if trials else []) + ([f"--storage={storage}"] if storage else [])
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))  # no oversubscription
    children = [subprocess.Popen(cmd + ["--worker", str(k)], env=env) for k in range(jobs)]

    def forward(signum, frame):  # a terminal's Ctrl+C reached them already; SIGTERM saves as well
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _summary(job)
    interrupted = [c for c in codes if c >= 128]
    return interrupted[0] if interrupted else max(codes)


def _summary(job) -> int:
    from specrun.sweep import layout
    from specrun.sweep import study as st

    local = job.storage == layout.default_storage(job.folder)
    found = None if local and not (job.folder / "study.db").exists() else st.load(job.study_name, job.storage)
    if found is None:
        click.echo(f"no sweep {job.name} of {job.doc.path} yet ({job.folder})", err=True)
        return 1
    counts = st.tally(found)
    told = ", ".join(f"{n} {state}" for state, n in counts.items()) or "none yet"
    click.echo(f"{sum(counts.values())} trials (budget {st.budget_of(job.sweep)}): {told}")
    best = st.best_trial(found)
    if best is None:
        click.echo("no trial has finished yet")
        return 0
    params = st.decoded(job.sweep.dimensions, best.params)
    from specrun.spec.sweep import set_option

    where = best.user_attrs.get("run_dir", "")
    click.echo(f"best: trial {best.number}, {job.sweep.metric} {best.value:.4g}" + (f", {where}" if where else ""))
    click.echo(" ".join(f"--set {shlex.quote(set_option(p, v))}" for p, v in params.items()))
    return 0
