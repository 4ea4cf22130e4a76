"""MLflow: ``log { mlflow { experiment "sha256"  run_name "try-3"  tracking_uri "http://mlflow:5000" } }``.

One MLflow run per specrun run: parameters are the resolved plan flattened
(``components.optimizer.params.lr``...), metrics every logged column at its step
(``train.loss``, ``val.accuracy``...), tags say spec, profile, overrides, git
commit and run id; spec.train and plan.json are artifacts from the start, and
events.jsonl at the end. Promotions become tags (``specrun.phase.<axis>``, the
current phase; ``specrun.promoted.<axis>.<phase>``, when and on what values), a
broken expectation ``specrun.expectation_failed``, the end the run's status.
The exported model (``specrun export``: ``<run>/export``) becomes the ``model``
artifact: at the end of a run when an export is there, or right after the export.

Where: ``tracking_uri`` when the spec gives one (a server: the check refuses a
local store, which would be a file written outside the run), else ``MLFLOW_TRACKING_URI``,
else a SQLite store shared by every run under the runs folder:
``sqlite:///runs/.mlflow/mlflow.db`` with artifacts beside it in
``runs/.mlflow/artifacts`` (``mlflow ui --backend-store-uri sqlite:///runs/.mlflow/mlflow.db``).

A resumed run reads the MLflow run id back from ``<run>/trackers/mlflow.json``
(checked, and looked up in the store) and goes on logging into that run from
the step after the last one it sent, so no step is logged twice.

Runs in a process of its own (``process.Subprocess``): nothing here runs in the
training process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from specrun.engine.sinks.process import Subprocess
from specrun.engine.sinks.tensorboard import describe_event
from specrun.engine.sinks.tracking import Record, numeric, plan_params, require, run_name, run_tags

SETTING = "mlflow"
RECORD_FIELDS = {"run_id": r"[0-9a-f]{32}", "tracking_uri": r".{1,2000}"}
SERVERS = ("http://", "https://", "databricks")
BATCH = 1000  # MLflow's limit of metrics per log_batch call
STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def open_sink(opening) -> Subprocess:
    settings = opening.settings if isinstance(opening.settings, dict) else {}
    uri = settings.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:"
    for package in ("mlflow", "sqlalchemy", "alembic") if uri.startswith("sqlite:") else ("mlflow",):
        require(package, SETTING, "mlflow")  # the SQLite store needs two packages the client does not
    args = (opening.plan.to_json(), opening.run_dir.path, settings, str(opening.runs_base))
    return Subprocess(SETTING, f"{__name__}:MlflowTracker", args, opening.run_dir.sinks.warn)


def default_store(runs_base) -> tuple[str, str]:
    """(tracking URI, artifact location) of the store every run under ``runs_base`` shares."""
    root = (Path(runs_base) / ".mlflow").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


class MlflowTracker:
    def __init__(self, plan: dict, run_path: Path, settings: dict, runs_base: str, warn):
        import logging

        from mlflow.tracking import MlflowClient

        # MLflow and its migrations log at INFO ("Creating initial MLflow database tables..."):
        # the console is the run's, not theirs.
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.run_path = Path(run_path)
        artifacts = None
        uri = settings.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri, artifacts = default_store(runs_base)
        self.client = MlflowClient(tracking_uri=uri)
        self.record = Record(self.run_path, SETTING, RECORD_FIELDS)
        self.pending: list = []
        self.status = "KILLED"  # until the run's `end` event says otherwise
        found = self.record.read(warn)
        if found is not None and found["tracking_uri"] != uri:
            warn(f"the MLflow run of this run directory is in {found['tracking_uri']}, this segment logs to "
                 f"{uri}: starting a new MLflow run there")
            found = None
        if found is not None and self._exists(found["run_id"]):
            self.run_id, self.last_step = found["run_id"], max(found["step"], self._last_logged(found["run_id"]))
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            if found is not None:
                warn(f"MLflow run {found['run_id']} is not in {uri} any more: starting a new MLflow run")
            self.run_id, self.last_step = self._start(plan, settings, artifacts), 0
        self.uri = uri
        self._save_record()

    def _start(self, plan: dict, settings: dict, artifacts: str | None) -> str:
        from mlflow.entities import Param

        name = settings.get("experiment") or plan["name"]
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else \
            self.client.create_experiment(name, artifact_location=f"{artifacts}/{name}" if artifacts else None)
        run = self.client.create_run(experiment_id, run_name=run_name(plan, self.run_path, settings),
                                     tags=run_tags(plan, self.run_path))
        params = [Param(k, _param_value(v)) for k, v in plan_params(plan).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self.client.log_batch(run.info.run_id, params=params[i:i + 100])
        for name in ("spec.train", "plan.json"):
            if (self.run_path / name).exists():
                self.client.log_artifact(run.info.run_id, str(self.run_path / name))
        return run.info.run_id

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def _last_logged(self, run_id: str) -> int:
        """The highest step the store holds (a kill may have come after a send, before the record)."""
        steps = [m.step for key in self.client.get_run(run_id).data.metrics
                 for m in self.client.get_metric_history(run_id, key)[-1:]]
        return max(steps, default=0)

    # ---- the sink ------------------------------------------------------------------------------

    def row(self, row: dict) -> None:
        from mlflow.entities import Metric

        step = int(row["step"])
        if step <= self.last_step:  # sent by the segment before this one resumed
            return
        stamp = int(row.get("time", time.time()) * 1000)
        self.pending += [Metric(k, v, stamp, step) for k, v in numeric(row).items()]
        self.last_step = step

    def event(self, record: dict) -> None:
        kind, step = record["event"], record["step"]
        fields = {k: v for k, v in record.items() if k not in ("time", "step", "event")}
        if kind == "phase":
            self.client.set_tag(self.run_id, f"specrun.phase.{fields['axis']}", fields["new"])
            self.client.set_tag(self.run_id, f"specrun.promoted.{fields['axis']}.{fields['new']}",
                                f"step {step}: {describe_event(kind, fields)}")
        elif kind in ("expectation_failed", "early_stop"):
            self.client.set_tag(self.run_id, f"specrun.{kind}", f"step {step}: {describe_event(kind, fields)}")
        elif kind == "resume":
            self.client.set_tag(self.run_id, "specrun.resumed_at", str(step))
        elif kind == "end":
            self.status = STATUS.get(fields.get("status"), "FAILED")
            self.client.set_tag(self.run_id, "specrun.status", f"{fields.get('status')}: {fields.get('message')}")

    def flush(self) -> None:
        for i in range(0, len(self.pending), BATCH):
            self.client.log_batch(self.run_id, metrics=self.pending[i:i + BATCH])
        if self.pending:
            self.pending = []
            self._save_record()

    def close(self) -> None:
        self.flush()
        events = self.run_path / "events.jsonl"
        if events.exists():
            self.client.log_artifact(self.run_id, str(events))
        if (self.run_path / "export").is_dir():  # exported after an earlier segment
            self.client.log_artifacts(self.run_id, str(self.run_path / "export"), "model")
        self.client.set_terminated(self.run_id, status=self.status)

    def _save_record(self) -> None:
        self.record.write({"run_id": self.run_id, "tracking_uri": self.uri, "step": self.last_step})


def _param_value(value) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."  # MLflow's limit on a parameter's value


def attach_export(run_path, folder, runs_base="runs") -> str | None:
    """After ``specrun export``: the export as the ``model`` artifact of the run's MLflow run.

    Returns a line to show, or None when the run logged to no MLflow run. The record in
    the run directory is untrusted: its store must be the one this run's spec and this
    environment point at, or nothing is written.
    """
    import importlib.util
    import json

    said: list[str] = []
    record = Record(Path(run_path), SETTING, RECORD_FIELDS).read(said.append)
    if record is None:
        return f"the export is not attached to MLflow: {said[0]}" if said else None
    try:
        plan = json.loads((Path(run_path) / "plan.json").read_text(encoding="utf-8"))
        named = plan["settings"]["log"]["mlflow"].get("tracking_uri")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        named = None
    expected = named if isinstance(named, str) and named.startswith(SERVERS) else \
        os.environ.get("MLFLOW_TRACKING_URI") or default_store(runs_base)[0]
    if record["tracking_uri"] != expected:
        return (f"the export is not attached to MLflow: the run's store {record['tracking_uri']} is not "
                f"the one this spec and environment use ({expected})")
    if importlib.util.find_spec("mlflow") is None:
        return "the export is not attached to MLflow: pip install 'specrun[mlflow]'"
    try:
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=expected).log_artifacts(record["run_id"], str(folder), "model")
    except Exception as exc:  # the export is written; a tracker that fails only says so
        return f"the export is not attached to MLflow run {record['run_id']}: {type(exc).__name__}: {exc}"
    return f"attached to MLflow run {record['run_id']} as its `model` artifact"
