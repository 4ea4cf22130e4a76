import os
import subprocess
import sys
import time
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


def run_cli(spec, run_dir, *extra, timeout=300) -> subprocess.CompletedProcess:
    """``specrun run SPEC --run-dir RUN_DIR --quiet EXTRA...`` in a new process, output captured."""
    return subprocess.run(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet", *extra),
                          env=env(), capture_output=True, text=True, timeout=timeout)


def kill_at(spec, run_dir, step: int) -> None:
    """Start ``specrun run`` in a new process and SIGKILL it once metrics.csv holds ``step`` rows."""
    proc = subprocess.Popen(specrun_cmd("run", spec, "--run-dir", run_dir, "--quiet"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 200
    metrics = Path(run_dir) / "metrics.csv"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and sum(1 for _ in open(metrics)) - 1 >= step:
            break
        time.sleep(0.05)
    proc.send_signal(_signal.SIGKILL)
    proc.wait()


def wait_rows(proc, run_dir, rows: int, timeout=180) -> None:
    """Wait until the run ``proc`` (still running, asserted) has logged ``rows`` rows to metrics.csv."""
    metrics = Path(run_dir) / "metrics.csv"
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if metrics.exists() and sum(1 for _ in open(metrics)) - 1 >= rows:
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the run did not get going")


def kill_launch(proc: subprocess.Popen) -> None:
    """SIGKILL a `specrun run` of several processes as a dead machine would: the launcher and
    every rank. torchrun starts the ranks in sessions of their own, so killing the launcher's
    process group alone would leave them training (and holding the run directory's lock)."""
    import psutil

    ranks = psutil.Process(proc.pid).children(recursive=True)
    os.killpg(proc.pid, _signal.SIGKILL)
    for rank in ranks:
        try:
            rank.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    psutil.wait_procs(ranks, timeout=60)  # gone, and their lock on the run directory with them


def two_processes_match_one(spec, tmp_path, steps: int, batch: int = 16) -> subprocess.CompletedProcess:
    """Run ``spec`` (two processes) in tmp_path/two and on one process with the same global
    ``batch`` in tmp_path/one: both finish and log steps 1..``steps`` with the same losses (to
    1e-5). Returns the two-process run."""
    two = run_cli(spec, tmp_path / "two")
    assert two.returncode == 0, two.stderr
    one = run_cli(spec, tmp_path / "one", "--set", f"batch={batch}", "--set", "distributed.nproc_per_node=1")
    assert one.returncode == 0, one.stderr
    a, b = train_losses(tmp_path / "two", float), train_losses(tmp_path / "one", float)
    assert a.keys() == b.keys() == set(range(1, steps + 1))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), step
    return two


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


def resumes_bit_for_bit(spec, tmp_path, signal_at, step: int = 5) -> None:
    """``spec`` run straight through (tmp_path/reference) and interrupted by SIGINT after
    ``step`` then rerun (tmp_path/run) ends with the same losses and the same final weights,
    bit for bit. The working folder must be tmp_path."""
    import torch

    assert run_inproc(spec, tmp_path / "reference").code == 0
    signal_at(step)
    assert run_inproc(spec, tmp_path / "run").code == 130
    assert run_inproc(spec, tmp_path / "run").code == 0
    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "reference")
    expected, got = (torch.load(tmp_path / d / "checkpoints" / "final.pt", weights_only=True)["model"]
                     for d in ("reference", "run"))
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k


def train_losses(run_dir, convert=str) -> dict:
    """Each step's train.loss in metrics.csv, ``convert``ed: by default the text itself, so that
    equal is bit for bit; ``float`` to compare within a tolerance. A step trained again after a
    resume: its last row counts. Rows without a train.loss are left out."""
    _, rows = csv_rows(Path(run_dir) / "metrics.csv")
    return {int(r["step"]): convert(r["train.loss"]) for r in rows if r["train.loss"]}


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

    def progress(self, step, *args, **kwargs):
        original(self, step, *args, **kwargs)
        sig = plan.get(step)
        if sig is not None:
            del plan[step]
            os.kill(os.getpid(), sig)

    monkeypatch.setattr(Console, "progress", progress)

    def arm(step: int, sig=_signal.SIGINT):
        plan[step] = sig

    return arm


@pytest.fixture
def interrupted(tmp_path, monkeypatch, signal_at):
    """interrupted(step, text=FAST_SPEC): with tmp_path as the working folder, a run of ``text``
    in tmp_path/run stopped by SIGINT right after step ``step`` (exit code 130, asserted).
    Returns (spec path, run dir)."""

    def run(step: int, text: str = FAST_SPEC):
        monkeypatch.chdir(tmp_path)
        spec = write_spec(tmp_path, text)
        run_dir = tmp_path / "run"
        signal_at(step, _signal.SIGINT)
        assert run_inproc(spec, run_dir).code == 130
        return spec, run_dir

    return run


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
