"""Metric histories: what gates read, kept small and saved in every checkpoint.

Each series (``train.loss``, ``val.accuracy``) keeps a bounded window of recent
values plus the running aggregates the expression functions need (first,
best, count, each requested EMA). The window is as long as the longest
``mean(x, n)`` in the plan asks for, and each ``plateau()`` keeps its own best
and count of values since it (as early stopping always has), so gates see
exactly what they would have seen in an uninterrupted run after a resume.
"""

from __future__ import annotations

from collections import deque

from specrun.spec import expr as ex
from specrun.spec import syntax as s


def window_sizes(gates) -> tuple[dict[str, int], set[tuple[str, float]], set[tuple]]:
    """How many recent values each series needs, which EMAs and which plateau trackers are read."""
    sizes: dict[str, int] = {}
    emas: set[tuple[str, float]] = set()
    plateaus: set[tuple] = set()
    for gate in gates:
        for node in ex.walk(gate.expr):
            if isinstance(node, s.Ref) and node.parts[0] in ("train", "val"):
                sizes.setdefault(node.dotted, 1)
            fn = ex.FUNCTIONS.get(node.name) if isinstance(node, s.Call) else None
            if fn is None or not fn.reads_series:
                continue
            name = node.args[0].dotted
            sizes[name] = max(sizes.get(name, 1), fn.window(node))
            if fn.tracker == "ema":
                emas.add((name, float(ex.literal(node.args[1]))))
            elif fn.tracker == "plateau":
                plateaus.add(ex.plateau_key(node))
    return sizes, emas, plateaus


class History:
    def __init__(self, sizes: dict[str, int], emas: set[tuple[str, float]], plateaus=()):
        self.sizes = dict(sizes)
        self.prefixes = {name.partition(".")[0] for name in self.sizes}  # "train", "val": what record_all keeps
        self.context = ex.Context()
        for name, alpha in emas:
            self.context.emas[(name, alpha)] = None
        self.ema_keys = sorted(emas)
        for key in plateaus:  # (series, min_delta, lower) -> [best, values since it]
            self.context.plateaus[key] = [None, 0]

    def record(self, name: str, value: float) -> None:
        ctx = self.context
        if name not in ctx.series:
            ctx.series[name] = deque(maxlen=self.sizes.get(name, 1))
            ctx.firsts[name] = value
        ctx.series[name].append(value)
        ctx.counts[name] = ctx.counts.get(name, 0) + 1
        best = ctx.bests.get(name)
        if best is None or (value < best if ex.lower_is_better(name) else value > best):
            ctx.bests[name] = value
        for key in self.ema_keys:
            if key[0] == name:
                prev = ctx.emas.get(key)
                ctx.emas[key] = value if prev is None else key[1] * value + (1 - key[1]) * prev
        for key, tracker in ctx.plateaus.items():
            if key[0] == name:
                ex.update_plateau(tracker, value, key[1], key[2])

    def record_all(self, prefix: str, values: dict[str, float]) -> None:
        """Record the series something reads (a gate, the best checkpoint); the CSV has the rest."""
        if prefix not in self.prefixes:  # the common case, replayed for every step: nothing reads them
            return
        for k, v in values.items():
            name = f"{prefix}.{k}"
            if name in self.sizes:
                self.record(name, v)

    def latest(self, name: str):
        values = self.context.series.get(name)
        return values[-1] if values else None

    def state_dict(self) -> dict:
        ctx = self.context
        return {
            "series": {k: list(v) for k, v in ctx.series.items()},
            "firsts": dict(ctx.firsts), "bests": dict(ctx.bests), "counts": dict(ctx.counts),
            "emas": [[k[0], k[1], v] for k, v in ctx.emas.items()],
            "plateaus": [[*k, *v] for k, v in ctx.plateaus.items()],
        }

    def load_state_dict(self, state: dict) -> None:
        ctx = self.context
        ctx.series = {k: deque(v, maxlen=self.sizes.get(k, 1)) for k, v in state["series"].items()}
        ctx.firsts, ctx.bests, ctx.counts = dict(state["firsts"]), dict(state["bests"]), dict(state["counts"])
        for name, alpha, value in state["emas"]:
            if (name, alpha) in ctx.emas:
                ctx.emas[(name, alpha)] = value
        for name, min_delta, lower, best, since in state.get("plateaus", []):
            if (name, min_delta, lower) in ctx.plateaus:
                ctx.plateaus[(name, min_delta, lower)] = [best, since]
