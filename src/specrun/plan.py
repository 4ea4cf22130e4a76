"""build_plan: a checked Spec -> the Plan the engine executes.

The plan is the spec with every default filled in, units resolved where the
spec alone decides them (``5%`` of 80,000 steps -> 4,000 steps; ``10GB`` ->
bytes; ``30s`` -> seconds), the curriculum laid out as axes of phases, and the
gates gathered in one place. Spans in epochs stay symbolic until the engine
knows how many steps an epoch has (that depends on the data).

It serialises to JSON (``plan.json`` in the run directory). Torch-free.
"""

from __future__ import annotations

import copy
import json
import platform
from dataclasses import dataclass, field

from specrun.sections import (CheckpointPolicy, DataloaderPolicy, DistributedPolicy, Expectation, LogPolicy,
                               MemoryPolicy, NonfinitePolicy, PrecisionPolicy, ProfilerPolicy, SchedulePolicy,
                               Sections, ValidationPolicy)
from specrun.spec import catalog as cat
from specrun.spec.check import Spec
from specrun.spec.fmt import format_data
from specrun.spec.rules import component_params
from specrun.spec.schema import spec_schema
from specrun.spec.syntax import QUANTITY
from specrun.spec.units import SPAN_UNITS
from specrun.spec.values import Gate, IntRange, Qty, to_json


@dataclass
class Phase:
    name: str
    set: dict
    promote: Gate | None


@dataclass
class Axis:
    name: str
    phases: list[Phase]
    start: int = 0  # index of the phase a run starts in (the sha256 document's start_round)


@dataclass
class Switch:
    """A feature a gate turns on: ``model.memory.enable when step > 5000``."""

    target: str  # "model"
    name: str  # "memory.enable", passed to set_switch
    gate: Gate


@dataclass
class Plan:
    name: str
    spec_hash: str
    seed: int
    settings: dict  # the whole spec, defaults filled, quantities resolved (see module doc)
    components: dict  # kind -> {"type": name, "impl": path, "params": {...}}
    axes: list[Axis]
    switches: list[Switch]
    estimates: dict = field(default_factory=dict)
    resolved: dict = field(default_factory=dict)  # "schedule.warmup" -> "5% of 80,000 steps"
    profile: str | None = None
    overrides: tuple = ()
    source: str = ""
    # A sweep's trial (set by `specrun sweep`): {"sweep", "number", "objective": metric,
    # "prune": Gate or None}. The engine records what it reads and the sweep's watch decides.
    trial: dict | None = None
    spec_text: str = ""  # the spec as run, canonical text: the run directory's spec.train

    # -- the typed sections the engine reads (specrun/sections.py), built from `settings` -----
    # Derived, so equality and plan.json are the settings'; a plan is not edited once built.
    checkpoint: CheckpointPolicy = field(init=False, repr=False, compare=False)
    log: LogPolicy = field(init=False, repr=False, compare=False)
    validation: ValidationPolicy | None = field(init=False, repr=False, compare=False)
    memory: MemoryPolicy = field(init=False, repr=False, compare=False)
    nonfinite: NonfinitePolicy = field(init=False, repr=False, compare=False)
    precision: PrecisionPolicy = field(init=False, repr=False, compare=False)
    distributed: DistributedPolicy | None = field(init=False, repr=False, compare=False)
    schedule: SchedulePolicy = field(init=False, repr=False, compare=False)
    profiler: ProfilerPolicy | None = field(init=False, repr=False, compare=False)
    dataloader: DataloaderPolicy = field(init=False, repr=False, compare=False)
    expectations: tuple[Expectation, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sections = Sections.of(self.settings)
        for name in Sections.__dataclass_fields__:
            setattr(self, name, getattr(sections, name))

    # -- the run's top-level settings ---------------------------------------------------------

    @property
    def batch(self) -> int:
        return self.settings["batch"]

    @property
    def accumulate(self) -> int:
        return self.settings["accumulate"]

    @property
    def max_steps(self) -> int | None:
        return self.settings.get("max_steps")

    @property
    def max_epochs(self) -> float | None:
        return self.settings.get("max_epochs")

    @property
    def stop(self) -> Gate | None:
        return self.settings.get("stop")

    @property
    def clip_grad_norm(self) -> float | None:
        return self.settings.get("clip_grad_norm")

    @property
    def device(self) -> str:
        return self.settings.get("device", "auto")

    @property
    def compile(self) -> bool:
        return bool(self.settings.get("compile"))

    @property
    def gradient_checkpointing(self) -> bool:
        return bool(self.settings.get("gradient_checkpointing"))

    @property
    def world_size(self) -> int:
        return self.distributed.world_size if self.distributed else 1

    @property
    def effective_batch(self) -> int:
        return self.batch * self.accumulate * self.world_size

    def section(self, name: str) -> dict:
        """A block of the settings as the spec has it (for display: `specrun plan`, trackers)."""
        return self.settings.get(name) or {}

    @property
    def gates(self) -> list[Gate]:
        """Every expression the run evaluates: promotions, switches, expectations, stop."""
        gates = [p.promote for a in self.axes for p in a.phases if p.promote]
        gates += [s.gate for s in self.switches]
        gates += [e.expr for e in self.expectations]
        if self.stop is not None:
            gates.append(self.stop)
        if self.trial and self.trial.get("prune"):
            gates.append(self.trial["prune"])  # a sweep's prune gate reads the run's history like any gate
        return gates

    def to_json(self) -> dict:
        out = {
            "name": self.name, "spec_hash": self.spec_hash, "seed": self.seed,
            "profile": self.profile, "overrides": list(self.overrides), "source": self.source,
            "batch": {"micro": self.batch, "accumulate": self.accumulate, "world_size": self.world_size,
                      "per_rank": self.batch * self.accumulate, "global": self.effective_batch},
            "components": self.components,
            "curriculum": [{"axis": a.name, "phases": [
                {"name": p.name, "set": p.set, "promote": p.promote} for p in a.phases]} for a in self.axes],
            "switches": [{"target": s.target, "name": s.name, "gate": s.gate} for s in self.switches],
            "settings": self.settings,
            "estimates": self.estimates,
            "resolved": self.resolved,
            "spec_text": self.spec_text,
        }
        if self.trial is not None:
            out["trial"] = self.trial
        return to_json(out)

    @classmethod
    def from_json(cls, data: dict) -> "Plan":
        """The Plan a plan.json describes: ``Plan.from_json(plan.to_json()) == plan``.

        JSON carries spans and gates as text; the spec schema (and each component's
        parameter schema) says which strings are quantities and which are expressions.
        Gate text is parsed, so this is a tool for reading runs, not for training.
        """
        root = spec_schema()
        components = {}
        for kind, comp in data["components"].items():
            entry = cat.lookup(kind, comp["type"])
            params = _decode(comp["params"], entry.params, entry.params) if entry else comp["params"]
            components[kind] = {**comp, "params": params}
        settings = _decode(data["settings"], root, root)
        return cls(
            name=data["name"], spec_hash=data["spec_hash"], seed=data["seed"], settings=settings,
            components=components, axes=_axes(settings.get("curriculum") or {}),
            switches=[Switch(s["target"], s["name"], _gate(s["gate"])) for s in data["switches"]],
            estimates=data.get("estimates", {}), resolved=data.get("resolved", {}),
            profile=data.get("profile"), overrides=tuple(data.get("overrides", ())),
            source=data.get("source", ""), spec_text=data.get("spec_text", ""),
            trial=_trial(data.get("trial")),
        )


def _trial(trial: dict | None) -> dict | None:
    if trial and trial.get("prune"):
        return {**trial, "prune": _gate(trial["prune"])}
    return trial


def _gate(text: str) -> Gate:
    from specrun.spec.parse import parse_expression

    return Gate(parse_expression(text))


def _decode(value, schema: dict, root: dict):
    """JSON -> plan values, directed by the schema: spans back to Qty, gate text to Gate."""
    schema = _resolve_ref(schema, root)
    types = schema.get("type")
    types = {types} if isinstance(types, str) else set(types or ())
    if isinstance(value, str) and "gate" in types:
        return _gate(value)
    if isinstance(value, str) and types & {"span", "duration", "bytes"}:
        m = QUANTITY.match(value)
        if m:
            number = m["number"]
            amount = float(number) if any(c in number for c in ".eE") else int(number)
            return Qty(amount, SPAN_UNITS.get(m["unit"], m["unit"]))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: _decode(v, props[k] if k in props else (extra if isinstance(extra, dict) else {}), root)
                for k, v in value.items()}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_decode(v, schema["items"], root) for v in value]
    for sub in schema.get("anyOf", []) + schema.get("oneOf", []):
        decoded = _decode(value, sub, root)
        if decoded is not value:
            return decoded
    return value


# ---- defaults -------------------------------------------------------------------------

def _resolve_ref(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        node = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        schema = node
    return schema


def fill_defaults(value, schema: dict, root: dict):
    """A copy of ``value`` with every absent property that has a default filled in."""
    schema = _resolve_ref(schema, root)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out = dict(value)
        for key, sub in props.items():
            sub = _resolve_ref(sub, root)
            if key in out:
                out[key] = fill_defaults(out[key], sub, root)
            elif "default" in sub:
                out[key] = fill_defaults(_default(sub["default"], sub), sub, root)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [fill_defaults(v, schema["items"], root) for v in value]
    return value


def _default(value, schema: dict):
    if schema.get("type") in ("duration", "bytes", "span") and isinstance(value, str):
        m = QUANTITY.match(value)
        return Qty(float(m["number"]) if "." in m["number"] else int(m["number"]), m["unit"])
    return copy.deepcopy(value)


# ---- units --------------------------------------------------------------------------------

def resolve_span(value, total_steps: int | None, steps_per_epoch: int | None = None,
                 accumulate: int | None = None):
    """A span -> optimizer steps where it can be known; else the Qty unchanged.

    Micro-steps become optimizer steps only where ``accumulate`` is given (a warmup: the
    LR moves once per optimizer step); how often something happens stays in micro-steps
    for the engine, which acts at the step that passes each multiple.
    """
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value
    if not isinstance(value, Qty):
        return value
    unit = value.span_unit
    if unit == "steps":
        return int(value.value)
    if unit == "micro_steps" and accumulate:
        return int(round(value.value / accumulate))
    if unit == "%" and total_steps:
        return int(round(total_steps * value.value / 100))
    if unit == "epochs" and steps_per_epoch:
        return int(round(value.value * steps_per_epoch))
    return value


def _resolve_units(value):
    """bytes -> int, durations -> float seconds; spans stay for resolve_span."""
    if isinstance(value, dict):
        return {k: _resolve_units(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_units(v) for v in value]
    if isinstance(value, Qty) and value.dimension == "bytes":
        return value.bytes
    if isinstance(value, Qty) and value.dimension == "duration":
        return value.seconds
    if isinstance(value, IntRange):
        return [value.lo, value.hi]
    return value


def _pull_switches(kind: str, params: dict, prefix: tuple = ()) -> tuple[dict, list[Switch]]:
    """Gates inside component params become switches the engine drives."""
    out, switches = {}, []
    for k, v in params.items():
        if isinstance(v, Gate):
            switches.append(Switch(kind, ".".join(prefix + (k,)), v))
        elif isinstance(v, dict):
            inner, more = _pull_switches(kind, v, prefix + (k,))
            out[k] = inner
            switches += more
        else:
            out[k] = v
    return out, switches


# ---- the plan ---------------------------------------------------------------------------------

def build_plan(spec: Spec) -> Plan:
    root = spec_schema()
    data = {k: v for k, v in spec.data.items() if k != "sweep"}  # a run ignores its sweep block
    for section in ("precision", "nonfinite", "checkpoint", "log"):
        data.setdefault(section, {"type": "fp32"} if section == "precision" else {})
    settings = fill_defaults(data, root, root)
    components, switches = {}, []
    for kind in cat.KINDS:
        comp = cat.resolve(kind, settings[kind]["type"], spec.path)
        params = fill_defaults(component_params(settings, kind), comp.params, comp.params)
        params, more = _pull_switches(kind, _resolve_units(params))
        switches += more
        components[kind] = {"type": comp.name, "impl": comp.impl, "params": params}
        if comp.extra.get("code"):  # the user's own code, or a torch class: where the run imports it from
            components[kind]["code"] = comp.extra["code"]
        if comp.extra.get("unchecked"):
            components[kind]["unchecked"] = comp.extra["unchecked"]
        from_data = [n for n in comp.extra.get("needs", ()) if n not in params]
        if from_data:  # a user model's arguments the data announces (vocab_size, classes)
            components[kind]["from_data"] = from_data
    if settings.get("metrics"):
        components["metrics"] = _metrics_component(settings, spec.path)
    total = settings.get("max_steps")
    if "every" in (settings.get("checkpoint") or {}):
        settings["checkpoint"]["every"] = _wall_clock(settings["checkpoint"]["every"])
    settings = _resolve_units({k: v for k, v in settings.items() if k not in cat.KINDS})
    resolved = {}
    accumulate = settings.get("accumulate", 1)
    for section, key in (("schedule", "warmup"), ("validation", "every"), ("checkpoint", "every"),
                         ("log", "every"), ("memory", "check_every")):
        if key in settings.get(section, {}):
            written = settings[section][key]
            if isinstance(written, list):  # checkpoint.every [500 steps, 1 epoch]
                settings[section][key] = [resolve_span(w, total) for w in written]
                continue
            settings[section][key] = resolve_span(written, total,
                                                  accumulate=accumulate if section == "schedule" else None)
            if isinstance(written, Qty) and written.span_unit == "%" and total:
                resolved[f"{section}.{key}"] = f"{written} of {total:,} steps"
            elif isinstance(written, Qty) and written.span_unit == "micro_steps":
                resolved[f"{section}.{key}"] = _micro_text(written, accumulate, section == "schedule")
    if "every" not in settings["log"]:
        settings["log"]["every"], resolved["log.every"] = default_log_every(total)
    for exp in settings.get("expect", []):
        if "by" in exp:
            exp["by"] = resolve_span(exp["by"], total)
    axes = _axes(settings.get("curriculum") or {})
    resolved.update(_progress_points(settings, axes, switches))
    resolved.update(spec.follows)
    plan = Plan(
        name=spec.name, spec_hash=spec.hash, seed=settings.get("seed", 0), settings=settings,
        components=components, axes=axes, switches=switches, profile=spec.profile,
        overrides=spec.overrides, source=spec.path, resolved=resolved, spec_text=format_data(spec.data),
    )
    plan.estimates = _estimates(plan)
    return plan


def _metrics_component(settings: dict, spec_path: str) -> dict:
    """The spec's `metrics` as one component: built-in names and the user's functions."""
    from specrun.spec.own_rules import metric_names

    raw = settings["metrics"]
    items = [(name, {}) for name in raw] if isinstance(raw, list) else \
        [(raw["type"], {k: v for k, v in raw.items() if k != "type"})]
    entries = []
    for name, params in items:
        if cat.is_builtin_metric(name):
            entries.append({"name": name})
            continue
        comp = cat.own_component("metrics", name, spec_path)
        names = params.pop("names", None) or comp.extra.get("returns")
        params = fill_defaults(params, comp.params, comp.params)
        entries.append({"name": name, "code": comp.extra["code"], "params": _resolve_units(params),
                        "names": list(names)})
    declared = [n for n, _ in metric_names(settings, spec_path)]
    return {"type": "metrics", "impl": "specrun.components.own.metrics:build_metrics",
            "params": {"entries": entries}, "names": declared}


def code_changes(old_plan, plan: Plan) -> list[str]:
    """The user's code files that changed since a run began (plan.json keeps their hashes):
    a resumed run goes on with the code as it is now, and says so."""
    old = old_plan.get("components") if isinstance(old_plan, dict) else None
    out = []
    for kind, entry in plan.components.items():
        before = old.get(kind) if isinstance(old, dict) else None
        was = before.get("code", {}).get("sha256") if isinstance(before, dict) and \
            isinstance(before.get("code"), dict) else None
        now = (entry.get("code") or {}).get("sha256")
        if was and now and was != now:
            out.append(f"{entry['code'].get('file', entry['type'])} changed since the run began; "
                       "going on with the code as it is now")
    return out


def _wall_clock(every):
    """``every 30min`` -> ``{"seconds": 1800.0}``: a time, kept apart from a count of steps."""
    if isinstance(every, list):
        return [_wall_clock(one) for one in every]
    if isinstance(every, Qty) and every.dimension == "duration":
        return {"seconds": every.seconds}
    return every


def default_log_every(total_steps: int | None) -> tuple[int, str]:
    """A metric row about every 1% of the run (at most every 100 steps) when the spec gives no
    ``log.every``: without one, rows came only with validation."""
    if total_steps:
        every = max(1, min(100, total_steps // 100))
        return every, f"default: every {every} steps (1% of {total_steps:,}, at most 100)"
    return 100, "default: every 100 steps"


def _micro_text(written: Qty, accumulate: int, rounded: bool) -> str:
    """How a span in micro-steps maps onto optimizer steps of ``accumulate`` micro-batches."""
    steps = written.value / accumulate
    if rounded:  # `specrun plan` goes on with "= N steps"
        return f"{written} (accumulate {accumulate})"
    if float(steps).is_integer():
        return f"{written} = {round(steps):,} optimizer steps of {accumulate} micro-batches"
    return (f"{written} = {steps:g} optimizer steps of {accumulate}: at the step that passes "
            f"each multiple of {written.value:,} micro-batches")


def _progress_points(settings: dict, axes: list[Axis], switches: list[Switch]) -> dict:
    """Where each `run.progress >= 50%` falls: `step 40,000 of 80,000` or `epoch 15 of 30`."""
    from specrun.spec import expr as ex
    from specrun.spec import syntax as s

    total, epochs = settings.get("max_steps"), settings.get("max_epochs")
    if not (total or epochs):
        return {}
    gates = [(f"curriculum.{a.name}.{p.name}.promote" if a.name != "curriculum" else f"curriculum.{p.name}.promote",
              p.promote) for a in axes for p in a.phases if p.promote]
    gates += [(f"{sw.target}.{sw.name}", sw.gate) for sw in switches]
    gates += [("stop", settings["stop"])] if settings.get("stop") else []
    gates += [(f"expect {e['expr']}", e["expr"]) for e in settings.get("expect", [])]
    out = {}
    for where, gate in gates:
        for node in ex.walk(gate.expr):
            if not (isinstance(node, s.BinOp) and node.op in ("<", "<=", ">", ">=", "==", "!=")):
                continue
            for ref, q in ((node.left, node.right), (node.right, node.left)):
                if isinstance(ref, s.Ref) and ref.dotted == "run.progress" and isinstance(q, (s.Quantity, s.Number)):
                    share = float(ex.literal(q))
                    at = (f"step {round(share * total):,} of {total:,}" if total
                          else f"epoch {share * epochs:g} of {epochs}")
                    out[f"{where}: run.progress {node.op} {q.text}" if ref is node.left
                        else f"{where}: {q.text} {node.op} run.progress"] = at
    return out


def _axes(curriculum: dict) -> list[Axis]:
    raw = curriculum.get("axes") or ([{"name": "curriculum", "phases": curriculum["phases"],
                                       "start": curriculum.get("start")}] if curriculum.get("phases") else [])
    axes = []
    for a in raw:
        phases = [Phase(p["name"], p.get("set", {}), p.get("promote")) for p in a["phases"]]
        start = [p.name for p in phases].index(a["start"]) if a.get("start") else 0
        axes.append(Axis(a["name"], phases, start))
    return axes


def _estimates(plan: Plan) -> dict:
    out = {"python": platform.python_version()}
    model = cat.lookup("model", plan.components["model"]["type"])  # None for the user's own
    estimator = model.extra.get("estimate") if model else None
    if estimator:  # a torch-free "module:function(params, task_params) -> int"
        from importlib import import_module

        mod, _, fn = estimator.partition(":")
        try:
            out["parameters"] = getattr(import_module(mod), fn)(
                plan.components["model"]["params"], plan.components["task"]["params"])
        except Exception as exc:  # an estimate must never stop a plan from printing
            out["parameters_error"] = str(exc)
    return out


# ---- what changed between two plans ---------------------------------------------------------

def plan_changes(old: dict, new: Plan) -> list[str]:
    """``path: old -> new`` for every setting an earlier run's plan.json and this plan differ in.

    ``old`` is read back from a run directory: anything that is not a plan's shape is
    reported as unreadable rather than trusted.
    """
    if not isinstance(old, dict) or not isinstance(old.get("settings"), dict) \
            or not isinstance(old.get("components"), dict):
        return ["(the earlier run's plan.json cannot be read)"]
    a, b = _flat_plan(old), _flat_plan(new.to_json())
    return [f"{key}: {a.get(key, '(unset)')} -> {b.get(key, '(unset)')}"
            for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]


def _flat_plan(data: dict) -> dict[str, str]:
    out: dict[str, str] = {}
    for kind, comp in data["components"].items():
        if isinstance(comp, dict):
            out[kind] = str(comp.get("type"))
            _flatten(comp.get("params"), kind, out)
    settings = {k: v for k, v in data["settings"].items()}
    if isinstance(settings.get("checkpoint"), dict):  # where a run starts from, how it writes, is not what it is
        settings["checkpoint"] = {k: v for k, v in settings["checkpoint"].items() if k not in ("resume", "async")}
    _flatten(settings, "", out)
    return out


def _flatten(value, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
        for v in value:  # phases and axes by name, as profiles and --set address them
            _flatten({k: x for k, x in v.items() if k != "name"}, f"{prefix}.{v['name']}", out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)
