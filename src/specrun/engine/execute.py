"""execute: a Plan -> a finished (or failed, or interrupted) run directory.

Decides where the run lives (a new directory, or the latest run of the spec
when the spec says ``resume latest``), refuses to resume across a spec change
unless told to, wires signals, sets up, resumes, trains, and always closes the
task (its worker processes and shared memory) whatever happens.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from specrun.components.api import ComponentError
from specrun.engine.checkpoint import Checkpointer, CheckpointError
from specrun.engine.console import Console
from specrun.engine.device import Unsupported
from specrun.engine.loop import Interrupt, Outcome, RunFailed, end_background_save, train
from specrun.engine.lock import RunLocked
from specrun.engine.rundir import (CsvLog, RunDir, claim_new_run, latest_run, outputs_outside, read_status,
                                   runs_root)
from specrun.engine.sinks import open_log_sinks
from specrun.engine.sinks.base import SinkUnavailable
from specrun.engine.sinks.callback import Callback
from specrun.engine.sinks.csv import MetricsCsv, spec_csv
from specrun.engine.setup import SetupError, setup
from specrun.engine.sharded import ShardedStore, sharded
from specrun.engine.state import ResumeRefused, restore
from specrun.engine.summary import SummarySink, summarize
from specrun.engine.store import FileStore
from specrun.plan import Plan, code_changes, plan_changes
from specrun.sections import ProfilerPolicy


@dataclass
class Options:
    run_dir: str | None = None
    new: bool = False
    allow_spec_change: bool = False
    quiet: bool = False
    runs_base: str = "runs"
    profile_trace: bool = False  # --profile-trace: torch.profiler regardless of the spec
    on_metrics: object = None  # callable(row: dict) for each metrics row (the Python API's callback)
    watch: object = None  # watch(run) -> why to stop here, or None: a sweep's pruning (loop.train)
    progress_every: float | None = None  # --progress: seconds between plain progress lines off a terminal


class SpecChanged(RuntimeError):
    """Resuming would mix two different experiments in one run directory."""


def choose_run_dir(plan: Plan, opts: Options, say,
                   main: bool = True) -> tuple[RunDir, Path | None]:
    """(run directory, where to resume from or None).

    A new run gets a directory of its own. An existing one (``--run-dir`` naming
    it, or the latest run of the spec under ``resume latest``) is continued, never
    restarted over: its checkpoints and logs are the user's.
    """
    resume, ck_dir = plan.checkpoint.resume, plan.checkpoint.dir
    explicit = Path(resume) if resume not in ("latest", "none") else None
    if opts.run_dir:
        path = Path(opts.run_dir)
    elif resume == "latest" and not opts.new:
        path = latest_run(plan.name, opts.runs_base, plan.profile)
    else:
        path = None
    if path is None:
        return _locked(RunDir(claim_new_run(runs_root(plan.name, opts.runs_base)), main, ck_dir)), explicit
    if path.is_symlink() and not path.exists():
        raise SpecChanged(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist: "
                          "create that folder, or choose another --run-dir")
    if not (path / "plan.json").exists():
        return _locked(RunDir(path, main, ck_dir)), explicit
    if resume == "none" or explicit is not None:
        raise SpecChanged(f"{path} already holds a run and this spec says `resume {resume}`: choose another "
                          "--run-dir, or continue it with --set checkpoint.resume=latest")
    run_dir = _locked(RunDir(path, main, ck_dir))  # before reading: only the holder mends an index
    try:
        def warn(message: str) -> None:
            say(f"warning: {message}")
            run_dir.event("warning", 0, message=message)

        store = ShardedStore(path / ck_dir) if sharded(plan) else None
        has_checkpoint = bool(Checkpointer.of(path / ck_dir, plan.checkpoint,
                                              repair=main, store=store).candidates(warn))
        old_hash = _spec_hash_of(path)
        if not has_checkpoint:
            if old_hash == plan.spec_hash:
                # Killed before its first checkpoint (a preempted cluster job, requeued with the same
                # command): start again from step 0 here. What the earlier attempt wrote stays, marked:
                # its rows carry an earlier `segment`, and a `restart` event says where this one began.
                run_dir.restart_segment = _next_segment(path)
                say(f"{path} has no checkpoint to continue from: starting again from step 0 in it "
                    f"(attempt {run_dir.restart_segment + 1}; the earlier rows and events are kept)")
                return run_dir, explicit
            run_dir.release()
            if opts.run_dir:
                raise SpecChanged(f"{path} holds a run of another spec with no checkpoint to continue from; "
                                  "choose another --run-dir (nothing in that one is overwritten)")
            say(f"the latest run {path} has no checkpoint to continue from and its spec differs: starting a new run")
            return _locked(RunDir(claim_new_run(runs_root(plan.name, opts.runs_base)), main, ck_dir)), explicit
        for line in code_changes(_old_plan(path), plan):
            warn(line)
        if old_hash != plan.spec_hash:
            _accept_spec_change(run_dir, plan, opts, say)
        return run_dir, path / ck_dir
    except BaseException:
        run_dir.release()  # refused: the lock goes with the answer
        raise


def _accept_spec_change(run_dir: RunDir, plan: Plan, opts: Options, say) -> None:
    """Refuse to mix two experiments in one run directory, unless told to: then say what changed."""
    lines = plan_changes(_old_plan(run_dir.path) or {}, plan) or ["(layout only)"]
    declared = plan.checkpoint.on_spec_change == "resume"  # savant's fallback
    if not (opts.allow_spec_change or declared):
        raise SpecChanged(f"the spec changed since run {run_dir.path} began:\n  " + "\n  ".join(lines)
                          + "\nresume anyway with --allow-spec-change, or start fresh with --new")
    why = "--allow-spec-change" if opts.allow_spec_change else "checkpoint.on_spec_change resume"
    say(f"resuming across a spec change ({why}):\n  " + "\n  ".join(lines))
    _record_spec_change(run_dir, plan, lines)


def _locked(run_dir: RunDir) -> RunDir:
    """The run directory, with its one-writer lock taken (rank 0; the others only read)."""
    if run_dir.main:
        run_dir.path.mkdir(parents=True, exist_ok=True)
        run_dir.take_lock()
    return run_dir


def _old_plan(path: Path) -> dict | None:
    try:
        return json.loads((path / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: nothing to compare the code with


def _spec_hash_of(path: Path) -> str | None:
    try:
        found = json.loads((path / "plan.json").read_text(encoding="utf-8")).get("spec_hash")
    except (OSError, ValueError, AttributeError):
        return None  # unreadable: never taken for the same spec
    return found if isinstance(found, str) else None


def _next_segment(path: Path) -> int:
    """One more than the last launch recorded in run.json (0 when it says nothing usable)."""
    last = read_status(path).get("segment")
    return last + 1 if isinstance(last, int) and not isinstance(last, bool) and 0 <= last < 10**6 else 1


def _record_spec_change(run_dir: RunDir, plan: Plan, lines: list[str]) -> None:
    """Keep the old spec and plan beside the new ones, and say what changed in the events."""
    import time

    if not run_dir.main:
        return  # rank 0's job

    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("spec.train", "plan.json"):
        old = run_dir.path / name
        if old.exists():
            old.rename(old.with_name(f"{old.stem}.before-{stamp}{old.suffix}"))
    run_dir.create(plan.spec_text, plan.to_json())
    run_dir.event("spec_change", 0, changes=lines, previous=f"spec.before-{stamp}.train")


def metric_columns(run) -> list[str]:
    from specrun.spec import catalog as cat

    task = list(getattr(run.task, "metric_names", ()))
    model = cat.lookup("model", run.plan.components["model"]["type"])
    model_metrics = list(model.metrics) if model else []
    include = run.plan.log.include
    cols = ["step", "epoch", "segment"] + [f"phase.{a.name}" for a in run.plan.axes]
    cols += ["train.loss", "train.loss_mean", "train.grad_norm", "train.lr"] + [f"train.{m}" for m in task + model_metrics]
    if "perplexity" in include:
        cols.append("train.perplexity")
    if run.plan.validation:
        cols += ["val.loss"] + [f"val.{m}" for m in task + model_metrics]
        if "perplexity" in include and "perplexity" not in task:
            cols.append("val.perplexity")
    cols += ["skipped", "steps_per_s"]
    cols += [c for flag, c in (("tokens_per_second", "tokens_per_s"), ("ram", "ram_gb"),
                               ("gpu_memory", "gpu_peak_gb")) if flag in include]
    return list(dict.fromkeys(cols + ["time"]))  # a task may report perplexity itself


def _install_signals(interrupt: Interrupt):
    previous = {}

    def handler(signum, frame):
        if interrupt.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl+C: stop now, unsaved
        interrupt.signal = signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. inside a test runner thread)
            pass
    return previous


def execute(plan: Plan, opts: Options, dist=None) -> Outcome:
    main = dist is None or dist.rank == 0
    every = opts.progress_every if opts.progress_every is not None else plan.log.progress
    console = Console(quiet=opts.quiet, enabled=main, plain_every=every)
    opened = _open_run_dir(plan, opts, console, main, dist)
    if isinstance(opened, Outcome):
        return opened
    run_dir, resume_from = opened
    if main and plan.log.text:
        console.text_log = run_dir.path / plan.log.text
    interrupt = Interrupt()
    previous = _install_signals(interrupt)
    run = None
    try:
        run_dir.sinks.on_warning = lambda message: console.say(f"warning: {message}")
        open_log_sinks(plan, run_dir, opts.runs_base)  # TensorBoard, trackers: the spec's log block
        seen = run_dir.sinks.add(SummarySink())
        run = setup(plan, run_dir, console, dist)
        for note in run.precision.notes:
            console.say(f"note: {note}")
            run_dir.event("note", 0, message=note)
        _resume(run, resume_from, console, opts.allow_spec_change)
        _start_recording(run, opts, resumed=resume_from is not None)
        outcome = _with_profiler(run, opts, lambda: train(run, interrupt, opts.watch))
    except (RunFailed, SetupError, CheckpointError, SpecChanged, ResumeRefused, SinkUnavailable,
            Unsupported, ComponentError) as exc:
        outcome = Outcome("failed", 1, str(exc), run.counters.step if run else 0)
    except KeyboardInterrupt:
        outcome = Outcome("interrupted", 130, "interrupted twice: stopped without saving",
                          run.counters.step if run else 0)
    except OSError as exc:
        step = run.counters.step if run else 0
        outcome = _write_failed(exc, step) if exc.errno in WRITE_FAILURES else _crashed(exc, run_dir, main, step)
    except Exception as exc:  # a component's or our own bug: one line for the user, the trace on disk
        outcome = _crashed(exc, run_dir, main, run.counters.step if run else 0)
    finally:
        if run is not None:
            end_background_save(run)  # before the process group goes: its writes use it
            run.task.close()
        if dist is not None:
            dist.close()
        console.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if run is not None:
        outcome.summary = _summary(run, outcome, seen, run_dir)
    _record_end(run_dir, run, outcome)
    run_dir.sinks.close()
    run_dir.release()
    outcome.run_dir = str(run_dir.path)
    return outcome


def _open_run_dir(plan: Plan, opts: Options, console: Console, main: bool, dist):
    """(run directory, where to resume from), locked and created; or the Outcome that refuses it."""
    run_dir = None
    try:
        run_dir, resume_from = choose_run_dir(plan, opts, console.say, main)
        if dist is not None:  # sync: every rank chooses before rank 0 creates, else a late rank finds a "run"
            dist.barrier()
        if not (run_dir.path / "plan.json").exists():
            run_dir.create(plan.spec_text, plan.to_json())
        outside = outputs_outside(run_dir.path, plan)
        if outside:
            run_dir.release()
            return Outcome("failed", 1, outside[0], 0)
        return run_dir, resume_from
    except (SpecChanged, RunLocked) as exc:
        if run_dir is not None:
            run_dir.release()
        return Outcome("failed", 1, str(exc), 0)
    except OSError as exc:  # a read-only or full disk before anything ran: say where
        if run_dir is not None:
            run_dir.release()
        return Outcome("failed", 1, f"cannot create the run directory: {exc.strerror or exc}"
                                    + (f": {exc.filename}" if exc.filename else ""), 0)


def _start_recording(run, opts: Options, resumed: bool) -> None:
    """The run's own sinks (rank 0's), then its status and start event: what `specrun runs` reads."""
    run_dir = run.dir
    if run_dir.restart_segment is not None:
        run.counters.segment = run_dir.restart_segment
        run_dir.event("restart", 0, segment=run.counters.segment,
                      message="no checkpoint to continue from: started again from step 0; rows and "
                              "events before this one are an earlier attempt")
    if run.main:
        run_dir.sinks.add(MetricsCsv(CsvLog(run_dir.path / "metrics.csv", metric_columns(run))))
        if (extra := spec_csv(run)) is not None:
            run_dir.sinks.add(extra)
        if opts.on_metrics is not None:
            run_dir.sinks.add(Callback(opts.on_metrics))
    run_dir.set_status(status="running", spec=run.plan.name, started=read_status(run_dir.path).get("started")
                       or __import__("time").time(), step=run.counters.step,
                       phases=run.curriculum.phase_names(), segment=run.counters.segment)
    run_dir.event("start", run.counters.step, segment=run.counters.segment, resumed=resumed)


def _record_end(run_dir: RunDir, run, outcome: Outcome) -> None:
    """run.json's final status, the summary and end events; a full disk only adds to the message."""
    try:
        if run_dir.path.exists():
            run_dir.set_status(status=outcome.status, step=outcome.step, message=outcome.message,
                               phases=run.curriculum.phase_names() if run else {})
            if outcome.summary is not None:
                run_dir.event("summary", outcome.step, **outcome.summary)
            run_dir.event("end", outcome.step, status=outcome.status, message=outcome.message)
    except OSError as exc:  # a full disk even for a few hundred bytes: the console still says it
        outcome.message += f" (and run.json could not record it: {exc.strerror or exc})"


# A write the disk refused: the run stops cleanly (exit 1, run.json says why), its
# checkpoints as they were. Anything else is a bug, with its traceback kept on disk.
WRITE_FAILURES = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}


def _write_failed(exc: OSError, step: int) -> Outcome:
    where = f": {exc.filename}" if exc.filename else ""
    return Outcome("failed", 1, f"a write failed at step {step} ({exc.strerror or exc}{where}); the run stopped "
                                "there and its earlier checkpoints are intact: once the disk has room, the "
                                "same command continues from the latest", step)


def _crashed(exc: BaseException, run_dir: RunDir, main: bool, step: int) -> Outcome:
    import traceback

    where = run_dir.path / "error.txt"
    try:
        if main and run_dir.path.exists():
            where.write_text(traceback.format_exc(), encoding="utf-8")
    except OSError:
        where = "nowhere: the run directory cannot be written"
    return Outcome("failed", 1, f"{type(exc).__name__}: {exc} (traceback in {where})", step)


def _summary(run, outcome: Outcome, seen: SummarySink, run_dir: RunDir) -> dict | None:
    try:
        return summarize(run, outcome, seen, run_dir.path)
    except Exception as exc:  # the run's outcome stands; a summary that cannot be made is said, not raised
        try:
            run_dir.event("warning", outcome.step, message=f"no summary: {type(exc).__name__}: {exc}")
        except OSError:
            pass  # a full disk: the outcome below still reaches the console
        return None


def _resume(run, resume_from: Path | None, console: Console, allow_world_change: bool) -> None:
    if resume_from is None:
        return
    resume_phase = run.plan.checkpoint.resume_phase

    def warn(message: str) -> None:
        console.say(f"warning: {message}")
        run.dir.event("warning", 0, message=message)

    if resume_from.is_dir():
        found = run.checkpointer.load_latest(warn) if resume_from == run.checkpointer.dir else \
            Checkpointer.of(resume_from, run.plan.checkpoint, repair=run.main, store=_store_like(run, resume_from)
                            ).load_latest(warn)
        if found is None:
            raise CheckpointError(f"no loadable checkpoint in {resume_from}")
        state, path = found
    else:
        state, path = FileStore(resume_from.parent).load(resume_from.name), resume_from

    if path.resolve().parent != run.checkpointer.dir.resolve() and state.get("spec_hash") not in (None, run.plan.spec_hash):
        # The run's own checkpoints were checked against its spec already (choose_run_dir).
        warn(f"{path} was written under another spec (hash {state['spec_hash']}); going on under this one "
             f"({run.plan.spec_hash})")
    if state.get("precision") not in (None, run.precision.compute):
        warn(f"{path} was trained in {state['precision']}; this run computes in {run.precision.compute}")

    def reset(kind: str, message: str) -> None:
        warn(message)
        run.dir.event(kind, state["counters"]["step"], message=message)

    restore(run, state, resume_phase, reset, allow_world_change)
    run.counters.segment += 1
    names = run.curriculum.phase_names()
    console.say(f"resumed from {path} at step {run.counters.step}"
                + (f", phases {', '.join(f'{a}={p}' for a, p in names.items())}" if names else "")
                + (" (resume_phase start)" if resume_phase == "start" else ""))
    run.dir.event("resume", run.counters.step, checkpoint=str(path), phases=names,
                  resume_phase=resume_phase)


def _store_like(run, directory: Path):
    """The run's kind of checkpoint store, reading another directory (None: one file per checkpoint)."""
    store = run.checkpointer.store
    return ShardedStore(directory, store.template, store.dist) if isinstance(store, ShardedStore) else None


def _with_profiler(run, opts: Options, body):
    prof = run.plan.profiler or ProfilerPolicy()  # --profile-trace alone: the default schedule
    if not (prof.enabled or opts.profile_trace) or not run.main:
        return body()
    from specrun.engine.profiling import profiled

    return profiled(run, prof, body)
