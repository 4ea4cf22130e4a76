"""A sweep worker: ask the study for a trial, run it, tell the study how it went; repeat.

Reads top to bottom: retry the trials whose worker died, stop when the budget is
spent, ask, run, tell. Several workers run this loop at once on one study (``--jobs``
starts them as processes; other machines join through a shared storage URL). An
interrupt leaves the running trial saved and marked running: the next launch finds its
process gone and runs it again from its checkpoint, in its own folder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from specrun.spec.sweep import Sweep, set_option
from specrun.spec.values import to_json
from specrun.sweep import layout
from specrun.sweep import study as st
from specrun.sweep.trial import TrialRun, Watch, can_continue, objective, trial_plan

MAX_FAILURES_IN_A_ROW = 3  # a sweep whose every trial fails is failing for one reason: stop


@dataclass
class SweepJob:
    """Everything a worker needs to know about the sweep it works on."""

    doc: object  # the parsed spec
    profile: str | None
    overrides: tuple
    sweep: Sweep
    name: str  # the sweep's name: runs/<spec>/sweeps/<name>
    study_name: str
    folder: Path
    storage: str
    identity: str
    seed: int


def work(job: SweepJob, worker: int, say) -> int:
    """Run trials until the budget is spent. Returns an exit code (130/143: interrupted)."""
    from specrun.engine.execute import Options, execute
    from specrun.spec.diagnostics import SpecError

    study = st.open_study(job.sweep, job.study_name, job.storage, job.seed, worker, job.identity)
    budget, failures = st.budget_of(job.sweep), 0
    while True:
        st.reclaim_stale(study, say)
        if st.spent(study) >= budget and not st.waiting(study):
            return 0
        trial = study.ask()
        if "retry_of" not in trial.user_attrs and st.over_budget(study, trial, budget):
            trial.set_user_attr("unused", True)  # another worker took the last place first
            study.tell(trial, state=st.optuna().trial.TrialState.FAIL)
            return 0
        st.claim(study, trial)
        params = st.suggest(trial, job.sweep.dimensions)
        run = TrialRun(trial.number, params, _run_dir(job, trial, params))
        try:
            plan = trial_plan(job.doc, job.profile, job.overrides, run, job.sweep, job.name)
        except SpecError as err:  # the sweep was checked choice by choice: a combination broke it
            _tell(study, trial, run, "failed", None, err.render().splitlines()[0], job, say)
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                return 1
            continue
        if not can_continue(plan, run.run_dir):  # cut short before its first checkpoint: begin afresh
            run.run_dir = _fresh(run.run_dir)
        trial.set_user_attr("run_dir", str(run.run_dir))
        layout.write_trial(run.run_dir, _trial_info(job, run, "running"))
        say(f"trial {trial.number} [{_shown(params)}]: {run.run_dir}")
        started = time.time()
        watch = Watch(job.sweep, trial, lambda: st.beat(study, trial._trial_id))
        outcome = execute(plan, Options(run_dir=str(run.run_dir), quiet=True, watch=watch))
        if outcome.status == "interrupted":
            trial.set_user_attr("interrupted", True)  # saved: the next launch retries it at once
            layout.write_trial(run.run_dir, _trial_info(job, run, "interrupted", message=outcome.message))
            say(f"trial {trial.number} {outcome.message}; `specrun sweep` again continues the sweep")
            return outcome.code
        value = objective(run.run_dir, job.sweep.metric) if outcome.status == "finished" else None
        state, message = outcome.status, outcome.message
        if state == "finished" and value is None:
            state, message = "failed", f"{job.sweep.metric} was never measured ({outcome.message})"
        _tell(study, trial, run, state, value, message, job, say, time.time() - started, outcome.step)
        failures = failures + 1 if state == "failed" else 0
        if failures >= MAX_FAILURES_IN_A_ROW:
            say(f"{failures} trials in a row failed; stopping the sweep (the last: {message})")
            return 1


def _shown(params: dict) -> str:
    return " ".join(f"{p}={v:.4g}" if isinstance(v, float) else set_option(p, v) for p, v in params.items())


def _run_dir(job: SweepJob, trial, params: dict) -> Path:
    """The folder of a retried trial, or a new one named by the settings."""
    earlier = trial.user_attrs.get("run_dir")
    if isinstance(earlier, str) and Path(earlier).resolve().parent == job.folder.resolve():
        return Path(earlier)
    return job.folder / layout.trial_name(trial.number, params)


def _fresh(run_dir: Path) -> Path:
    for n in range(2, 1000):
        candidate = run_dir.with_name(f"{run_dir.name}-{n}")
        if not candidate.exists():
            return candidate
    raise RuntimeError(f"no free folder beside {run_dir}")


def _trial_info(job: SweepJob, run: TrialRun, state: str, value=None, message: str = "",
                seconds: float | None = None, step: int | None = None) -> dict:
    return {"sweep": job.name, "number": run.number, "params": to_json(run.params), "sets": list(run.sets),
            "state": state, "metric": job.sweep.metric, "direction": job.sweep.direction,
            "objective": value, "message": message, "seconds": seconds, "step": step}


def _tell(study, trial, run: TrialRun, state: str, value, message: str, job: SweepJob, say,
          seconds: float | None = None, step: int | None = None) -> None:
    states = st.optuna().trial.TrialState
    layout.write_trial(run.run_dir, _trial_info(job, run, state, value, message, seconds, step))
    trial.set_user_attr("message", message)
    if state == "finished":
        study.tell(trial, value)
        say(f"trial {trial.number} finished: {job.sweep.metric} {value:.4g} ({step} steps, {seconds:.0f}s)")
    elif state == "pruned":
        study.tell(trial, state=states.PRUNED)
        say(f"trial {trial.number} {message}")
    else:
        study.tell(trial, state=states.FAIL)
        say(f"trial {trial.number} failed: {message}")
