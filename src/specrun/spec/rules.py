"""rules: what the schema cannot say.

Component blocks against their catalog entries, phase names and axes, gate
expressions (gates.py), checkpoint file names, and settings that contradict each
other (loss scaling without fp16, warmup not shorter than the run, ...).
"""

from __future__ import annotations

from specrun.spec import catalog as cat
from specrun.spec import expr as ex
from specrun.spec import owncode
from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic, did_you_mean
from specrun.spec.document import Located
from specrun.spec.gates import (
    as_block,
    check_expr,
    curriculum_axes,
    gates_in,
    known_metrics,
    phase_names_of,
)
from specrun.spec.messages import schema_diagnostics
from specrun.spec.own_rules import (
    code_problem,
    component_of,
    metrics_diagnostics,
    model_needs_diagnostics,
    unknown_hint,
)
from specrun.spec.paths import output_path_diagnostics
from specrun.spec.values import Qty, describe

# ---- components -----------------------------------------------------------------------

def component_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    for kind in cat.KINDS:
        block = data.get(kind)
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            continue
        name = block["type"]
        try:
            comp = cat.resolve(kind, name, loc.path)  # the catalog's, or the user's own code
        except owncode.CodeProblem as problem:
            out.append(code_problem(loc, (kind, "type"), problem))
            continue
        if comp is None:
            out.append(Diagnostic("E300", f"unknown {kind} '{name}'", loc.span((kind, "type")),
                                  unknown_hint(name, cat.names(kind), kind, cat.shown_names(kind))))
            continue
        params = {k: v for k, v in block.items() if k != "type"}
        out += schema_diagnostics(loc, params, comp.params, (kind,), f"{kind} {name}")
    out += model_needs_diagnostics(loc, data)
    out += metrics_diagnostics(loc, data)
    out += _phase_set_diagnostics(loc, data)
    return out


def _phase_set_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """What a phase applies (``task.rounds 16``) is checked against the component's
    parameters like the component block itself, except that nothing is required."""
    out = []
    cur = as_block(data.get("curriculum"))
    if isinstance(cur.get("axes"), list):
        lists = [(("curriculum", "axes", i), a.get("phases")) for i, a in enumerate(cur["axes"]) if isinstance(a, dict)]
    else:
        lists = [(("curriculum",), cur.get("phases"))]
    for base, raw in lists:
        for i, phase in enumerate(raw if isinstance(raw, list) else ()):
            if not isinstance(phase, dict):
                continue
            for kind, params in as_block(phase.get("set")).items():
                comp = component_of(data, kind, loc.path)
                if comp is None or not isinstance(params, dict):
                    continue
                schema = {k: v for k, v in comp.params.items() if k != "required"}
                out += schema_diagnostics(loc, params, schema, base + ("phases", i, "set", kind),
                                           f"{kind} {comp.name}")
    return out


def component_params(data: dict, kind: str) -> dict:
    block = data.get(kind) or {}
    return {k: v for k, v in block.items() if k != "type"}


def semantic_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    cur = as_block(data.get("curriculum"))
    axes = curriculum_axes(data)
    for index, (axis, phases) in enumerate(axes):
        path = ("curriculum",) + (("axes", index) if isinstance(cur.get("axes"), list) else ())
        seen: dict = {}
        for i, phase in enumerate(phases):
            name = phase.get("name")
            if not isinstance(name, str):
                continue
            if name in seen:
                first = loc.span(path + ("phases", seen[name], "name"))
                out.append(Diagnostic("E403", f"phase '{name}' appears twice in {axis}",
                                      loc.span(path + ("phases", i, "name")),
                                      f"the first is at line {first.line}; phase names must differ"))
            seen.setdefault(name, i)
        start = (cur["axes"][index] if isinstance(cur.get("axes"), list) else cur).get("start")
        if isinstance(start, str) and seen and start not in seen:
            out.append(Diagnostic("E402", f"start: {axis} has no phase '{start}'", loc.value_span(path + ("start",)),
                                  did_you_mean(start, list(seen)) or f"phases: {', '.join(seen)}"))
    first_axis: dict = {}
    for index, (axis, _) in enumerate(axes):
        if axis in first_axis and isinstance(axis, str):
            first = loc.span(("curriculum", "axes", first_axis[axis], "name"))
            out.append(Diagnostic("E403", f"axis '{axis}' appears twice",
                                  loc.span(("curriculum", "axes", index, "name")),
                                  f"the first is at line {first.line}; axis names must differ"))
        first_axis.setdefault(axis, index)
    metrics, phase_names = known_metrics(data, loc.path), phase_names_of(data)
    for path, gate in gates_in(data):
        in_phase = len(path) >= 2 and path[-1] == "promote" and "phases" in path
        out += check_expr(loc, path, gate, data, in_phase, metrics, phase_names)
    out += _cross_field(loc, data)
    return out


def _ref_at(data: dict, span: s.Span) -> tuple[str, ...]:
    for _, gate in gates_in(data):
        for node in ex.walk(gate.expr):
            if isinstance(node, s.Ref) and node.span == span:
                return node.parts
    return ("val",)


def _fsdp_diagnostics(loc: Located, data: dict) -> list[Diagnostic]:
    """FSDP hands the optimizer a shard of each weight: only elementwise optimizers can use it."""
    if as_block(data.get("distributed")).get("strategy") != "fsdp":
        return []
    name = as_block(data.get("optimizer")).get("type")
    comp = cat.lookup("optimizer", name) if isinstance(name, str) else None
    if comp is None or comp.extra.get("fsdp"):
        return []
    fits = [n for n in cat.shown_names("optimizer") if (c := cat.lookup("optimizer", n)) and c.extra.get("fsdp")]
    fits.append("an elementwise torch.optim class such as torch.optim.AdamW")
    return [Diagnostic("E600", f"optimizer {name} cannot run under distributed.strategy fsdp: it needs whole "
                               "weight matrices and FSDP gives each rank a shard of them",
                       loc.value_span(("distributed", "strategy")),
                       f"use strategy ddp, or an optimizer made for shards: {', '.join(fits)}")]


def _async_needs_shards(loc: Located, data: dict) -> list[Diagnostic]:
    """checkpoint.async writes DCP shards in the background: only sharded (FSDP) checkpoints have them."""
    if as_block(data.get("checkpoint")).get("async") is not True or \
            as_block(data.get("distributed")).get("strategy") == "fsdp":
        return []
    return [Diagnostic("E600", "checkpoint.async writes sharded checkpoints in the background, and this run's "
                               "checkpoints are not sharded (that takes distributed.strategy fsdp)",
                       loc.value_span(("checkpoint", "async")),
                       "drop async (a one-file checkpoint is written by rank 0 while the others wait), "
                       "or set distributed { strategy fsdp }")]


def _progress_needs_an_end(data: dict) -> list[Diagnostic]:
    """`run.progress` is a share of max_steps or max_epochs: a run without either has none."""
    refs = sorted((n.span for _, g in gates_in(data) for n in ex.walk(g.expr)
                   if isinstance(n, s.Ref) and n.dotted == "run.progress"),
                  key=lambda sp: (sp.path, sp.line, sp.col))
    return [Diagnostic("E600", "run.progress is a share of the run, and this run has no set length", at,
                       "set max_steps or max_epochs") for at in refs[:1]]


def _cross_field(loc: Located, data: dict) -> list[Diagnostic]:
    out = []
    prec = as_block(data.get("precision"))
    if prec.get("loss_scale") == "dynamic" and prec.get("type") not in ("fp16", None):
        out.append(Diagnostic("E600", f"loss_scale dynamic only applies to fp16, not {describe(prec.get('type'))}",
                              loc.span(("precision", "loss_scale")),
                              "bf16 and fp32 have fp32's exponent range: drop loss_scale"))
    sched = as_block(data.get("schedule"))
    steps = data.get("max_steps")
    steps = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps > 0 else None
    epochs = data.get("max_epochs")
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None
    # A run length that is set but invalid has its own error already: no second one here.
    unbounded = "max_steps" not in data and "max_epochs" not in data
    warm = sched.get("warmup")
    warm_at = loc.value_span(("schedule", "warmup"))
    if isinstance(warm, Qty) and warm.span_unit == "%" and not 0 <= warm.value < 100:
        out.append(Diagnostic("E203", f"schedule.warmup must be at least 0% and less than 100%, got {warm}",
                              warm_at))
    if isinstance(warm, Qty) and warm.span_unit == "epochs" and epochs and warm.value >= epochs:
        out.append(Diagnostic("E600", f"warmup of {warm} is not shorter than the run (max_epochs {epochs})",
                              warm_at, "shorten the warmup, or give it as a share of the run: warmup 5%"))
    if isinstance(warm, Qty) and warm.span_unit == "%" and unbounded:
        out.append(Diagnostic("E600", "a warmup in % needs a finite run: set max_steps or max_epochs", warm_at))
    warm_steps = warm if isinstance(warm, int) and not isinstance(warm, bool) else (
        warm.value if isinstance(warm, Qty) and warm.span_unit == "steps" else None)
    if steps and warm_steps is not None and warm_steps >= steps:
        out.append(Diagnostic("E600", f"warmup of {warm_steps} steps is not shorter than the run "
                                      f"(max_steps {steps})", warm_at,
                              "shorten the warmup, or give it as a share of the run: warmup 5%"))
    for section, key in (("validation", "every"), ("checkpoint", "every"), ("log", "every"),
                         ("memory", "check_every")):
        every = as_block(data.get(section)).get(key)
        for i, one in enumerate(every if isinstance(every, list) else [every]):
            if isinstance(one, Qty) and one.dimension == "span" and one.value <= 0:
                at = (section, key, i) if isinstance(every, list) else (section, key)
                out.append(Diagnostic("E203", f"{section}.{key} must be more than 0, got {one}",
                                      loc.value_span(at), "how often: e.g. 500 steps, 1 epoch or 5%"))
    for i, exp in enumerate(data.get("expect") if isinstance(data.get("expect"), list) else ()):
        by = exp.get("by") if isinstance(exp, dict) else None
        if isinstance(by, Qty) and by.dimension == "span" and by.value <= 0:
            out.append(Diagnostic("E203", f"expect ... by must be more than 0, got {by}",
                                  loc.value_span(("expect", i, "by"))))
    out += _fsdp_diagnostics(loc, data)
    out += _async_needs_shards(loc, data)
    out += output_path_diagnostics(loc, data)
    if unbounded:
        out += _progress_needs_an_end(data)
    kind = sched.get("type")
    if kind in ("cosine", "warmup_cosine") and unbounded:
        out.append(Diagnostic("E600", f"a {kind} schedule decays over the run's length: "
                                      "set max_steps or max_epochs", loc.value_span(("schedule", "type"))))
    if "min_ratio" in sched and "eta_min" in sched:
        out.append(Diagnostic("E600", "set either schedule.min_ratio or schedule.eta_min, not both",
                              loc.span(("schedule", "eta_min"))))
    val_refs = sorted((n.span for _, g in gates_in(data) for n in ex.walk(g.expr)
                       if isinstance(n, s.Ref) and n.parts[0] == "val"),
                      key=lambda sp: (sp.path != loc.path, sp.path, sp.line, sp.col))
    best = as_block(as_block(data.get("checkpoint")).get("best")).get("metric", "")
    best = best if isinstance(best, str) else ""
    if (val_refs or best.startswith("val.")) and not data.get("validation"):
        where = val_refs[0] if val_refs else loc.value_span(("checkpoint", "best", "metric"))
        what = ".".join(_ref_at(data, where)) if val_refs else best
        out.append(Diagnostic("E600", f"{what} is read but there is no validation block", where,
                              "add `validation { every 500 steps; batches 10 }`"))
    if best:
        split, _, metric = best.partition(".")
        metrics = known_metrics(data, loc.path)
        if split not in metrics or metric not in metrics[split]:
            out.append(Diagnostic("E400", f"checkpoint.best.metric: unknown metric '{best}'",
                                  loc.value_span(("checkpoint", "best", "metric")),
                                  did_you_mean(best, [f"{a}.{m}" for a in metrics for m in metrics[a]])))
    return out
