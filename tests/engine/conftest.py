import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

BASE_SPEC = """
spec engine_test
seed 7
task rule_classification {
  features 8
  classes 3
  epoch_size 256
}
model mlp {
  width 32
  depth 2
  dropout 0.1
}
loss cross_entropy
optimizer adamw { lr 1e-2 }
batch 16
accumulate 2
max_steps 40
clip_grad_norm 1.0
schedule warmup_cosine {
  warmup 10%
  min_ratio 0.1
}
curriculum {
  phase a { promote when phase.steps >= 8 and mean(train.accuracy, 4) >= 0.3 }
  phase b {}
}
validation {
  every 10 steps
  batches 2
}
checkpoint {
  every 5 steps
  keep 2
  resume latest
}
log { every 1 step }
"""


@pytest.fixture
def spec_file(tmp_path):
    def make(extra: str = "", base: str = BASE_SPEC) -> Path:
        path = tmp_path / "engine_test.train"
        path.write_text(base + extra)
        return path

    return make


def specrun_cmd(*args) -> list[str]:
    return [sys.executable, "-m", "specrun.cli", *map(str, args)]


def env() -> dict:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + out.get("PYTHONPATH", "")
    out.setdefault("OMP_NUM_THREADS", "1")
    return out


# ---- in-process helpers (shared by the engine tests) ---------------------------------------
#
# Most engine tests run specs in this process: importing torch in a subprocess costs
# seconds on a shared 2-core machine, a tiny run in-process costs a fraction of one.

import csv
import json
import signal as _signal

try:  # one intra-op thread: tiny matmuls, a shared machine; oversubscription costs 10x
    import torch as _torch

    _torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

# Small and quick: 12 steps, a checkpoint every 4, a log row every step.
FAST_SPEC = """
spec fast_test
seed 3
task rule_classification {
  features 8
  classes 3
  epoch_size 128
}
model mlp {
  width 16
  depth 2
  dropout 0.0
}
loss cross_entropy
optimizer adamw { lr 0.01 }
batch 8
accumulate 2
max_steps 12
clip_grad_norm 1.0
curriculum {
  phase a { promote when phase.steps >= 3 }
  phase b {}
}
checkpoint {
  every 4 steps
  keep 2
  resume latest
}
log { every 1 step }
"""


def write_spec(directory: Path, text: str, name: str = "spec.train") -> Path:
    path = Path(directory) / name
    path.write_text(text)
    return path


def load_plan(spec_path, profile=None, sets=()):
    """(checked Spec, Plan) for a spec file, exactly as `specrun run` builds them."""
    from specrun.spec.check import load
    from specrun.plan import build_plan

    spec = load(str(spec_path), profile, tuple(sets))
    return spec, build_plan(spec)


def run_inproc(spec_path, run_dir=None, *, sets=(), quiet=True, profile=None, **options):
    """execute() a spec in this process; returns the Outcome."""
    from specrun.engine.execute import Options, execute

    spec, plan = load_plan(spec_path, profile, sets=sets)
    opts = Options(run_dir=str(run_dir) if run_dir is not None else None, quiet=quiet, **options)
    return execute(plan, opts)


def events(run_dir, name=None) -> list[dict]:
    path = Path(run_dir) / "events.jsonl"
    out = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in out if name is None or e["event"] == name]


def csv_rows(path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def index_entries(run_dir) -> list[dict]:
    return json.loads((Path(run_dir) / "checkpoints" / "index.json").read_text())["checkpoints"]


@pytest.fixture
def signal_at(monkeypatch):
    """signal_at(step, sig): deliver a real signal to this process right after optimizer step ``step``.

    The loop calls Console.progress once per finished step; the signal goes through the
    handler execute() installs, exactly as a Ctrl+C or a `kill` would.
    """
    from specrun.engine.console import Console

    original = Console.progress
    plan = {}

    def progress(self, phase, step, *args, **kwargs):
        original(self, phase, step, *args, **kwargs)
        sig = plan.get(step)
        if sig is not None:
            del plan[step]
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Console, "progress", progress)

    def arm(step: int, sig=_signal.SIGINT):
        plan[step] = sig

    return arm


def make_run(directory, text: str, name: str = "spec.train", sets=()):
    """A live Run (model, optimizer, scheduler...) set up from a spec, without training it."""
    from specrun.engine.console import Console
    from specrun.engine.rundir import RunDir
    from specrun.engine.setup import setup

    _, plan = load_plan(write_spec(directory, text, name), sets=sets)
    return setup(plan, RunDir(Path(directory) / (Path(name).stem + "_run")), Console(quiet=True))


def params_copy(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---- experiment trackers, kept on this machine -------------------------------------------------

@pytest.fixture
def offline_trackers(monkeypatch, tmp_path):
    """W&B offline and silent, its config and caches under tmp; no MLflow server from the environment."""
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false",
                       "WANDB_DISABLE_CODE": "true", "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
                       "WANDB_CACHE_DIR": tmp_path / "wandb-cache", "WANDB_DATA_DIR": tmp_path / "wandb-data"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def _mlflow_empty_db(tmp_path_factory):
    """An empty MLflow SQLite store, made once: creating its tables takes MLflow seconds."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def runs_base(tmp_path, _mlflow_empty_db, offline_trackers):
    """A runs folder whose default MLflow store (runs/.mlflow/mlflow.db) already has its tables."""
    import shutil

    base = tmp_path / "runs"
    (base / ".mlflow").mkdir(parents=True)
    shutil.copy(_mlflow_empty_db, base / ".mlflow" / "mlflow.db")
    return base
