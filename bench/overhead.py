"""What does specrun cost per step over a plain hand-written PyTorch loop?

The same model (the built-in MLP), the same data (the same pre-generated batches,
served to both), the same optimizer (AdamW), the same clipping, in one process on
this machine, interleaved (plain, specrun, plain, specrun, ...), so that whatever
else the machine is doing lands on both. Small on purpose: at this size the
fixed per-step costs of the engine (metrics to the host, gates, history, log
checks) show, where on a real model they would disappear under the matmuls.

The plain loop does the work any careful loop does: forward, loss, backward,
clip_grad_norm_, a fused AdamW step (what specrun's ``adamw`` builds), zero_grad
(set_to_none=True) and one ``.item()`` of the loss per step. specrun does not read
the loss every step: its numbers stay on the device until a log row (or a gate, a
checkpoint) reads them, all pending steps in one transfer.

Side by side, step by step (the figure held to the target): one specrun run of
--paired-steps steps, and inside it, at the end of every step (the Console.progress call
specrun's loop makes once per step), one step of the plain loop on its own model and
optimizer (the same seed, the same batch). Each specrun step and the plain step after it
are timed apart (this thread's CPU time; wall time beside it) within a millisecond of each
other, so the machine's drift, which on this shared VM moves the step time by +-20% between
runs a minute apart, lands on both. Printed: the median of the per-pair differences (the
engine's cost per optimizer step, in us; the target is 20 us at most), the difference of
the two medians, the median per-pair ratio, the mean difference (log rows and reads
included), and a calibration: the same harness around two identical plain loops, which
reads what the machine's noise makes of a true difference of zero. Both loops must end
with bitwise the same weights. --paired-runs rounds (default 5) of the paired run and its
calibration; held to the target: the median over the rounds of the paired difference less
the calibration (which reads below zero here, so this is the larger figure).

Whole runs, interleaved (the earlier measure, still printed): --repeats runs of each loop,
plain and specrun alternately, each stamping the end of every step; per-step means and
median single steps. Start-up (building the model, the run directory) and the end
(specrun writes final.pt) are reported apart: they are paid once per run, not per step.

    OMP_NUM_THREADS=1 python bench/overhead.py [--paired-steps 4000] [--paired-runs 5] [--repeats 7] [--steps 300] [--no-profile]

Defaults to the smallest model (width 32, depth 4, batch 16), where the fixed cost shows
most. Ends with a cProfile of one more specrun run (where the time goes), and specrun's
own per-step code ranked by its share of it. ``--attribute`` times the pieces of work
specrun's step adds, one by one; ``--ablate`` adds them to the plain loop, in the loop.

Measured 2026-12-03 09:31 UTC, load average ~1, 5 rounds of 4,000 pairs: paired difference
+1.1, +2.7, +2.2, +2.8, -1.0 us; calibration -9.4, -6.7, -9.8, -7.1, -5.8 us; less the
calibration +10.5, +9.5, +12.0, +9.9, +4.8 us: the engine's cost, +9.9 us a step (median),
within the 20 us target. With the log row and the read-back every 50 steps shared out,
+22 us a step. --attribute, hot: 3.9 us. docs/distributed.md has the history.

``--trackers`` logs to TensorBoard, MLflow (SQLite in a temp dir) and W&B (offline)
as well; with ``--log-every 1`` every step sends a row to all three. Measured
2026-12-03 on the shared 2-core development machine (load average ~9, so wall times
there say more about the neighbours than about specrun): the training thread's CPU
time per step over the plain loop's, median of 5 per-repeat ratios, log every step
(then the default model, width 256 depth 4 batch 64):
1.068 without trackers, 1.059 with all three (MLflow and W&B in processes of their
own, TensorBoard on a thread). With the trackers on threads of the training process
instead it was 1.239, and the wall time per step 2.2x the plain loop's: their Python
work held the GIL that every torch call of the training thread takes back.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from specrun.spec.check import check  # noqa: E402
from specrun.components.api import Context  # noqa: E402
from specrun.components.builtin import RuleClassification, build_mlp  # noqa: E402
from specrun.engine.console import Console  # noqa: E402
from specrun.engine.execute import Options, execute  # noqa: E402
from specrun.spec.parse import parse  # noqa: E402
from specrun.plan import build_plan  # noqa: E402

SPEC = """
spec overhead
seed 0
task rule_classification {{
  features {features}
  classes {classes}
}}
model mlp {{
  width {width}
  depth {depth}
  dropout 0.0
}}
loss cross_entropy
optimizer adamw {{
  lr 1e-3
  weight_decay 0.0
}}
batch {batch}
accumulate 1
max_steps {steps}
clip_grad_norm 1.0
log {{
  every {log_every} steps{trackers}
}}
"""
# --trackers: every tracker at once, kept on this machine (W&B offline, MLflow's SQLite store in a temp dir)
TRACKERS = """
  tensorboard true
  mlflow {}
  wandb { mode offline }"""


def make_batches(params: dict, n: int) -> list[dict]:
    """The task's own batches 0..n-1, generated once, before any timing."""
    task = RuleClassification({"features": params["features"], "classes": params["classes"], "noise": 0.0,
                               "epoch_size": 4096, "val_seed_offset": 1000003},
                              Context(seed=0, device=torch.device("cpu"), batch_size=params["batch"]))
    return [task._batch(0, i) for i in range(n)]


def serve_from(batches: list[dict]) -> None:
    """The specrun run's task serves the same pre-generated batches (no data generation timed)."""

    def train_batches(self, start):
        i = start
        while True:
            yield batches[i]
            i += 1

    RuleClassification.train_batches = train_batches


# ---- the plain loop ----------------------------------------------------------------------------

# The tensor work specrun's step does beyond the plain loop's, one switch each (see --ablate):
EXTRAS = {
    "loss_wrapper": "the loss component: reshape(-1, C), .float(), reshape(-1) around F.cross_entropy",
    "scale": "(loss * (1 / accumulate)).backward(): a mul and its backward node, also at accumulate 1",
    "metrics": "task.metrics under no_grad (argmax, eq, float, mean) and the `0 + v` accumulation",
    "nonfinite": "the skip flag on the device: zeros + _amp_foreach_non_finite_check_and_unscale_, "
                 "passed to fused AdamW as found_inf",
    "scheduler": "LambdaLR.step() for a constant schedule",
    "to_host": "instead of loss.item(): the readout (stack + tolist of the pending steps) every 50 steps",
}


def plain_model(params: dict):
    """The plain loop's model and optimizer: what specrun builds from SPEC, by hand."""
    torch.manual_seed(0)  # what specrun's seed_everything(0) does before building the model
    model = build_mlp({"width": params["width"], "depth": params["depth"], "dropout": 0.0},
                      {"in_features": params["features"], "classes": params["classes"]}, None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                            fused=True)
    model.train()
    return model, opt


def plain_step(model, opt, batch: dict) -> float:
    """One step of the plain loop: forward, loss, backward, clip, fused AdamW, zero_grad, loss.item()."""
    logits = model(batch)["logits"]
    loss = torch.nn.functional.cross_entropy(logits, batch["targets"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def plain_run(params: dict, batches: list[dict], steps: int, extras=frozenset()) -> tuple[list, float, dict]:
    """The plain loop; ``extras`` adds pieces of specrun's per-step work to it (for --ablate)."""
    t0 = time.perf_counter()
    model, opt = plain_model(params)
    pending = []
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0) if "scheduler" in extras else None
    stamps = [(time.perf_counter(), time.thread_time())]
    for i in range(steps):
        batch = batches[i]
        if not extras:
            plain_step(model, opt, batch)
            stamps.append((time.perf_counter(), time.thread_time()))
            continue
        logits = model(batch)["logits"]
        if "loss_wrapper" in extras:
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                     batch["targets"].reshape(-1))
        else:
            loss = torch.nn.functional.cross_entropy(logits, batch["targets"])
        (loss * 1.0 if "scale" in extras else loss).backward()
        if "metrics" in extras:
            with torch.no_grad():
                accuracy = 0 + (logits.argmax(-1) == batch["targets"]).float().mean()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if "nonfinite" in extras:
            found = torch.zeros(())
            torch._amp_foreach_non_finite_check_and_unscale_([loss.detach(), norm], found, torch.ones(()))
            opt.grad_scale, opt.found_inf = None, found
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        if "nonfinite" in extras:
            del opt.grad_scale, opt.found_inf
        if "to_host" in extras:
            pending += [loss.detach(), norm] + ([accuracy] if "metrics" in extras else [])
            if (i + 1) % 50 == 0:
                torch.stack(pending).tolist()
                pending = []
        else:
            loss.item()
        stamps.append((time.perf_counter(), time.thread_time()))
    return stamps, stamps[0][0] - t0, {k: v.detach().clone() for k, v in model.state_dict().items()}


def ablate(params, plan, data, batches, stamps, repeats, warmup) -> None:
    """In the loop, not in isolation: plain, plain + each extra, plain + all, specrun; CPU time per step."""
    variants = {"plain": frozenset()}
    variants.update({f"+ {x}": frozenset({x}) for x in EXTRAS})
    variants["+ all of the above"] = frozenset(EXTRAS)
    times = {v: [] for v in list(variants) + ["specrun"]}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        plain_run(params, batches, params["steps"])
        specrun_run(plan, data, stamps, base, -1)
        for r in range(repeats):
            for name, extras in variants.items():
                times[name].append(per_step(plain_run(params, batches, params["steps"], extras)[0], warmup, 1))
            times["specrun"].append(per_step(specrun_run(plan, data, stamps, base, r)[0], warmup, 1))
            print(f"round {r + 1}/{repeats}", flush=True)
    plain = times["plain"]
    print(f"CPU time per step, median of {repeats} interleaved rounds; delta: median of paired differences "
          f"with the plain loop of the same round")
    for name, t in times.items():
        delta = statistics.median(b - a for a, b in zip(plain, t))
        what = EXTRAS.get(name[2:], "")
        print(f"  {name:22s} {statistics.median(t) * 1e3:7.3f} ms  {delta * 1e6:+7.0f} us  {what}")


# ---- step by step, side by side --------------------------------------------------------------------

class PairedSteps:
    """Plain steps run inside specrun's loop, each step of either loop timed on its own.

    specrun's loop calls Console.progress once at the end of every step. There, after every
    ``block``-th specrun step, this hook runs ``block`` steps of the plain loop (its own model
    and optimizer from the same seed, on the batches specrun's steps just took) and times
    each; a specrun step is the time from the end of the previous hook to the end of this
    progress call. So each block of specrun steps and its block of plain steps are measured
    within milliseconds of each other: a machine whose speed drifts by tens of percent over
    seconds (a shared VM) moves both alike. ``block 1`` alternates single steps (a pair within
    a millisecond), but then each loop runs with the other's memory in the caches, which
    slows both (by ~150 us a step here) and the bigger one more; blocks of a few steps let
    each loop run warm, as it does on its own, and still pair within ~10 ms.
    """

    def __init__(self, params: dict, batches: list[dict], block: int, label: str = "specrun"):
        self.model, self.opt = plain_model(params)
        self.label = label
        self.batches, self.block = batches, block
        self.specrun: list[tuple[float, float]] = []  # (wall, CPU) seconds of each specrun step
        self.plain: list[tuple[float, float]] = []  # of each plain step, block by block
        self._end = None  # clocks at the end of the last hook: specrun's next step starts there

    def install(self):
        original, pairs = Console.progress, self

        def progress(console, *args, **kwargs):
            original(console, *args, **kwargs)
            now = time.perf_counter(), time.thread_time()
            if pairs._end is not None:
                pairs.specrun.append((now[0] - pairs._end[0], now[1] - pairs._end[1]))
            if len(pairs.specrun) % pairs.block == 0:
                for _ in range(min(pairs.block, len(pairs.batches) - len(pairs.plain))):
                    plain_step(pairs.model, pairs.opt, pairs.batches[len(pairs.plain)])
                    then = time.perf_counter(), time.thread_time()
                    pairs.plain.append((then[0] - now[0], then[1] - now[1]))
                    now = then
            pairs._end = time.perf_counter(), time.thread_time()

        Console.progress = progress
        return original

    def report(self, warmup: int, verbose: bool = True) -> tuple[float, float]:
        """The paired figures, printed with ``verbose``; (the CPU seconds a step specrun's costs
        more: the median paired difference, the median per-pair ratio)."""
        n = min(len(self.specrun), len(self.plain)) // self.block * self.block
        pairs = list(zip(self.specrun[:n], self.plain[:n]))[warmup // self.block * self.block:]
        blocks = [pairs[i:i + self.block] for i in range(0, len(pairs), self.block)]
        if verbose:
            print(f"  blocks of {self.block} step(s), {len(pairs)} pairs (the first {warmup} steps left out):")
        cost = ratio = 0.0
        for clock, name in ((1, "CPU time"), (0, "wall time")):
            spec = statistics.median(s[clock] for s, _ in pairs)
            plain = statistics.median(p[clock] for _, p in pairs)
            diffs = sorted(statistics.median(s[clock] for s, _ in b) - statistics.median(p[clock] for _, p in b)
                           for b in blocks)
            ratios = [statistics.median(s[clock] for s, _ in b) / statistics.median(p[clock] for _, p in b)
                      for b in blocks]
            q1, med, q3 = diffs[len(diffs) // 4], statistics.median(diffs), diffs[3 * len(diffs) // 4]
            mean = statistics.fmean(s[clock] for s, _ in pairs) - statistics.fmean(p[clock] for _, p in pairs)
            if verbose:
                print(f"    {name:9s} plain {plain * 1e6:6.1f} us, {self.label} {spec * 1e6:6.1f} us a step (medians, "
                      f"difference {(spec - plain) * 1e6:+5.1f} us); paired difference {med * 1e6:+5.1f} us "
                      f"(median; quartiles {q1 * 1e6:+.1f} .. {q3 * 1e6:+.1f}), ratio {statistics.median(ratios):.3f}; "
                      f"mean difference, log rows and reads included {mean * 1e6:+.1f} us")
            if clock == 1:
                cost, ratio, self.plain_median, self.mean_difference = med, statistics.median(ratios), plain, mean
        return cost, ratio

    def same_weights(self, specrun_weights: dict) -> tuple[bool, bool]:
        theirs = {k: v.detach() for k, v in self.model.state_dict().items()}
        return (all(torch.equal(theirs[k], specrun_weights[k]) for k in theirs),
                all(torch.allclose(theirs[k], specrun_weights[k], rtol=1e-5, atol=1e-7) for k in theirs))


def null_pairs(params: dict, batches: list[dict], block: int, warmup: int, verbose: bool) -> tuple[float, float]:
    """The same harness around two identical plain loops: what the paired figures read when the
    true difference is zero (this machine's noise floor and the harness's own bias). (median
    paired difference, mean difference)"""
    pairs = PairedSteps(params, batches, block, label="plain 2")
    original = pairs.install()
    model, opt = plain_model(params)
    console = Console(quiet=True)
    try:
        for i, batch in enumerate(batches):
            plain_step(model, opt, batch)
            console.progress(i + 1, len(batches), lambda: ("train", 0.0, None, None))
    finally:
        Console.progress = original
    if verbose:
        print("  calibration, plain loop against plain loop (a true difference of zero):")
    return pairs.report(warmup, verbose)[0], pairs.mean_difference


def paired(params: dict, steps: int, warmup: int, blocks: list[int], base: Path, runs: int) -> bool:
    """``runs`` rounds of: specrun runs of ``steps`` steps with the plain loop's steps paired with
    theirs (PairedSteps), once for each block size, then the calibration. The last block size's
    figure is the one held to the target, as the median over the rounds: within one round the
    two loops' objects sit where they sit in memory, which moves a round's figure by several us
    either way (the calibration shows it), so one round is not enough."""
    plan = build_plan(check(parse(SPEC.format(**{**params, "steps": steps, "trackers": ""}), "overhead.train")))
    batches = make_batches(params, steps)
    serve_from(batches)
    print(f"side by side, step by step: plain steps run inside specrun's loop (--paired-steps {steps}, "
          f"--paired-runs {runs}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
    ok, rounds = True, []
    for r in range(runs):
        verbose = r == 0
        for block in blocks:
            pairs = PairedSteps(params, batches, block)
            original = pairs.install()
            try:
                out = execute(plan, Options(run_dir=str(base / f"paired{r}-{block}"), quiet=True, runs_base=str(base)))
            finally:
                Console.progress = original
            assert out.code == 0, out.message
            cost, ratio = pairs.report(warmup, verbose)
            same, close = pairs.same_weights(torch.load(base / f"paired{r}-{block}" / "checkpoints" / "final.pt",
                                                        weights_only=True)["model"])
            if verbose:
                print(f"    same final weights (the plain loop's and specrun's final.pt): "
                      f"{'bitwise' if same else ('within 1e-5' if close else 'NO')}")
            ok = ok and close
        zero, zero_mean = null_pairs(params, batches, blocks[-1], warmup, verbose)
        rounds.append((cost, ratio, zero, pairs.mean_difference, zero_mean, pairs.plain_median))
        print(f"  round {r + 1}/{runs}: plain {pairs.plain_median * 1e6:.0f} us a step; specrun {cost * 1e6:+.1f} us "
              f"(ratio {ratio:.3f}), calibration {zero * 1e6:+.1f} us, less the calibration {(cost - zero) * 1e6:+.1f} us;"
              f" mean difference, log rows and reads included, {(pairs.mean_difference - zero_mean) * 1e6:+.1f} us "
              f"less the calibration's; final weights {'bitwise' if same else ('close' if close else 'DIFFER')}",
              flush=True)
    cost = statistics.median(c for c, *_ in rounds)
    net = [c - z for c, _, z, *_ in rounds]
    net_ratio = statistics.median(1 + (c - z) / p for c, _, z, _, _, p in rounds)
    mean = statistics.median(m - zm for *_, m, zm, _ in rounds)
    print(f"  engine overhead per optimizer step (CPU time, median over {runs} rounds of each round's median "
          f"paired difference, blocks of {blocks[-1]}): {cost * 1e6:+.1f} us, ratio "
          f"{statistics.median(r for _, r, *_ in rounds):.3f}; less what the calibration reads for zero: "
          f"{statistics.median(net) * 1e6:+.1f} us, ratio {net_ratio:.3f} (rounds {min(net) * 1e6:+.1f} .. "
          f"{max(net) * 1e6:+.1f} us); "
          f"target at most 20 us: {'met' if statistics.median(net) <= 20e-6 else 'NOT met'}")
    print(f"  with every step counted (the log row and read-back every {params['log_every']} steps shared out): "
          f"{mean * 1e6:+.1f} us a step, less the calibration's (median over the rounds)")
    return ok


# ---- the specrun run --------------------------------------------------------------------------------

class Stamps:
    """Console.progress is called once at the end of every step of specrun's loop."""

    def __init__(self):
        self.times: list[float] = []
        self._progress = Console.progress

    def install(self):
        stamps = self

        def progress(console, *args, **kwargs):
            stamps.times.append((time.perf_counter(), time.thread_time()))
            return stamps._progress(console, *args, **kwargs)

        Console.progress = progress

    def reset(self):
        self.times = []


def specrun_run(plan, data: dict, stamps: Stamps, base: Path, n: int) -> tuple[list[float], float, float, dict]:
    stamps.reset()
    run_dir = base / f"run{n}"
    t0 = time.perf_counter()
    out = execute(plan, Options(run_dir=str(run_dir), quiet=True, runs_base=str(base)))
    t1 = time.perf_counter()
    assert out.code == 0, out.message
    final = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]
    times = stamps.times
    return times, times[0][0] - t0, t1 - times[-1][0], final


def per_step(stamps: list[tuple[float, float]], warmup: int, clock: int = 0) -> float:
    """Mean seconds per step over steps [warmup, end): clock 0 wall time, 1 this thread's CPU time."""
    return (stamps[-1][clock] - stamps[warmup][clock]) / (len(stamps) - 1 - warmup)


def median_step(stamps: list[tuple[float, float]], warmup: int, clock: int = 0) -> float:
    """The median single step: the steady state, without the periodic (log row) steps."""
    return statistics.median(b[clock] - a[clock] for a, b in zip(stamps[warmup:], stamps[warmup + 1:]))


def _cost(fn, number=2000, repeat=7) -> float:
    """Seconds per call of ``fn`` (the best of ``repeat`` rounds of ``number`` calls, CPU time)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        for _ in range(number):
            fn()
        best = min(best, (time.thread_time() - t0) / number)
    return best


def attribute(plan, batches) -> None:
    """The per-step work specrun does that the plain loop does not, piece by piece (CPU time per call)."""
    import torch.nn.functional as F

    from specrun.engine import loop
    from specrun.engine.timeline import falls_due
    from specrun.engine.rundir import RunDir
    from specrun.engine.setup import setup

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = RunDir(Path(tmp) / "run")
        run_dir.create("spec x\n", plan.to_json())
        run = setup(plan, run_dir, Console(quiet=True))
        from specrun.engine.execute import metric_columns
        from specrun.engine.rundir import CsvLog
        from specrun.engine.sinks.csv import MetricsCsv

        run_dir.sinks.add(MetricsCsv(CsvLog(run_dir.path / "metrics.csv", metric_columns(run))))
        batch = batches[0]
        outputs = run.train_model(batch)
        loss = run.loss_fn(outputs, batch)
        metrics = run.task.metrics(outputs, batch)
        norm = torch.tensor(0.5)
        window = loop.Window()
        readout = loop.Readout(torch.device("cpu"))

        def read50():
            readout.add(1, 1e-3, {"loss": loss, "grad_norm": norm, "_skip": readout.nonfinite(loss, norm)})
            readout.pending *= 50  # as the loop leaves them: alone on the CPU, numbers read already
            readout.read()
        values = {"loss": 1.0, "grad_norm": 0.5, "accuracy": 0.25, "lr": 1e-3}
        status_every = plan.settings["log"]["every"]
        state = loop._start(run)
        every = run.every

        def quiet_step():  # what train() does after a step before the next decision
            if run.counters.step < state.quiet_until:
                pass
            loop._progress(run, state)

        def deciding_step():  # the checks of a step on which something can fall due (a log row's)
            done = state.epoch_done(run)
            due = {section: falls_due(every, section, 7, done, (6, 7)) for section in every}
            loop._reads_now(run, 7, due)
            loop._checkpoint(run, due.get("checkpoint"))
            state.quiet_until = loop._quiet_until(run, state, None)

        pieces = [  # (name, the work, what the plain loop does instead, how many steps share one call)
            (f"task.metrics (accuracy: argmax, eq, float, mean), on log steps only",
             lambda: run.task.metrics(outputs, batch), None, status_every),
            ("loss_fn wrapper (reshape, .float()) beyond F.cross_entropy",
             lambda: run.loss_fn(outputs, batch), lambda: F.cross_entropy(outputs["logits"], batch["targets"]), 1),
            ("readout.nonfinite(loss, norm): alone on the CPU two reads, beyond loss.item()",
             lambda: readout.nonfinite(loss, norm), lambda: loss.item(), 1),
            ("readout.add of loss, grad_norm, skip flag (no transfer)",
             lambda: readout.add(1, 1e-3, {"loss": loss, "grad_norm": norm, "_skip": norm}), None, 1),
            ("readout.read of 50 steps (a stack + tolist of what is still on the device)", lambda: read50(), None, 50),
            ("history.record_all + window.add (the read's replay of a step)",
             lambda: (run.history.record_all("train", values), window.add(values)), None, 1),
            ("precision.autocast() (nullcontext) enter/exit", lambda: run.precision.autocast().__enter__(), None, 1),
            ("_batch_tokens", lambda: loop._batch_tokens(batch), None, 1),
            ("between steps: the quiet check and the progress call", quiet_step, None, 1),
            (f"a deciding step's checks (epoch, due, reads, checkpoint stage, next decision), every "
             f"{status_every} steps", deciding_step, None, status_every),
        ]
        total = 0.0
        print(f"per-step costs beyond the plain loop (CPU time per call, best of 7 x 2000; "
              f"{torch.get_num_threads()} thread(s)):")
        for name, fn, base, shared in pieces:
            cost = (_cost(fn) - (_cost(base) if base else 0.0)) / shared
            total += cost
            print(f"  {cost * 1e6:8.1f} us  {name}")
        row = _cost(lambda: loop._log_row(run, window, None), number=20, repeat=3)
        wall0 = time.perf_counter()
        for _ in range(20):
            run.dir.set_status(step=1)
        status_wall = (time.perf_counter() - wall0) / 20
        print(f"  {row / status_every * 1e6:8.1f} us  _log_row every {status_every} steps: "
              f"{row * 1e3:.2f} ms CPU per row (run.json is rewritten and fsynced each row: "
              f"{status_wall * 1e3:.2f} ms wall per set_status)")
        total += row / status_every
        print(f"  {total * 1e6:8.1f} us  in all, per step")
        run.task.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paired-steps", type=int, default=4000,
                    help="steps of each side-by-side run (plain steps inside specrun's loop); 0: none")
    ap.add_argument("--paired-runs", type=int, default=5,
                    help="rounds of side-by-side runs and calibration; the median over them is held to the target")
    ap.add_argument("--pair-blocks", default="1",
                    help="block sizes of the side-by-side runs, one run each (the last is held to the target)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20, help="steps left out of the per-step figure")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--log-every", type=int, default=50, help="steps between log rows")
    ap.add_argument("--trackers", action="store_true",
                    help="log to TensorBoard, MLflow and W&B (offline) too: their writes must stay off the step")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="leave out the cProfile of one more specrun run (where the time goes)")
    ap.add_argument("--ablate", action="store_true",
                    help="add specrun's extra per-step work to the plain loop piece by piece, in the loop")
    ap.add_argument("--attribute", action="store_true",
                    help="time, one by one, the pieces of work specrun's step does beyond the plain loop's")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    params = vars(args)
    if args.trackers:
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    text = SPEC.format(**{**params, "trackers": TRACKERS if args.trackers else ""})
    spec = check(parse(text, "overhead.train"))
    plan = build_plan(spec)
    batches = make_batches(params, args.steps)
    if args.attribute:
        attribute(plan, batches)
        return 0
    paired_ok = True
    if args.paired_steps and not args.ablate:
        with tempfile.TemporaryDirectory() as tmp:
            paired_ok = paired(params, args.paired_steps, args.warmup,
                               [int(b) for b in args.pair_blocks.split(",")], Path(tmp), args.paired_runs)
        if args.repeats < 1:  # the side-by-side figure alone
            return 0 if paired_ok else 1
        print()
        print("whole runs, interleaved (plain, specrun, plain, ...): the earlier measure, at the mercy of "
              "the machine's drift between runs")
    serve_from(batches)
    stamps = Stamps()
    stamps.install()
    if args.ablate:
        ablate(params, plan, spec.data, batches, stamps, args.repeats, args.warmup)
        return 0

    measures = {  # name -> (function of stamps, description)
        "wall": (lambda st: per_step(st, args.warmup, 0), "wall time, mean over the steps"),
        "cpu": (lambda st: per_step(st, args.warmup, 1), "this thread's CPU time, mean over the steps"),
        "wall-median-step": (lambda st: median_step(st, args.warmup, 0), "wall time of the median single step"),
    }
    plain = {m: [] for m in measures}
    spec_ = {m: [] for m in measures}
    spec_start, spec_end, plain_start = [], [], []
    pooled = {"plain": [], "specrun": []}  # every single step's CPU time, all repeats together
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        # one untimed round of each: imports, allocator, lazy initialisations
        plain_run(params, batches, args.steps)
        specrun_run(plan, spec.data, stamps, base, -1)
        for r in range(args.repeats):
            p_stamps, p_start, p_weights = plain_run(params, batches, args.steps)
            s_stamps, s_start, s_end, s_weights = specrun_run(plan, spec.data, stamps, base, r)
            for m, (fn, _) in measures.items():
                plain[m].append(fn(p_stamps))
                spec_[m].append(fn(s_stamps))
            for name, st in (("plain", p_stamps), ("specrun", s_stamps)):
                pooled[name] += [b[1] - a[1] for a, b in zip(st[args.warmup:], st[args.warmup + 1:])]
            plain_start.append(p_start)
            spec_start.append(s_start)
            spec_end.append(s_end)
            print(f"repeat {r}: " + "   ".join(
                f"{m} plain {plain[m][-1] * 1e3:.3f} / specrun {spec_[m][-1] * 1e3:.3f} ms "
                f"({spec_[m][-1] / plain[m][-1]:.3f})" for m in measures), flush=True)
        same = all(torch.equal(p_weights[k], s_weights[k]) for k in p_weights)
        close = all(torch.allclose(p_weights[k], s_weights[k], rtol=1e-5, atol=1e-7) for k in p_weights)

        print()
        print(f"model mlp width {args.width} depth {args.depth}, batch {args.batch}, AdamW, clip 1.0, "
              f"{args.steps} steps (first {args.warmup} left out), {args.repeats} interleaved repeats, "
              f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
        for m, (_, what) in measures.items():
            p, s = statistics.median(plain[m]), statistics.median(spec_[m])
            ratios = [b / a for a, b in zip(plain[m], spec_[m])]
            print(f"{m:17s} plain {p * 1e3:7.3f} ms/step  specrun {s * 1e3:7.3f} ms/step  "
                  f"ratio {s / p:.3f}  (median of per-repeat ratios {statistics.median(ratios):.3f}; "
                  f"min/min {min(spec_[m]) / min(plain[m]):.3f})   [{what}]")
        print(f"once per run: specrun start-up {statistics.median(spec_start) * 1e3:.0f} ms "
              f"(plain {statistics.median(plain_start) * 1e3:.0f} ms), end incl. final.pt "
              f"{statistics.median(spec_end) * 1e3:.0f} ms")
        print(f"same final weights: {'bitwise' if same else ('within 1e-5' if close else 'NO')}")
        # On a shared machine whatever else runs lands on some steps and not others: the median
        # single step (CPU time, every step of every repeat pooled) is the stable measure of a step
        # where nothing is decided; specrun's interval work (log rows every 50 steps, the read of
        # the pending numbers) is apart, in the mean. Both are printed, and the spread.
        p_med, s_med = statistics.median(pooled["plain"]), statistics.median(pooled["specrun"])
        p_mean, s_mean = statistics.fmean(pooled["plain"]), statistics.fmean(pooled["specrun"])
        deltas = [b - a for a, b in zip(plain["cpu"], spec_["cpu"])]
        cost = s_med - p_med
        print(f"engine overhead per optimizer step (CPU time, median single step over {len(pooled['plain'])} "
              f"steps each): plain {p_med * 1e6:.1f} us, specrun {s_med * 1e6:.1f} us: {cost * 1e6:+.1f} us, "
              f"ratio {s_med / p_med:.3f}; target at most 20 us: {'met' if cost <= 20e-6 else 'NOT met'}")
        print(f"  with every step counted (mean, log rows and reads included): {(s_mean - p_mean) * 1e6:+.1f} us, "
              f"ratio {s_mean / p_mean:.3f}; per-repeat differences of the means: median "
              f"{statistics.median(deltas) * 1e6:+.1f} us, range {min(deltas) * 1e6:+.1f} .. "
              f"{max(deltas) * 1e6:+.1f} us (the machine's noise)")

        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            specrun_run(plan, spec.data, stamps, base, 999)
            prof.disable()
            out = io.StringIO()
            st = pstats.Stats(prof, stream=out).sort_stats("tottime")
            st.print_stats(30)
            print(out.getvalue())
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats("specrun", 40)
            print(out.getvalue())
            own = {f: v for f, v in pstats.Stats(prof).stats.items()  # called every step: the per-step path
                   if "/src/specrun/" in f[0] and v[0] >= args.steps}
            print(f"specrun's own Python code on the per-step path (cProfile's own time of its functions called "
                  f"every step, inflated by the profiling): {sum(v[2] for v in own.values()) / args.steps * 1e6:.1f} "
                  f"us a step; the most:")
            for (path, line, name), v in sorted(own.items(), key=lambda kv: -kv[1][2])[:8]:
                print(f"  {v[2] / args.steps * 1e6:6.1f} us  {Path(path).name}:{line} {name} ({v[0]} calls)")
    return 0 if close and paired_ok else 1


if __name__ == "__main__":
    sys.exit(main())
