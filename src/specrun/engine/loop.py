"""The training loop. Reads top to bottom; one optimizer step per iteration.

Per step, in this order:
  1. forward/backward over ``accumulate`` micro-batches (loss / count; under
     nonfinite.scope micro_batch a NaN micro-batch is dropped alone; under DDP
     only the last one's backward all-reduces)
  2. unscale (fp16), clip; a device-side flag: is the loss or the gradient norm non-finite?
  3. optimizer and scheduler step, skipped on the device when the flag is set (see
     step.optimizer_step), zero_grad(set_to_none=True); the step's numbers stay on the device
  4. did an epoch end? Where something reads them (a log row, validation, checkpoint, a
     gate on a train series), the pending steps' numbers come to the host in one transfer
     and go, step by step, into the skip count, the gate history and the log window
  5. validation, best checkpoint
  6. gates: curriculum promotion, switches, expectations, early stop
  7. memory guard, and the epoch's peak memory
  8. log row, then checkpoint (a kill between them loses nothing)
  9. console
Steps 5-9 happen on a skipped step too. A step before the next one on which anything can
fall (a log row, a check, a checkpoint, an epoch's end: timeline.next_decision) goes from 3
straight to 9, unless gates, a sweep or a background save look at every step. Nothing else
waits for the device: a step where nothing is decided costs no host-device synchronisation.
An interrupt (SIGINT/SIGTERM) is honoured between steps, never inside one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from specrun.spec import expr as ex
from specrun.engine import expectations
from specrun.engine.checkpoint import CheckpointError
from specrun.engine.guard import GB, format_bytes, used_bytes
from specrun.engine.readout import SKIP, Readout
from specrun.engine.setup import Run
from specrun.engine.state import snapshot
from specrun.engine.step import micro_step, optimizer_step, rescale_grads, unscale_and_clip
from specrun.engine.timeline import falls_due, next_decision
from specrun.engine.window import Window
from specrun.spec.printer import format_expr


class RunFailed(RuntimeError):
    """The run cannot go on; the message is the one line the user sees."""


@dataclass
class Outcome:
    status: str  # finished / pruned / failed / interrupted
    code: int
    message: str
    step: int
    run_dir: str | None = None  # filled in by execute once the run has a directory
    summary: dict | None = None  # execute's end-of-run summary (engine/summary.py), once set up


class Interrupt:
    """Set by the signal handler; read between steps."""

    def __init__(self):
        self.signal: int | None = None


# ---- helpers the loop calls ------------------------------------------------------------

def apply_phase_params(run: Run) -> None:
    """Give task, model and optimizer the merged parameters of the current phases."""
    merged = run.curriculum.merged()
    if merged.get("task"):
        run.task.set_params(merged["task"])
    if merged.get("model"):
        if not hasattr(run.model, "set_params"):
            raise RunFailed(f"curriculum sets model parameters but {type(run.model).__name__} has no set_params")
        run.model.set_params(merged["model"])
    opt = merged.get("optimizer") or {}
    if "lr" in opt:
        # Scale every group by the same ratio: optimizers with per-group rates (mugrokfast's
        # lr and muon_lr) keep their proportions.
        ratio = opt["lr"] / run.base_lr
        run.scheduler.base_lrs = [lr * ratio for lr in run.initial_lrs]
        step = run.scheduler.last_epoch
        for group, base, factor in zip(run.optimizer.param_groups, run.scheduler.base_lrs, run.scheduler.lr_lambdas):
            group["lr"] = base * factor(step)  # each group its own factor: eta_min floors differ
    for group in run.optimizer.param_groups:
        for key, value in opt.items():
            if key != "lr":
                group[key] = value


def _gate_scalars(run: Run) -> None:
    c, ctx = run.counters, run.history.context
    ctx.scalars["step"] = c.step
    ctx.scalars["micro_step"] = c.micro
    ctx.scalars["epoch"] = c.micro / run.per_epoch if run.per_epoch else 0.0
    ctx.scalars["lr"] = run.optimizer.param_groups[0]["lr"]
    ctx.scalars["run.progress"] = _run_progress(run)


def _run_progress(run: Run) -> float | None:
    """The share of the run done: steps of max_steps, else epochs of max_epochs."""
    plan = run.plan
    if plan.max_steps:
        return run.counters.step / plan.max_steps
    if plan.max_epochs and run.per_epoch:
        return run.counters.micro / (run.per_epoch * plan.max_epochs)
    return None


def _to_host(values: dict[str, torch.Tensor]) -> dict[str, float]:
    if not values:
        return {}
    names = list(values)
    scalars = [v if v.dtype == torch.float32 and v.dim() == 0 else v.detach().float().reshape(())
               for v in values.values()]
    # One stack + tolist: a single device->host transfer instead of one sync per metric.
    return dict(zip(names, torch.stack(scalars).tolist()))


def _save(run: Run, kind: str) -> None:
    read_back(run)  # counters, history and window as of this step
    _settle(run, wait=True)  # at most one background save in flight: the pending one first
    state = snapshot(run)  # every rank: gathering FSDP shards is a collective
    collective = getattr(run.checkpointer.store, "every_rank_writes", False)  # sharded: each rank writes
    if not (run.main or collective):
        return
    c = run.counters
    epoch = int(c.micro // run.per_epoch) if run.per_epoch else 0
    if run.checkpointer.background and kind != "final":  # checkpoint.async; the run's end never waits twice
        run.checkpointer.begin(state, kind, c.step, epoch)
        return
    _report(run, run.checkpointer.save(state, kind, c.step, epoch))


def _checkpoint(run: Run, due: bool) -> None:
    """The regular checkpoint when it is due; on the other steps, a background save
    (checkpoint.async) is committed as soon as every rank has written it."""
    if due:
        _save(run, "regular")
    elif run.checkpointer.pending is not None:
        _settle(run, wait=False)


def _settle(run: Run, wait: bool) -> None:
    """Commit the background save (checkpoint.async) once every rank has written it; with
    ``wait``, wait for it first. Every rank calls this at the same step."""
    saved = run.checkpointer.settle(wait)
    if saved is not None:
        _report(run, saved)


def end_background_save(run: Run) -> None:
    """A run that ends with a background save in flight (it failed mid-run): the write ends
    before the process group does. Alone, the save is committed; across ranks it is left
    uncommitted, as the others may never get here to agree. The earlier checkpoints stand."""
    if run.checkpointer.pending is None:
        return
    if run.dist is None:
        try:
            _settle(run, wait=True)
            return
        except CheckpointError:
            pass  # the run's own failure is the one to report
    name = run.checkpointer.abandon()
    if name and run.main:
        run.dir.event("warning", run.counters.step, message=f"checkpoint {name} was being written when the run "
                      "failed: not kept; the earlier checkpoints are intact")


def _report(run: Run, saved) -> None:
    if not run.main:
        return
    more = {} if saved.stall is None else {"stall": round(saved.stall, 4), "committed_at": run.counters.step}
    run.dir.event("checkpoint", saved.step, kind=saved.kind, file=saved.path.name, bytes=saved.bytes,
                  seconds=round(saved.seconds, 4), **more)
    how = f"{saved.seconds:.2f}s" if saved.stall is None else \
        f"{saved.stall:.2f}s stall, on disk after {saved.seconds:.2f}s"
    run.console.say(f"checkpoint {saved.path.name} ({saved.bytes / 1e6:.2f} MB, {how})")


def validate(run: Run) -> dict[str, float]:
    st = run.plan.validation
    run.train_model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    # fork_rng: sampling during validation must not shift the training RNG stream,
    # or a run that validates would diverge from one resumed past the validation.
    with torch.no_grad(), torch.random.fork_rng(devices=[run.ctx.device] if run.ctx.device.type == "cuda" else []):
        for batch in run.task.val_batches(run.val_batches):
            with run.precision.autocast():
                outputs = run.train_model(batch)
                loss = run.loss_fn(outputs, batch)
            values = {"loss": loss, **run.task.metrics(outputs, batch), **outputs.get("metrics", {})}
            for k, v in values.items():
                sums[k] = sums.get(k, 0) + v.detach().float()
            count += 1
        result = {k: v / max(count, 1) for k, v in sums.items()}
        if run.dist is not None:
            result = run.dist.mean(result)
        host = _to_host(result)
        samples = []
        if st.prompts and hasattr(run.task, "generate"):
            samples = run.task.generate(run.model, list(st.prompts), st.max_new_tokens)
    run.train_model.train()
    if "perplexity" in run.plan.log.include and "perplexity" not in host:
        host["perplexity"] = math.exp(min(host["loss"], 50.0))
    run.history.record_all("val", host)
    c = run.counters
    run.dir.event("validation", c.step, metrics=host)
    run.console.say(f"validation at step {c.step}: " + "  ".join(f"{k} {v:.4f}" for k, v in host.items()))
    for prompt, text in zip(st.prompts, samples):
        run.dir.event("sample", c.step, prompt=prompt, text=text)
        run.console.say(f"  sample: {prompt!r} -> {text!r}")
    return host


def best_improved(run: Run) -> bool:
    """Whether the best checkpoint's metric just beat the best value so far (by more than
    ``min_delta``, in its direction); if so, it becomes the best value."""
    best = run.plan.checkpoint.best
    if not best:
        return False
    values = run.history.context.series.get(best.metric)
    if not values:
        return False
    lower = (best.mode or ("min" if ex.lower_is_better(best.metric) else "max")) == "min"
    latest, previous, delta = values[-1], run.best_value, best.min_delta
    if previous is None or (latest < previous - delta if lower else latest > previous + delta):
        run.best_value = latest
        return True
    return False


# ---- reading the device's numbers back ----------------------------------------------------

def reads_train_series(run: Run) -> bool:
    """Whether a gate evaluated on every step (curriculum, switch, stop, best checkpoint) reads a
    train.* series: then the spec asks for a decision on every step's numbers, and the host
    reads them every step. So does an expectation judged ``throughout``; the others are judged
    once, at their `by` step (_reads_now) or at the end."""
    from specrun.spec.expr import series_refs

    plan = run.plan
    gates = [p.promote for a in plan.axes for p in a.phases if p.promote] + [sw.gate for sw in plan.switches]
    if plan.stop is not None:
        gates.append(plan.stop)
    gates += [e.expr for e in plan.expectations if e.throughout]
    best = plan.checkpoint.best.metric if plan.checkpoint.best else ""
    objective = (plan.trial or {}).get("objective", "")  # a sweep trial reports it after every step
    return best.startswith("train.") or objective.startswith("train.") or any(ref.startswith("train.") for g in gates for ref in series_refs(g.expr))


def _reads_now(run: Run, step: int, due: dict) -> bool:
    """A log row, a validation (its row), a checkpoint or an expectation falls on this step."""
    return due.get("log") or due.get("validation") or due.get("checkpoint") or (
        bool(run.plan.expectations) and expectations.due(run))


def read_back(run: Run) -> None:
    """The pending steps' numbers to the host, replayed in order as the loop would have seen them:
    skips counted (and too many in a row end the run), the rest into the gate history and the
    log window."""
    readout = getattr(run, "readout", None)
    if readout is None or not len(readout):
        return
    c, max_skips = run.counters, run.plan.nonfinite.max_consecutive
    for step, lr, values in readout.read(run.dist):
        values["lr"] = lr
        if values.pop(SKIP):
            c.skipped += 1
            c.consecutive_skips += 1
            run.dir.event("skip", step, loss=values["loss"], grad_norm=values["grad_norm"],
                          consecutive=c.consecutive_skips)
            if c.consecutive_skips >= max_skips:
                raise RunFailed(f"{c.consecutive_skips} consecutive steps had non-finite loss or gradients "
                                f"(nonfinite.max_consecutive is {max_skips}); last loss {values['loss']}")
        else:  # a skipped step's numbers are not metrics
            c.consecutive_skips = 0
            run.history.record_all("train", values)
            run.window.add(values)
            run.last_values = values


# ---- gates ----------------------------------------------------------------------------------

def _gates(run: Run) -> str | None:
    """Curriculum, switches, expectations, early stop. Returns a stop reason or None."""
    c, ctx = run.counters, run.history.context
    _gate_scalars(run)
    promotions = run.curriculum.check(ctx, c.step, c.micro, run.per_epoch)
    if promotions:
        apply_phase_params(run)
        run.batches = run.task.train_batches(c.micro)  # new difficulty from the next micro-batch on
        for p in promotions:
            run.dir.event("phase", c.step, axis=p.axis, old=p.old, new=p.new, values=p.values)
            run.console.say(f"promoted {p.axis}: {p.old} -> {p.new} at step {c.step} "
                            f"({', '.join(f'{k}={v}' for k, v in p.values.items())})")
    for sw in run.plan.switches:
        on = bool(ex.evaluate(sw.gate.expr, ctx))
        key = f"{sw.target}.{sw.name}"
        if run.switch_state.get(key) != on:
            run.switch_state[key] = on
            run.model.set_switch(sw.name, on)
            run.dir.event("switch", c.step, name=key, on=on)
            run.console.say(f"switch {key} {'on' if on else 'off'} at step {c.step}")
    _judge(expectations.judge_step, run)
    stop = run.plan.stop
    if stop is not None and ex.evaluate(stop.expr, ctx):
        values = ex.explain(stop.expr, ctx)
        run.dir.event("early_stop", c.step, when=str(stop), values=values)
        return f"stop gate held at step {c.step}: {format_expr(stop.expr)}"
    return None


def _judge(judge, run: Run) -> None:
    """Expectations (``expectations.py``); a broken ``fail`` one ends the run."""
    try:
        judge(run)
    except expectations.ExpectationBroken as exc:
        raise RunFailed(str(exc)) from None


# ---- logging --------------------------------------------------------------------------------

def _batch_tokens(batch: dict) -> int:
    ids = batch.get("input_ids")
    if ids is not None:
        return ids.numel()
    first = next(iter(batch.values()))
    return first.shape[0]


def _log_row(run: Run, window: Window, val: dict | None) -> None:
    c = run.counters
    last = window.last
    means, rate, tokens_per_s = window.take()
    row = {"step": c.step, "epoch": round(c.micro / run.per_epoch, 4) if run.per_epoch else "",
           "segment": c.segment, "skipped": c.skipped, "steps_per_s": rate,
           "time": round(time.time(), 3)}
    row.update({f"phase.{a}": p for a, p in run.curriculum.phase_names().items()})
    row.update({f"train.{k}": v for k, v in means.items()})
    row.update(at_step(last, means))
    include = run.plan.log.include
    if "perplexity" in include and "loss" in means:
        row["train.perplexity"] = math.exp(min(means["loss"], 50.0))
    if "tokens_per_second" in include:
        row["tokens_per_s"] = tokens_per_s
    if "ram" in include:
        row["ram_gb"] = used_bytes("system") / GB
    if "gpu_memory" in include and run.ctx.device.type == "cuda":
        row["gpu_peak_gb"] = torch.cuda.max_memory_allocated(run.ctx.device) / GB
    if val:
        row.update({f"val.{k}": v for k, v in val.items()})
    run.dir.sinks.row(row)  # metrics.csv, the spec's CSV, TensorBoard, trackers: engine/sinks
    run.dir.set_status(step=c.step, phases=run.curriculum.phase_names(), skipped=c.skipped)


def at_step(last: dict, means: dict) -> dict:
    """Loss and LR as they were at the row's step (a mean over the window hides a spike and
    lags a schedule), the loss's window mean beside them as train.loss_mean."""
    out = {f"train.{k}": last[k] for k in ("loss", "lr") if k in last}
    if "loss" in means:
        out["train.loss_mean"] = means["loss"]
    return out


def _epoch_report(run: Run, epoch: int) -> None:
    """Peak memory of the epoch that just ended: device memory on CUDA, resident RAM everywhere."""
    import psutil

    fields = {"epoch": epoch, "peak_rss_gb": round(_peak_rss() / GB, 3),
              "ram_gb": round(psutil.Process().memory_info().rss / GB, 3)}
    if run.ctx.device.type == "cuda":
        fields["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated(run.ctx.device) / GB, 3)
        torch.cuda.reset_peak_memory_stats(run.ctx.device)
    run.dir.event("epoch", run.counters.step, **fields)
    run.console.say(f"epoch {epoch} done at step {run.counters.step}: "
                    + "  ".join(f"{k} {v}" for k, v in fields.items() if k != "epoch"))


def _peak_rss() -> int:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


# ---- the loop -------------------------------------------------------------------------------------

@dataclass
class _Loop:
    """What the loop keeps between steps that is not saved: settings read once, the device
    readout, which metric the console shows, and the last epoch seen."""

    clip: float | None
    drop_micro: bool  # nonfinite.scope micro_batch: a NaN micro-batch is dropped alone
    scale: float  # gradients of the mean over the accumulated micro-batches
    readout: Readout
    key_metric: str | None
    epoch_seen: int
    has_gates: bool  # a spec without gates skips their evaluation (and its bookkeeping) entirely
    quiet_until: float = 0  # the next step on which anything can be decided (_quiet_until)
    run: Run | None = None  # for progress_details, which the console calls with no arguments
    rate_mark: tuple = (0, 0.0)  # (step, perf_counter) at the last progress line drawn, or the start

    def epoch_done(self, run: Run) -> int | None:
        """The epoch this step completed, if it completed one (what `every N epochs` waits for)."""
        if run.per_epoch and run.counters.micro // run.per_epoch > self.epoch_seen:
            self.epoch_seen = run.counters.micro // run.per_epoch
            return self.epoch_seen
        return None

    def progress_details(self) -> tuple:
        """(phase, steps/s, loss, key metric) for the progress line, asked only when one is
        drawn; from the last step the host has read: the console waits for nothing."""
        run, key = self.run, self.key_metric
        values = run.last_values
        phase = "/".join(run.curriculum.phase_names().values()) if run.curriculum.axes else "train"
        # Steps taken since the last line, not the log window's steps: those are counted only
        # when the host reads them back, at the next log row.
        (step, then), now = self.rate_mark, time.perf_counter()
        rate = (run.counters.step - step) / max(now - then, 1e-9)
        self.rate_mark = (run.counters.step, now)
        return phase, rate, values.get("loss"), (key, values[key[6:]]) if key and key[6:] in values else None


def train(run: Run, interrupt: Interrupt, watch=None) -> Outcome:
    """Run to the end, a stop gate, a failure or an interrupt. ``watch(run)``, when given,
    is asked after each step's gates whether to stop here (a sweep's pruning): it returns
    the reason, and the run ends ``pruned``."""
    loop = _start(run)
    c, every, window = run.counters, run.every, run.window
    while run.total_steps is None or c.step < run.total_steps:
        signum = interrupt.signal
        if run.dist is not None:  # sync: a signal seen by any rank stops every rank at the same step
            signum = run.dist.first_signal(signum)
        if signum is not None:
            return _interrupted(run, signum)

        # 1-3. forward/backward over the micro-batches, clip, optimizer and scheduler step
        _step(run, loop)
        if c.step < loop.quiet_until:  # nothing falls on this step: its numbers stay on the device
            _progress(run, loop)
            continue

        # 4. does anything read this step's numbers? Then the host gets them, all pending
        # steps' at once (the one device-to-host sync of a step that decides something)
        epoch_done = loop.epoch_done(run)
        micro = (c.micro - run.plan.accumulate, c.micro)  # the micro-batches this step took
        due = {section: falls_due(every, section, c.step, epoch_done, micro) for section in every}
        if run.reads_every_step or _reads_now(run, c.step, due):
            read_back(run)

        # 5. validation (before the gates, so they read this step's val metrics)
        val = None
        if due.get("validation"):
            val = validate(run)
            if best_improved(run):
                _save(run, "best")

        # 6. gates: once per step, so at most one promotion per axis per step
        stop_reason = _gates(run) if loop.has_gates else None
        pruned = watch(run) if watch is not None and stop_reason is None else None

        # 7. memory guard, and the epoch's peak memory (keenkenning's Phase 4.3)
        if due.get("memory") and run.guard.active:
            _guard_memory(run)
        if epoch_done is not None:
            _epoch_report(run, epoch_done)

        # 8. log row, then checkpoint: a kill between the two must not lose the row
        if val is not None or (window.count and due.get("log")):
            _log_row(run, window, val)
        _checkpoint(run, due.get("checkpoint"))

        # 9. console, then the end of the run if a gate or the sweep says so
        _progress(run, loop)
        if pruned or stop_reason:
            return _stopped(run, pruned, stop_reason)
        loop.quiet_until = _quiet_until(run, loop, watch)

    _finish(run, window)
    _judge(expectations.judge_end, run)
    return Outcome("finished", 0, f"finished {c.step} steps", c.step)


def _stopped(run: Run, pruned: str | None, stop_reason: str | None) -> Outcome:
    """The end a sweep's pruning or a stop gate called, the run saved first (a broken
    expectation loses nothing). A pruned trial is not judged by the end-of-run expectations."""
    _finish(run, run.window)
    if pruned:
        return Outcome("pruned", 0, pruned, run.counters.step)
    _judge(expectations.judge_end, run)
    return Outcome("finished", 0, stop_reason, run.counters.step)


def _start(run: Run) -> _Loop:
    """Put a (resumed) run where it was: phase parameters, switches, the data position."""
    plan = run.plan
    apply_phase_params(run)
    for sw in run.plan.switches:  # a resumed run puts its switches back where they were
        key = f"{sw.target}.{sw.name}"
        if key in run.switch_state:
            run.model.set_switch(sw.name, run.switch_state[key])
    run.batches = run.task.train_batches(run.counters.micro)
    run.train_model.train()
    run.readout = Readout(run.ctx.device, alone=run.dist is None)
    run.reads_every_step = reads_train_series(run)
    loop = _Loop(
        clip=plan.clip_grad_norm, drop_micro=plan.nonfinite.scope == "micro_batch",
        scale=1.0 / run.plan.accumulate, readout=run.readout,
        key_metric=next((f"train.{m}" for m in getattr(run.task, "metric_names", ())), None),
        epoch_seen=run.counters.micro // run.per_epoch if run.per_epoch else 0,
        has_gates=bool(plan.switches or plan.expectations or plan.stop is not None
                       or any(p.promote for a in plan.axes for p in a.phases)))
    loop.run, loop.rate_mark = run, (run.counters.step, time.perf_counter())
    return loop


def _quiet_until(run: Run, loop: _Loop, watch) -> float:
    """The next step that can decide anything. The steps before it skip steps 4-8: no log row,
    validation, checkpoint, memory check or epoch's end falls on them (timeline.next_decision).
    Gates, a sweep's watch, a per-step read or a background save in flight look at every step."""
    if loop.has_gates or watch is not None or run.reads_every_step or run.checkpointer.pending is not None:
        return run.counters.step + 1
    c = run.counters
    return next_decision(run.every, c.step, c.micro, run.plan.accumulate, run.per_epoch)


def _step(run: Run, loop: _Loop) -> None:
    """One optimizer step: forward/backward over ``accumulate`` micro-batches, unscale and
    clip, then step unless something is non-finite. Nothing here waits for the device."""
    c = run.counters
    losses, metric_sums = _forward_backward(run, loop)

    # unscale and clip; is anything non-finite? (a flag on the device, not a host sync)
    norm = unscale_and_clip(run, loop.clip)
    if not losses:  # every micro-batch was dropped: the step is skipped below
        losses = [torch.tensor(float("nan"), device=run.ctx.device)]
    loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
    if len(losses) > 1:
        metric_sums = {k: v / len(losses) for k, v in metric_sums.items()}
    nonfinite = loop.readout.nonfinite(loss, norm)
    if run.dist is not None:
        run.dist.any_rank(nonfinite)  # a skip on one rank is a skip on all, or DDP hangs

    # optimizer and scheduler step (a non-finite step is skipped, not applied)
    optimizer_step(run, nonfinite)
    lr = run.optimizer.param_groups[0]["lr"]  # the LR this step used
    if run.lr_changes:
        run.scheduler.step()
    c.step += 1
    if run.profiler_step is not None:
        run.profiler_step()
    loop.readout.add(c.step, lr, {"loss": loss, "grad_norm": norm, SKIP: nonfinite, **metric_sums})


def _forward_backward(run: Run, loop: _Loop) -> tuple[list, dict]:
    """The kept micro-batches' losses and summed metrics, gradients accumulated. Task metrics
    cost a few ops per micro-batch: computed every step only when a gate reads them."""
    c, window = run.counters, run.window
    log_every = run.every.get("log", 1)
    with_metrics = run.metrics_every_step or not isinstance(log_every, int) or (c.step + 1) % log_every == 0
    losses, metric_sums = [], {}
    for i in range(run.plan.accumulate):
        batch = next(run.batches)
        c.micro += 1
        window.tokens += _batch_tokens(batch)
        if run.dist is None:
            loss, metrics = micro_step(run, batch, loop.scale, with_metrics, loop.drop_micro)
        else:  # DDP: one all-reduce per optimizer step, in the last micro-batch's backward
            with run.dist.gradient_sync(run.train_model, last=i == run.plan.accumulate - 1):
                loss, metrics = micro_step(run, batch, loop.scale, with_metrics, loop.drop_micro)
        if loss is None:
            c.skipped_micro += 1
            run.dir.event("skip_micro_batch", c.step + 1, micro=c.micro)
            if i == run.plan.accumulate - 1 and losses and run.dist is not None:
                run.dist.average_gradients(run.model.parameters())  # the dropped backward would have
            continue
        losses.append(loss)
        for k, v in metrics.items():
            metric_sums[k] = metric_sums[k] + v if k in metric_sums else v
    if losses and len(losses) < run.plan.accumulate:
        rescale_grads(run, run.plan.accumulate / len(losses))  # the mean over the kept ones
    return losses, metric_sums


def _guard_memory(run: Run) -> None:
    c = run.counters
    report = run.guard.check(run.console.say, lambda action, **fields: run.dir.event(
        "memory_guard", c.step, action=action, **fields))
    if report.still_over and run.guard.still_over_action == "save_and_stop":
        _save(run, "final")
        raise RunFailed(f"memory guard: RAM at {format_bytes(report.used_after)}, still over the "
                        f"{format_bytes(run.guard.limit)} limit; saved and stopped")


def _progress(run: Run, loop: _Loop) -> None:
    run.console.progress(run.counters.step, run.total_steps, loop.progress_details)


def _finish(run: Run, window: Window) -> None:
    read_back(run)
    if window.count:
        _log_row(run, window, None)
    _save(run, "final")


def _how_to_continue(run: Run) -> str:
    from specrun.engine.summary import continue_command

    return f"continue with: {continue_command(run.plan, run.dir.path)}"


def _interrupted(run: Run, signum: int) -> Outcome:
    import signal

    name = signal.Signals(signum).name
    code = 128 + signum
    if run.plan.checkpoint.on_interrupt == "save":
        try:
            _save(run, "final")
            msg = f"interrupted by {name} at step {run.counters.step}; state saved; {_how_to_continue(run)}"
        except CheckpointError as exc:
            msg = f"interrupted by {name} at step {run.counters.step}; saving failed: {exc}"
    else:
        _settle(run, wait=True)  # a background save already begun is kept
        msg = f"interrupted by {name} at step {run.counters.step} (checkpoint.on_interrupt none: not saved)"
    run.dir.event("interrupted", run.counters.step, signal=name)
    return Outcome("interrupted", code, msg, run.counters.step)
