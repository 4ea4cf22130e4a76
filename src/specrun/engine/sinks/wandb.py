"""Weights & Biases: ``log { wandb { project "sha256"  entity "lab"  mode offline } }``.

One W&B run per specrun run, its files under ``<run>/wandb/``: config is the
resolved plan (``plan.json``'s content), metrics every logged column at its
step with ``/`` for W&B's sections (``train/loss``, ``val/accuracy``), tags the
spec, profile and run id; promotions, broken expectations and the end go to the
run summary (``specrun.phase.<axis>``...) as they happen, and events.jsonl is
saved with the run at the end.

``mode``: ``online`` (W&B's default: needs ``wandb login``), ``offline`` (no
network and no account: ``wandb sync <run>/wandb/offline-run-*`` uploads later)
or ``disabled``; without it W&B's own ``WANDB_MODE`` decides.

A resumed run reads its W&B run id back from ``<run>/trackers/wandb.json``
(checked) and resumes that run (``resume="allow"``) from the step after the
last one it sent.

Runs in a process of its own (``process.Subprocess``): nothing here runs in the
training process.
"""

from __future__ import annotations

from pathlib import Path

from specrun.engine.sinks.process import Subprocess
from specrun.engine.sinks.tensorboard import describe_event, tag
from specrun.engine.sinks.tracking import Record, numeric, require, run_name, run_tags

SETTING = "wandb"


def open_sink(opening) -> Subprocess:
    require("wandb", SETTING, "wandb")
    settings = opening.settings if isinstance(opening.settings, dict) else {}
    return Subprocess(SETTING, f"{__name__}:WandbTracker", (opening.plan.to_json(), opening.run_dir.path, settings),
                      opening.run_dir.sinks.warn)


class WandbTracker:
    def __init__(self, plan: dict, run_path: Path, settings: dict, warn):
        import wandb

        self.run_path = run_path = Path(run_path)
        self.record = Record(run_path, SETTING, {"run_id": r"[A-Za-z0-9_-]{1,64}"})
        found = self.record.read(warn)
        run_id = found["run_id"] if found else _new_id()
        self.last_step = found["step"] if found else 0
        tags = run_tags(plan, run_path)
        self.run = wandb.init(
            project=settings.get("project") or plan["name"], entity=settings.get("entity"), mode=settings.get("mode"),
            group=settings.get("group"), name=run_name(plan, run_path, settings), id=run_id, resume="allow",
            dir=str(run_path), config=_config(plan), job_type="train",
            tags=[f"spec:{plan['name']}", f"profile:{plan.get('profile') or 'none'}", f"run:{run_path.name}"],
            notes=" ".join(f"{k}={v}" for k, v in tags.items()),
            settings=wandb.Settings(console="off", silent=True, save_code=False, x_disable_stats=True,
                                    disable_git=False),
        )
        self.run.summary.update({k: v for k, v in tags.items()})
        self.exit_code = 1
        self._save_record()

    def row(self, row: dict) -> None:
        step = int(row["step"])
        if step <= self.last_step:  # sent by the segment before this one resumed
            return
        self.run.log({tag(k): v for k, v in numeric(row).items()}, step=step)
        self.last_step = step

    def event(self, record: dict) -> None:
        kind, step = record["event"], record["step"]
        fields = {k: v for k, v in record.items() if k not in ("time", "step", "event")}
        if kind == "phase":
            self.run.summary[f"specrun.phase.{fields['axis']}"] = fields["new"]
            self.run.summary[f"specrun.promoted.{fields['axis']}.{fields['new']}"] = \
                f"step {step}: {describe_event(kind, fields)}"
        elif kind in ("expectation_failed", "early_stop"):
            self.run.summary[f"specrun.{kind}"] = f"step {step}: {describe_event(kind, fields)}"
        elif kind == "end":
            self.run.summary["specrun.status"] = f"{fields.get('status')}: {fields.get('message')}"
            self.exit_code = 0 if fields.get("status") == "finished" else 1

    def flush(self) -> None:
        self._save_record()

    def close(self) -> None:
        events = self.run_path / "events.jsonl"
        if events.exists():
            self.run.save(str(events), base_path=str(self.run_path), policy="now")
        self.run.finish(exit_code=self.exit_code)
        self._save_record()

    def _save_record(self) -> None:
        self.record.write({"run_id": self.run.id, "step": self.last_step})


def _new_id() -> str:
    """Eight lower-case letters and digits, as W&B's own run ids."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _config(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k != "resolved"}
