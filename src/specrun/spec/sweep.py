"""The sweep block: many runs of one spec, and how to search them (``specrun sweep``).

    sweep {
      minimize val.loss
      trials 12
      prune when step >= 100 and val.loss > 1.5 * best(val.loss)
      optimizer.lr log 1e-4..1e-2     # a range: uniform, or log-scaled
      model.width [32, 64, 128]       # a list of choices
    }

The settings in ``CONTROL`` say how to search; every other setting in the block is a
dimension, named by the path ``--set`` would take. Each choice (each bound of a range)
is checked exactly as the ``--set`` it becomes: ``check`` hands in ``try_set``, which
applies one override to the spec and returns the problems it causes. Torch- and
optuna-free: ``validate`` checks a sweep without either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from specrun.spec import syntax as s
from specrun.spec.diagnostics import Diagnostic, did_you_mean
from specrun.spec.document import Located
from specrun.spec.fmt import data_value
from specrun.spec.values import Gate, IntRange, Qty

CONTROL = ("minimize", "maximize", "trials", "sampler", "prune", "pruner", "storage")
SCALES = ("log",)


@dataclass(frozen=True)
class Dimension:
    """One searched setting: a list of choices, or a range (whole numbers when both bounds are)."""

    path: str  # as --set names it: optimizer.lr, curriculum.warm.task.rounds
    choices: tuple | None = None
    lo: int | float | None = None
    hi: int | float | None = None
    log: bool = False

    @property
    def integer(self) -> bool:
        return self.choices is None and all(isinstance(v, int) for v in (self.lo, self.hi))

    def describe(self) -> str:
        if self.choices is not None:
            return "[" + ", ".join(data_value(c) for c in self.choices) + "]"
        return ("log " if self.log else "") + f"{self.lo}..{self.hi}"


@dataclass(frozen=True)
class Sweep:
    metric: str  # train.X or val.X
    direction: str  # minimize / maximize
    trials: int
    sampler: str
    pruner: str
    prune: Gate | None
    storage: str | None
    dimensions: tuple[Dimension, ...]

    @property
    def grid_size(self) -> int | None:
        """How many combinations a grid has (None when a dimension is a range)."""
        size = 1
        for dim in self.dimensions:
            if dim.choices is None:
                return None
            size *= len(dim.choices)
        return size


def without_sweep(doc: s.Document) -> s.Document:
    """The spec a trial runs: no sweep block, and no profile statement about one."""

    def keep(item) -> bool:
        return not (isinstance(item, s.Setting) and item.key[0] == "sweep")

    items = []
    for item in filter(keep, doc.items):
        if isinstance(item, s.Setting) and item.key == ("profile",) and item.block is not None:
            item = replace(item, block=replace(item.block, items=tuple(filter(keep, item.block.items))))
        items.append(item)
    return replace(doc, items=tuple(items))


def set_option(path: str, value) -> str:
    """``--set`` text for one chosen value: ``model.width=128``."""
    return f"{path}={data_value(value)}"


def leaves(block: dict, prefix: tuple = ()):
    """(path, value) of each dimension: every setting of the block but the control ones."""
    for key, value in block.items():
        if not prefix and key in CONTROL:
            continue
        if isinstance(value, dict) and not (set(value) == {"type"} and isinstance(value["type"], str)):
            yield from leaves(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def definition(data: dict) -> Sweep | None:
    """The sweep of checked spec data (None without a sweep block)."""
    block = data.get("sweep")
    if not isinstance(block, dict):
        return None
    direction = "maximize" if "maximize" in block else "minimize"
    dims = []
    for path, value in leaves(block):
        dotted = ".".join(path)
        if isinstance(value, list):
            dims.append(Dimension(dotted, choices=tuple(value)))
        else:
            dims.append(Dimension(dotted, lo=value.lo, hi=value.hi, log=value.scale == "log"))
    return Sweep(metric=block.get(direction), direction=direction, trials=block.get("trials", 20),
                 sampler=block.get("sampler", "tpe"), pruner=block.get("pruner", "none"),
                 prune=block.get("prune"), storage=block.get("storage"), dimensions=tuple(dims))


# ---- checking --------------------------------------------------------------------------------

def diagnostics(loc: Located, data: dict, metrics: dict, try_set) -> list[Diagnostic]:
    """Everything wrong with the sweep block; ``try_set(setting)`` checks one choice."""
    block = data.get("sweep")
    if not isinstance(block, dict):
        return []
    out = _objective(loc, block, metrics, bool(data.get("validation")))
    found = list(leaves(block))
    if not found:
        out.append(Diagnostic("E204", "the sweep searches no setting", loc.span(("sweep",), key=True),
                              "add a list of choices or a range: `model.width [64, 128]`, "
                              "`optimizer.lr log 1e-4..1e-2`"))
    for path, value in found:
        out += _dimension(loc, path, value, block.get("sampler"), try_set)
    return out


def _objective(loc: Located, block: dict, metrics: dict, validates: bool) -> list[Diagnostic]:
    given = [k for k in ("minimize", "maximize") if k in block]
    if not given:
        return [Diagnostic("E204", "the sweep has no objective", loc.span(("sweep",), key=True),
                           "say what to optimise: `minimize val.loss` or `maximize val.accuracy`")]
    if len(given) == 2:
        return [Diagnostic("E600", "a sweep has one objective: minimize or maximize, not both",
                           loc.span(("sweep", "maximize"), key=True))]
    key = given[0]
    metric = block[key]
    if not isinstance(metric, str):
        return []  # the schema has said so
    where = loc.value_span(("sweep", key))
    split, _, name = metric.partition(".")
    if split not in metrics or name not in metrics[split]:
        everything = [f"{sp}.{m}" for sp in metrics for m in sorted(metrics[sp])]
        hint = did_you_mean(metric, everything)
        if hint is None and split not in metrics:
            hint = f"a metric is read with its split: train.{metric}" if metric in metrics["train"] else \
                f"metrics: {', '.join(everything)}"
        return [Diagnostic("E400", f"sweep.{key}: unknown metric '{metric}'", where,
                           hint or f"{split} metrics: {', '.join(sorted(metrics[split]))}")]
    if split == "val" and not validates:
        return [Diagnostic("E600", f"{metric} is read but there is no validation block", where,
                           "add `validation { every 500 steps; batches 10 }`")]
    return []


def _dimension(loc: Located, path: tuple, value, sampler, try_set) -> list[Diagnostic]:
    full = ("sweep",) + path
    dotted = ".".join(path)
    where = loc.value_span(full)
    if isinstance(value, list):
        if not value:
            return [Diagnostic("E203", f"sweep: {dotted} has no choices", where,
                               f"list what to try: `{dotted} [a, b]`")]
        out = []
        for i, choice in enumerate(value):
            out += _try(loc, path, choice, loc.value_span(full + (i,)), try_set)
        return out
    if not isinstance(value, IntRange):
        hint = did_you_mean(path[0], CONTROL) if len(path) == 1 else None
        return [Diagnostic("E201", f"sweep: {dotted} needs a list of choices or a range, got "
                                   f"{_shown(value)}", where,
                           hint or f"e.g. `{dotted} [{_shown(value)}, ...]`, or `{dotted} 1..8`")]
    if value.scale is not None and value.scale not in SCALES:
        return [Diagnostic("E206", f"sweep: {dotted}: unknown scale '{value.scale}'", where,
                           "a range is uniform (`1..8`) or log-scaled (`log 1e-4..1e-2`)")]
    if not value.lo < value.hi:
        return [Diagnostic("E203", f"sweep: the range of {dotted} runs from low to high, got {value}", where)]
    if value.scale == "log" and value.lo <= 0:
        return [Diagnostic("E203", f"sweep: a log range needs bounds above 0, got {value}", where,
                           "use a uniform range, or a positive low bound")]
    if sampler == "grid":
        return [Diagnostic("E600", f"sampler grid tries every combination of choices; {dotted} is a range",
                           where, f"list the values to try, `{dotted} [{value.lo}, ..., {value.hi}]`, "
                                  "or use sampler tpe or random")]
    out = _try(loc, path, value.lo, where, try_set) + _try(loc, path, value.hi, where, try_set)
    return [Diagnostic(d.code, d.message, d.span, d.hint or "a range searches numbers; list the choices "
                       f"to try instead: `{dotted} [a, b]`") if d.code == "E201" else d for d in out]


def _shown(value) -> str:
    if isinstance(value, dict):
        return data_value(value["type"]) if "type" in value else "a block"
    if isinstance(value, Gate):
        return f"`when {value}`"
    return data_value(value)


def _try(loc: Located, path: tuple, value, span: s.Span, try_set) -> list[Diagnostic]:
    """The problems of ``--set PATH=value``, told as the sweep's."""
    key_span = loc.span(("sweep",) + path, key=True)
    setting = s.Setting(tuple(path), key_span, _syntax(value, span), None, None, span)
    out = []
    for d in try_set(setting):
        if d.span.path == span.path and span.line <= d.span.line <= span.end_line \
                or d.span == key_span:
            out.append(d)
        else:  # a consequence elsewhere (`max_steps [10]` against a warmup of 20 steps)
            out.append(Diagnostic(d.code, d.message, d.span,
                                  f"when the sweep sets {'.'.join(path)} {data_value(value)} "
                                  f"(line {span.line})" + (f"; {d.hint}" if d.hint else "")))
    return out


def _syntax(value, span: s.Span):
    """A plain value back as syntax, spanned where the sweep wrote it."""
    if isinstance(value, bool):
        return s.Bool(value, span)
    if isinstance(value, (int, float)):
        return s.Number(value, repr(value), span)
    if isinstance(value, str):
        parts = tuple(value.split("."))
        if all(p.isidentifier() for p in parts):
            return s.Name(parts, span)
        return s.String(value, span)
    if isinstance(value, Qty):
        return s.Quantity(value.value, value.unit, str(value), span)
    if isinstance(value, IntRange):
        return s.Range(_syntax(value.lo, span), _syntax(value.hi, span), span, value.scale)
    if isinstance(value, list):
        return s.List(tuple(_syntax(v, span) for v in value), span)
    raise TypeError(f"not a value: {value!r}")
