"""The CSV sinks: the run's metrics.csv, and the spec's own CSV (``log { csv "x.csv"  columns [...] }``)."""

from __future__ import annotations

from specrun.engine.rundir import CsvLog
from specrun.engine.sinks.base import Sink
from specrun.spec import expr as ex
from specrun.spec import syntax as s


class MetricsCsv(Sink):
    """metrics.csv: every row, synchronously (the record a resume and `specrun runs` read)."""

    def __init__(self, log: CsvLog):
        self.log = log

    def row(self, row: dict) -> None:
        self.log.write(row)

    def close(self) -> None:
        self.log.close()


class SpecCsv(Sink):
    """The spec's extra CSV: each column ``name`` or ``name:source``, sources read from the row or the run."""

    def __init__(self, run, path, columns: list[str]):
        self.run = run
        self.pairs = [tuple(c.split(":", 1)) if ":" in c else (c, c) for c in columns]
        self.log = CsvLog(path, [name for name, _ in self.pairs])

    def row(self, row: dict) -> None:
        self.log.write({name: self._source(src, row) for name, src in self.pairs})

    def close(self) -> None:
        self.log.close()

    def _source(self, src: str, row: dict):
        from specrun.engine.guard import GB, used_bytes

        run = self.run
        if src in row:
            return row[src]
        if src == "phase":
            return run.curriculum.states[0].index if run.curriculum else 0
        if src == "micro_step":  # a document whose "step" is a micro-batch (sha256_bitnet)
            return run.counters.micro
        if src == "threshold":
            return _threshold(run)
        if src == "ram_gb":
            return round(used_bytes("system") / GB, 3)
        if src.startswith(("task.", "model.", "optimizer.")):
            target, _, key = src.partition(".")
            merged = run.curriculum.merged().get(target, {})
            return merged.get(key, run.plan.components[target]["params"].get(key))
        return row.get(f"train.{src}")


def spec_csv(run) -> SpecCsv | None:
    log = run.plan.log
    if not log.csv or not run.main:
        return None
    return SpecCsv(run, run.dir.path / log.csv, log.columns or ["step", "loss:train.loss", "phase"])


def _threshold(run) -> float:
    """The number the current promotion gate compares a metric against (1.0 when none: unreachable)."""
    if not run.curriculum:
        return 1.0
    phase = run.curriculum.phase(0)
    if phase.promote is None:
        return 1.0
    for node in ex.walk(phase.promote.expr):
        if isinstance(node, s.BinOp) and node.op in (">=", ">") and ex.series_refs(node.left) \
                and isinstance(node.right, s.Number):
            return node.right.value
    return 1.0
