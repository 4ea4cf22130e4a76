"""The Optuna study behind a sweep: storage, sampler, pruner, budget and stale trials.

Trials are asked for and told one at a time (ask/tell), so each is an ordinary run
in between. Several workers (processes here, or machines sharing an RDB storage) work
on one study; the storage is the only thing they share:

- the budget counts every trial asked for, less those given up to be retried and
  those asked for past the budget (a race of workers: dropped, marked ``unused``);
- a trial whose worker died is retried with the same settings in the same run
  directory (it resumes from its checkpoint): on this machine as soon as its process
  is gone, elsewhere once its heartbeat is ``GRACE_S`` old. Claiming it is one state
  change in the storage, so two workers never both retry it.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

from specrun.spec.sweep import Dimension, Sweep

GRACE_S = 1800.0  # a trial on another machine silent this long is taken for dead
BEAT_S = 30.0  # how often a running trial says it is alive


class OptunaMissing(RuntimeError):
    pass


class SweepRefused(RuntimeError):
    """The sweep cannot go on as asked; the message says why and what to do."""


def optuna():
    try:
        import optuna as module
    except ImportError:
        raise OptunaMissing("specrun sweep needs Optuna: pip install 'specrun[sweep]' "
                            "(or pip install optuna)") from None
    module.logging.set_verbosity(module.logging.WARNING)
    return module


def identity(sweep: Sweep, spec_hash: str) -> str:
    """What makes two launches one sweep: the spec and the search, not the budget or storage."""
    text = json.dumps([spec_hash, sweep.metric, sweep.direction, sweep.sampler, sweep.pruner,
                       str(sweep.prune) if sweep.prune else None,
                       [d.describe() + d.path for d in sweep.dimensions]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def storage(url: str, attempts: int = 5):
    opt = optuna()
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(attempts):
        try:
            return opt.storages.RDBStorage(url, engine_kwargs=kwargs)
        except ImportError as exc:  # postgresql:// without its driver
            raise SweepRefused(f"storage {url.split(':', 1)[0]}: {exc}; install the database driver: for "
                               "postgresql://, pip install 'psycopg[binary]' (or name yours in the URL, "
                               "postgresql+psycopg2://...)") from None
        except Exception as exc:  # unreachable server, bad URL; or two workers creating the tables at once
            if attempt == attempts - 1 or "IntegrityError" not in type(exc).__name__ + str(exc):
                raise SweepRefused(f"cannot open the study's storage: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0]}") from None
            time.sleep(0.5 * (attempt + 1))


def open_study(sweep: Sweep, study_name: str, url: str, seed: int, worker: int, ident: str):
    """The study (created on first use); refuses one begun with another definition."""
    opt = optuna()
    store = storage(url)
    budget = budget_of(sweep)
    probe = opt.create_study(study_name=study_name, storage=store, direction=sweep.direction,
                             load_if_exists=True)
    known = probe.user_attrs.get("identity")
    if known is None:
        probe.set_user_attr("identity", ident)
    elif known != ident:
        raise SweepRefused(f"sweep {study_name} was begun with another spec or search; continue it with "
                           "the spec it was begun with, or start another with --name NAME")
    done = len(probe.get_trials(deepcopy=False))
    # Each launch and worker its own stream: a resumed sweep must not replay its first trials.
    sampler_seed = (seed * 1_000_003 + done * 7919 + worker) % 2**32
    return opt.load_study(study_name=study_name, storage=store, sampler=_sampler(opt, sweep, budget, sampler_seed),
                          pruner=_pruner(opt, sweep, budget))


def budget_of(sweep: Sweep) -> int:
    grid = sweep.grid_size if sweep.sampler == "grid" else None
    return min(sweep.trials, grid) if grid else sweep.trials


def _sampler(opt, sweep: Sweep, budget: int, seed: int):
    if sweep.sampler == "grid":
        return _grid_sampler(opt)({d.path: list(encoded(d)) for d in sweep.dimensions}, seed=seed)
    if sweep.sampler == "random":
        return opt.samplers.RandomSampler(seed=seed)
    # Startup trials are random; a small budget keeps most of its trials for the model.
    return opt.samplers.TPESampler(seed=seed, n_startup_trials=max(3, min(10, budget // 3)),
                                   constant_liar=True)


def _grid_sampler(opt):
    class Grid(opt.samplers.GridSampler):
        def after_trial(self, study, trial, state, values):
            """GridSampler stops study.optimize() when the grid is done; ask/tell has no optimize()
            to stop (Optuna raises): the budget, capped at the grid's size, ends the sweep."""

    return Grid


def _pruner(opt, sweep: Sweep, budget: int):
    if sweep.pruner == "median":
        return opt.pruners.MedianPruner(n_startup_trials=max(1, min(5, budget // 4)))
    return opt.pruners.NopPruner()


# ---- settings ----------------------------------------------------------------------------------

_SCALARS = (bool, int, float, str)


def encoded(dim: Dimension) -> tuple:
    """The choices as Optuna stores them: scalars as they are, others (lists, 100 steps,
    ranges) as their spec text."""
    from specrun.spec.fmt import data_value

    return tuple(c if isinstance(c, _SCALARS) else data_value(c) for c in dim.choices)


def suggest(trial, dims: tuple[Dimension, ...]) -> dict:
    """The trial's value for each dimension (a retried trial gets its first values back)."""
    chosen = {}
    for dim in dims:
        if dim.choices is not None:
            pick = trial.suggest_categorical(dim.path, list(encoded(dim)))
            chosen[dim.path] = dim.choices[list(encoded(dim)).index(pick)]
        elif dim.integer:
            chosen[dim.path] = trial.suggest_int(dim.path, dim.lo, dim.hi, log=dim.log)
        else:
            chosen[dim.path] = trial.suggest_float(dim.path, float(dim.lo), float(dim.hi), log=dim.log)
    return chosen


# ---- budget and stale trials -------------------------------------------------------------------

def counted(trial) -> bool:
    return not (trial.user_attrs.get("reclaimed") or trial.user_attrs.get("unused"))


def spent(study) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if counted(t))


def waiting(study) -> bool:
    """Whether a trial waits to be run (a retry): it was counted when it was first asked for."""
    return bool(study.get_trials(deepcopy=False, states=(optuna().trial.TrialState.WAITING,)))


def over_budget(study, trial, budget: int) -> bool:
    """Whether ``trial`` came after the budget was used up (several workers asked at once)."""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number and counted(t)]
    return len(earlier) >= budget


def claim(study, trial) -> None:
    """Say which process runs ``trial``, so that others can tell when it died."""
    for key, value in (("host", socket.gethostname()), ("pid", os.getpid()), ("heartbeat", time.time())):
        trial.set_user_attr(key, value)


def beat(study, trial_id: int) -> None:
    study._storage.set_trial_user_attr(trial_id, "heartbeat", time.time())


def reclaim_stale(study, say) -> int:
    """Retry the running trials whose worker is gone; returns how many."""
    from specrun.engine.rundir import pid_alive

    opt = optuna()
    running = opt.trial.TrialState.RUNNING
    me, now, retried = socket.gethostname(), time.time(), 0
    for t in study.get_trials(deepcopy=False, states=(running,)):
        attrs = t.user_attrs
        if attrs.get("pid") == os.getpid() and attrs.get("host") == me and not attrs.get("interrupted"):
            continue
        started = t.datetime_start.timestamp() if t.datetime_start else now
        last = attrs.get("heartbeat") if isinstance(attrs.get("heartbeat"), (int, float)) else started
        dead_here = attrs.get("host") == me and not pid_alive(attrs.get("pid"), me)
        if not (attrs.get("interrupted") or dead_here or now - last > GRACE_S):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "reclaimed", True)
        try:
            study._storage.set_trial_state_values(t._trial_id, opt.trial.TrialState.FAIL)
        except Exception:  # another worker claimed it first (the state is no longer running)
            continue
        study.enqueue_trial(t.params, user_attrs={k: attrs[k] for k in ("run_dir",) if k in attrs}
                            | {"retry_of": t.number})
        why = "interrupted" if attrs.get("interrupted") else "its process is gone" if dead_here else "silent"
        say(f"trial {t.number} was cut short ({why}): "
            "it runs again from its last checkpoint")
        retried += 1
    return retried


# ---- reading the outcome -------------------------------------------------------------------------

def decoded(dims: tuple[Dimension, ...], params: dict) -> dict:
    """A finished trial's params as plain spec values (choices stored as text come back)."""
    out = {}
    for dim in dims:
        if dim.path not in params:
            continue
        value = params[dim.path]
        if dim.choices is not None and value in encoded(dim):
            value = dim.choices[list(encoded(dim)).index(value)]
        out[dim.path] = value
    return out


def tally(study) -> dict:
    """How many trials ended how (retried and unused ones left out)."""
    opt = optuna()
    names = {opt.trial.TrialState.COMPLETE: "finished", opt.trial.TrialState.PRUNED: "pruned",
             opt.trial.TrialState.FAIL: "failed", opt.trial.TrialState.RUNNING: "running",
             opt.trial.TrialState.WAITING: "waiting"}
    out: dict = {}
    for t in study.get_trials(deepcopy=False):
        if counted(t):
            out[names[t.state]] = out.get(names[t.state], 0) + 1
    return out


def best_trial(study):
    """The best finished trial, or None."""
    opt = optuna()
    done = study.get_trials(deepcopy=False, states=(opt.trial.TrialState.COMPLETE,))
    if not done:
        return None
    pick = min if study.direction == opt.study.StudyDirection.MINIMIZE else max
    return pick(done, key=lambda t: t.value)


def load(study_name: str, url: str):
    opt = optuna()
    try:
        return opt.load_study(study_name=study_name, storage=storage(url))
    except KeyError:
        return None
