"""Experiment trackers named in the log block, read back through each tool's own reader.

MLflow: MlflowClient on a local SQLite store. W&B: the offline run's .wandb file,
its records parsed by W&B's own protobuf classes. TensorBoard: EventAccumulator and
the HParams plugin's data. All offline, nothing downloaded.
"""

from __future__ import annotations

import json
import signal
import struct

import pytest

from .conftest import FAST_SPEC, csv_rows, events, run_inproc, write_spec


def spec_with(log: str) -> str:
    return FAST_SPEC.replace("log { every 1 step }", "log {\n  every 1 step\n" + log + "\n}")


def run(tmp_path, runs_base, text: str, name="r1", **options):
    run_dir = runs_base / "fast_test" / name
    out = run_inproc(write_spec(tmp_path, text), run_dir, runs_base=str(runs_base), **options)
    return out, run_dir


def loss_by_step(run_dir) -> dict[int, float]:
    _, rows = csv_rows(run_dir / "metrics.csv")
    return {int(r["step"]): float(r["train.loss"]) for r in rows}


# ---- MLflow -------------------------------------------------------------------------------------

def mlflow_run(run_dir):
    from mlflow.tracking import MlflowClient

    record = json.loads((run_dir / "trackers" / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=record["tracking_uri"])
    return client, client.get_run(record["run_id"])


def test_mlflow_params_metrics_tags_artifacts(tmp_path, runs_base):
    out, run_dir = run(tmp_path, runs_base, spec_with('  mlflow { experiment "trackers-test" }'),
                       sets=("optimizer.lr=0.02",))
    assert out.code == 0, out.message
    client, mlrun = mlflow_run(run_dir)
    assert mlrun.info.status == "FINISHED" and mlrun.info.run_name == "fast_test/r1"
    assert client.get_experiment(mlrun.info.experiment_id).name == "trackers-test"
    assert str(runs_base.resolve() / ".mlflow" / "mlflow.db") in client.tracking_uri  # the default store

    params = mlrun.data.params
    assert params["components.optimizer.params.lr"] == "0.02"
    assert params["components.model.params.width"] == "16" and params["seed"] == "3"
    assert params["curriculum.curriculum.phases.a.promote"] == "phase.steps >= 3"

    history = client.get_metric_history(mlrun.info.run_id, "train.loss")
    assert {m.step: m.value for m in history} == pytest.approx(loss_by_step(run_dir), rel=1e-5)
    assert [m.step for m in history] == list(range(1, 13))

    tags = mlrun.data.tags
    assert tags["specrun.spec"] == "fast_test" and tags["specrun.run_id"] == "r1"
    assert tags["specrun.overrides"] == "optimizer.lr=0.02" and tags["specrun.profile"] == ""
    assert tags["specrun.phase.curriculum"] == "b"
    assert tags["specrun.promoted.curriculum.b"] == "step 3: promoted curriculum: a -> b (phase.steps=3)"
    assert tags["specrun.status"] == "finished: finished 12 steps"
    assert sorted(a.path for a in client.list_artifacts(mlrun.info.run_id)) == \
        ["events.jsonl", "plan.json", "spec.train"]
    plan = json.loads(open(client.download_artifacts(mlrun.info.run_id, "plan.json", str(tmp_path))).read())
    assert plan["spec_hash"] == tags["specrun.spec_hash"]


def test_mlflow_resume_continues_the_same_run_without_duplicate_steps(tmp_path, runs_base, signal_at):
    text = spec_with("  mlflow {}").replace("resume latest", "resume latest\n  on_interrupt none")
    signal_at(6)  # killed at step 6 unsaved: the resume starts again from step 4's checkpoint
    first, run_dir = run(tmp_path, runs_base, text)
    assert first.status == "interrupted" and first.step == 6
    run_id = mlflow_run(run_dir)[1].info.run_id
    second, _ = run(tmp_path, runs_base, text)
    assert second.code == 0, second.message

    steps = [int(r["step"]) for r in csv_rows(run_dir / "metrics.csv")[1]]
    assert steps == list(range(1, 7)) + list(range(5, 13))  # metrics.csv keeps both segments' rows
    client, mlrun = mlflow_run(run_dir)
    assert mlrun.info.run_id == run_id and mlrun.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run_id, "train.loss")] == list(range(1, 13))
    assert [m.step for m in client.get_metric_history(run_id, "segment")] == list(range(1, 13))
    assert mlrun.data.tags["specrun.resumed_at"] == "4"
    assert len(client.search_runs([mlrun.info.experiment_id])) == 1


def test_specrun_export_attaches_the_model_to_the_runs_mlflow_run(tmp_path, runs_base, monkeypatch):
    from click.testing import CliRunner

    from specrun.cli.main import main

    out, run_dir = run(tmp_path, runs_base, spec_with("  mlflow {}").replace("max_steps 12", "max_steps 4"))
    assert out.code == 0, out.message
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["export", str(run_dir), "--base", str(runs_base)])
    assert result.exit_code == 0, result.output
    client, mlrun = mlflow_run(run_dir)
    assert result.output.splitlines()[-1] == f"attached to MLflow run {mlrun.info.run_id} as its `model` artifact"
    assert sorted(a.path for a in client.list_artifacts(mlrun.info.run_id, "model")) == \
        ["model/model.json", "model/model.safetensors"]


@pytest.mark.parametrize("content, why", [
    ('{"run_id": "../../etc", "tracking_uri": "sqlite:///x.db", "step": 3}', "`run_id` is missing or malformed"),
    ('{"run_id": "0123456789abcdef0123456789abcdef", "step": 3}', "`tracking_uri` is missing or malformed"),
    ('{"run_id": "0123456789abcdef0123456789abcdef", "tracking_uri": "x", "step": -1}', "`step` is not a step number"),
    ('{"run_id": "0123456789abcdef0123456789abcdef", "tracking_uri": "x", "step": true}', "`step` is not a step number"),
    ('["0123456789abcdef0123456789abcdef"]', "not a JSON object"),
    ('{"run_id": ', "unreadable (JSONDecodeError)"),
])
def test_a_tracker_record_read_back_is_checked(tmp_path, content, why):
    from specrun.engine.sinks.tracking import Record

    record = Record(tmp_path, "mlflow", {"run_id": r"[0-9a-f]{32}", "tracking_uri": r".{1,2000}"})
    assert record.read(print) is None  # none yet: nothing to say
    record.path.parent.mkdir()
    record.path.write_text(content)
    said = []
    assert record.read(said.append) is None
    assert said == [f"{record.path} cannot be used ({why}): this segment starts a new tracker run"]
    record.write({"run_id": "0123456789abcdef0123456789abcdef", "tracking_uri": "sqlite:///x.db", "step": 7})
    assert record.read(said.append) == {"run_id": "0123456789abcdef0123456789abcdef",
                                        "tracking_uri": "sqlite:///x.db", "step": 7}


def test_an_unreachable_store_is_a_warning_not_a_failure(tmp_path, runs_base, monkeypatch):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocked}/m.db")  # the tracker's process inherits it
    out, run_dir = run(tmp_path, runs_base, spec_with("  mlflow {}"))
    assert out.code == 0, out.message
    assert list(loss_by_step(run_dir)) == list(range(1, 13))
    (warning,) = events(run_dir, "warning")
    assert warning["sink"] == "mlflow" and warning["message"].startswith("mlflow could not start: ")


def test_a_missing_tracker_package_stops_the_run_before_it_trains(tmp_path, runs_base, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    out, run_dir = run(tmp_path, runs_base, spec_with("  wandb { mode offline }"))
    assert out.code == 1
    assert out.message == "log.wandb is set but the wandb package is not installed: pip install 'specrun[wandb]'"
    assert not (run_dir / "metrics.csv").exists()


def test_only_rank_0_opens_trackers(tmp_path, runs_base):
    from specrun.engine.rundir import RunDir
    from specrun.engine.sinks import open_log_sinks

    from .conftest import load_plan

    _, plan = load_plan(write_spec(tmp_path, spec_with("  mlflow {}\n  wandb {}\n  tensorboard true")))
    other_rank = RunDir(tmp_path / "rank1", main_process=False)
    assert open_log_sinks(plan, other_rank, str(runs_base)) == [] and list(other_rank.sinks) == []


# ---- Weights & Biases -----------------------------------------------------------------------------

def wandb_records(path):
    """The records of a .wandb file: W&B's transaction log (7-byte header, 32 KiB blocks of
    chunks with a 7-byte header each), every record a wandb_internal_pb2.Record. W&B 0.31
    ships no Python reader of its own (its Go core writes and syncs these files), so the
    framing is read here and each record is parsed by W&B's own protobuf class."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1)
    pos, block, parts = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            break
        parts += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(parts)
            parts = b""
            yield record


def wandb_history(run_dir):
    """(run ids, {step: {key: value}}, config, summary) over every offline segment of the run."""
    runs, history, config, summary = [], {}, {}, {}
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                runs.append(record.run.run_id)
                config.update({u.key: json.loads(u.value_json) for u in record.run.config.update})
            elif kind == "history":
                step = record.history.step.num
                assert step not in history, f"step {step} logged twice"
                history[step] = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                 for i in record.history.item}
            elif kind == "summary":
                summary.update({u.key or ".".join(u.nested_key): json.loads(u.value_json) for u in record.summary.update})
    return runs, history, config, summary


def test_wandb_offline_config_metrics_summary(tmp_path, runs_base):
    out, run_dir = run(tmp_path, runs_base, spec_with('  wandb { project "trackers-test"; mode offline }'))
    assert out.code == 0, out.message
    runs, history, config, summary = wandb_history(run_dir)
    record = json.loads((run_dir / "trackers" / "wandb.json").read_text())
    assert runs == [record["run_id"]] and record["step"] == 12
    assert sorted(history) == list(range(1, 13))
    assert {s: h["train/loss"] for s, h in history.items()} == pytest.approx(loss_by_step(run_dir), rel=1e-5)
    assert config["components"]["optimizer"]["params"]["lr"] == 0.01 and config["name"] == "fast_test"
    assert summary["specrun.phase.curriculum"] == "b"
    assert summary["specrun.status"] == "finished: finished 12 steps"
    assert summary["specrun.run_id"] == "r1"


def test_wandb_resume_continues_the_same_run_without_duplicate_steps(tmp_path, runs_base, signal_at):
    text = spec_with("  wandb { mode offline }").replace("resume latest", "resume latest\n  on_interrupt none")
    signal_at(6)
    first, run_dir = run(tmp_path, runs_base, text)
    assert first.status == "interrupted"
    second, _ = run(tmp_path, runs_base, text)
    assert second.code == 0, second.message
    runs, history, _, _ = wandb_history(run_dir)  # raises on a step logged twice
    assert len(runs) == 2 and runs[0] == runs[1]  # two offline segments of one W&B run: `wandb sync` joins them
    assert sorted(history) == list(range(1, 13))


# ---- TensorBoard ------------------------------------------------------------------------------------

def tensorboard_run(tmp_path, runs_base, setting: str):
    """The run's TensorBoard files through TensorBoard's own reader; the scalars checked on the way."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, run_dir = run(tmp_path, runs_base, spec_with(f"  tensorboard {setting}"))
    assert out.code == 0, out.message
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 13))
    return acc


def test_tensorboard_hparams_and_promotions_beside_the_scalars(tmp_path, runs_base):
    from tensorboard.plugins.hparams import metadata

    acc = tensorboard_run(tmp_path, runs_base, "true")
    (promotion,) = acc.Tensors("events/phase/text_summary")
    assert promotion.step == 3
    assert promotion.tensor_proto.string_val[0].decode() == "promoted curriculum: a -> b (phase.steps=3)"

    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    session = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert {m.name.tag for m in experiment.metric_infos} >= {"train/loss", "train/accuracy", "train/lr"}
    assert session.hparams["components.optimizer.params.lr"].number_value == 0.01
    assert session.hparams["components.model.type"].string_value == "mlp"


def test_tensorboard_without_hparams(tmp_path, runs_base):
    acc = tensorboard_run(tmp_path, runs_base, "{ hparams false }")
    with pytest.raises(KeyError):
        acc.PluginTagToContent("hparams")


# ---- all at once ---------------------------------------------------------------------------------

def test_three_trackers_at_once(tmp_path, runs_base):
    out, run_dir = run(tmp_path, runs_base, spec_with("  tensorboard true\n  mlflow {}\n  wandb { mode offline }"))
    assert out.code == 0, out.message
    client, mlrun = mlflow_run(run_dir)
    assert [m.step for m in client.get_metric_history(mlrun.info.run_id, "train.loss")] == list(range(1, 13))
    assert sorted(wandb_history(run_dir)[1]) == list(range(1, 13))
    assert (run_dir / "tensorboard").is_dir()
    assert events(run_dir, "warning") == []


def test_a_spec_names_a_tracking_server_not_a_local_store(tmp_path):
    from specrun.spec.diagnostics import SpecError

    from .conftest import load_plan

    with pytest.raises(SpecError) as info:
        load_plan(write_spec(tmp_path, spec_with('  mlflow { tracking_uri "sqlite:////etc/mlflow.db" }')))
    assert "log.mlflow.tracking_uri 'sqlite:////etc/mlflow.db' is not a tracking server: a spec writes nothing " \
           "outside its run directory" in str(info.value)
    load_plan(write_spec(tmp_path, spec_with('  mlflow { tracking_uri "https://mlflow.internal:5000" }')))


def test_export_never_follows_a_run_directorys_record_to_another_store(tmp_path, monkeypatch):
    from specrun.engine.sinks.mlflow import attach_export

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "runs" / "x" / "r1"
    (run_dir / "trackers").mkdir(parents=True)
    (run_dir / "plan.json").write_text(json.dumps({"settings": {"log": {"mlflow": {}}}}))
    evil = tmp_path / "elsewhere.db"
    (run_dir / "trackers" / "mlflow.json").write_text(json.dumps(
        {"run_id": "0123456789abcdef0123456789abcdef", "tracking_uri": f"sqlite:///{evil}", "step": 4}))
    note = attach_export(run_dir, run_dir / "export", tmp_path / "runs")
    assert note.startswith(f"the export is not attached to MLflow: the run's store sqlite:///{evil} is not the one")
    assert not evil.exists()
    assert attach_export(tmp_path, tmp_path / "export") is None  # a run without MLflow: nothing to say
