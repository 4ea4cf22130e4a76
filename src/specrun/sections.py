"""The Plan's typed sections: what the engine reads, one dataclass per block of the spec.

``build_plan`` fills every default and resolves every unit it can; these classes give
the result names and types, so the engine reads ``plan.checkpoint.on_interrupt``
rather than ``plan.settings["checkpoint"]["on_interrupt"]``, and a misspelt setting
is an AttributeError at the line that misspells it, not a silent ``.get`` default.

Each section is built from its block of ``Plan.settings`` (the plan as a record:
plan.json, ``specrun plan``, the trackers' parameters), so the two never disagree and
``Plan.from_json`` needs nothing more. A block with a key its class does not declare
is refused: the schema and the class must move together.

Spans that depend on the data (``2 epochs``) stay ``Qty`` here; the engine resolves
them once it knows an epoch's length (engine/timeline.py). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from specrun.spec.values import Gate

Span = Any  # an int of optimizer steps, a Qty (epochs, micro_steps), {"seconds": s}, or a list of those


class PlanError(ValueError):
    """A settings block that no section describes: a plan built by another version."""


class _Section:
    """``of(block)``: the section a block of settings describes. ``block`` names it in errors;
    an ``optional`` section is None where the spec has no such block; ``rest`` collects the
    keys the class does not declare (the log block's sinks) instead of refusing them."""

    block: ClassVar[str]
    optional: ClassVar[bool] = False
    rest: ClassVar[str | None] = None

    @classmethod
    def of(cls, raw: dict | None):
        if cls.optional and not raw:
            return None
        raw = dict(raw or {})
        known = {f.name for f in fields(cls) if f.init}
        args = {k: raw.pop(k) for k in list(raw) if k in known}
        if cls.rest:
            args[cls.rest] = raw
        elif raw:
            raise PlanError(f"{cls.block}: {', '.join(sorted(raw))} not a setting this version of specrun knows")
        return cls(**args)


@dataclass(frozen=True)
class Best(_Section):
    """``checkpoint.best``: keep best.pt at the best value of ``metric`` seen so far."""

    block = "checkpoint.best"
    optional = True

    metric: str
    mode: str | None = None  # None: lower is better unless the metric says otherwise (accuracy)
    name: str = "best.pt"
    min_delta: float = 0


@dataclass(frozen=True)
class CheckpointPolicy(_Section):
    block = "checkpoint"

    dir: str
    name: str
    keep: int
    final: str
    resume: str  # "none", "latest", or a path
    resume_phase: str  # "checkpoint" | "start"
    on_interrupt: str  # "save" | "none"
    on_spec_change: str  # "refuse" | "resume"
    optimizer_mismatch: str  # "fresh" | "error"
    every: Span = None
    best: Best | None = None
    background: bool = False  # the spec's `async true` (a word Python keeps for itself): sharded saves written
    #                           while training goes on

    @classmethod
    def of(cls, raw: dict) -> "CheckpointPolicy":
        rest = {k: v for k, v in raw.items() if k != "async"}
        return super().of({**rest, "best": Best.of(raw.get("best")), "background": bool(raw.get("async", False))})


@dataclass(frozen=True)
class LogPolicy(_Section):
    block = "log"
    rest = "sinks"

    every: Span  # build_plan always gives one (a default of about 1% of the run)
    progress: float = 30.0  # seconds between progress lines off a TTY
    csv: str | None = None
    text: str | None = None
    columns: list | None = None
    include: list = field(default_factory=list)  # extra columns: "perplexity", "tokens_per_sec", ...
    sinks: dict = field(default_factory=dict)  # tensorboard / mlflow / wandb: each sink's own block


@dataclass(frozen=True)
class ValidationPolicy(_Section):
    block = "validation"
    optional = True

    every: Span = None
    batches: int | str = 10  # or "all": the task's whole split
    prompts: list = field(default_factory=list)
    max_new_tokens: int = 32

    @classmethod
    def of(cls, raw: dict | None) -> "ValidationPolicy | None":
        return super().of(raw and {**raw, "prompts": raw.get("prompts") or []})


@dataclass(frozen=True)
class MemoryPolicy(_Section):
    block = "memory"

    ram_limit: int | None = None  # bytes
    scope: str = "system"  # "system" | "process"
    check_every: Span = None
    actions: list = field(default_factory=list)
    pause: float = 30.0  # seconds
    still_over: str = "continue"  # "continue" | "save_and_stop"
    vram_limit: int | None = None  # bytes


@dataclass(frozen=True)
class NonfinitePolicy(_Section):
    block = "nonfinite"

    max_consecutive: int = 25
    scope: str = "step"  # "step" | "micro_batch"


@dataclass(frozen=True)
class PrecisionPolicy(_Section):
    block = "precision"

    type: str = "fp32"  # "fp32" | "fp16" | "bf16": what autocast computes in
    loss_scale: str | float = "none"
    weights: str = "fp32"
    tf32: bool = False
    cudnn_benchmark: bool = False
    on_unsupported: str = "fallback"  # "fallback" | "error"


@dataclass(frozen=True)
class DistributedPolicy(_Section):
    block = "distributed"
    optional = True

    strategy: str = "ddp"  # "ddp" | "fsdp"
    nproc_per_node: int = 1
    nnodes: int = 1
    backend: str = "auto"  # "auto" | "nccl" | "gloo"
    rdzv_backend: str = "c10d"
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes


@dataclass(frozen=True)
class SchedulePolicy(_Section):
    block = "schedule"

    type: str = "constant"
    warmup: Span = 0  # optimizer steps, or a Qty in epochs until the engine knows an epoch
    warmup_start: float = 0.0
    min_ratio: float | None = None
    eta_min: float | None = None  # an LR, as in torch's CosineAnnealingLR


@dataclass(frozen=True)
class ProfilerPolicy(_Section):
    block = "profiler"
    optional = True

    enabled: bool = False
    wait: int = 1
    warmup: int = 1
    active: int = 3
    dir: str = "profile"


@dataclass(frozen=True)
class DataloaderPolicy(_Section):
    block = "dataloader"

    workers: int = 0
    pin_memory: bool = False


@dataclass(frozen=True)
class Expectation(_Section):
    """``expect EXPR [by SPAN | throughout] [warn]``; with neither, judged at the end."""

    block = "expect"

    expr: Gate
    by: Span = None
    when: str | None = None  # "throughout"
    severity: str = "fail"  # "fail" | "warn"

    @property
    def throughout(self) -> bool:
        return self.when == "throughout"

    @property
    def at_end(self) -> bool:
        return self.by is None and not self.throughout


@dataclass(frozen=True)
class Sections:
    """Every typed section of one plan, built from its settings in one go."""

    checkpoint: CheckpointPolicy
    log: LogPolicy
    validation: ValidationPolicy | None
    memory: MemoryPolicy
    nonfinite: NonfinitePolicy
    precision: PrecisionPolicy
    distributed: DistributedPolicy | None
    schedule: SchedulePolicy
    profiler: ProfilerPolicy | None
    dataloader: DataloaderPolicy
    expectations: tuple[Expectation, ...]

    @classmethod
    def of(cls, settings: dict) -> "Sections":
        return cls(
            checkpoint=CheckpointPolicy.of(settings["checkpoint"]),
            log=LogPolicy.of(settings["log"]),
            validation=ValidationPolicy.of(settings.get("validation")),
            memory=MemoryPolicy.of(settings.get("memory")),
            nonfinite=NonfinitePolicy.of(settings.get("nonfinite")),
            precision=PrecisionPolicy.of(settings.get("precision")),
            distributed=DistributedPolicy.of(settings.get("distributed")),
            schedule=SchedulePolicy.of(settings.get("schedule")),
            profiler=ProfilerPolicy.of(settings.get("profiler")),
            dataloader=DataloaderPolicy.of(settings.get("dataloader")),
            expectations=tuple(Expectation.of(e) for e in settings.get("expect", [])),
        )


__all__ = ["Best", "CheckpointPolicy", "DataloaderPolicy", "DistributedPolicy", "Expectation", "LogPolicy",
           "MemoryPolicy", "NonfinitePolicy", "PlanError", "PrecisionPolicy", "ProfilerPolicy",
           "SchedulePolicy", "Sections", "Span", "ValidationPolicy"]
