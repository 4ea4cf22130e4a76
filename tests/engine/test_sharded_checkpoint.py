"""Sharded checkpoints (DCP): each rank writes its own shards, with the guarantees of a file.

In one process (a spec with `strategy fsdp` run without a launcher writes the same
format in DCP's no-process-group mode): the layout, atomic commit and retention,
exact resume, falling back past a damaged checkpoint, the offline full state dict
for export, and a metadata file that would run code is refused. Two ranks, and
resuming at another world size (2 -> 1, 1 -> 2), are in the slow tier.
"""

import json
import os
import pickle
import signal

import pytest
import torch

from specrun.engine.sharded import MANIFEST, CheckpointError, full_state_dict, read_metadata

from .conftest import FAST_SPEC, events, index_entries, make_run, run_inproc, train_losses, write_spec

SPEC = FAST_SPEC.replace("log { every 1 step }", "log { every 1 step }\ndistributed { strategy fsdp; nproc_per_node 1 }")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished sharded run, shared by the tests that only read it."""
    base = tmp_path_factory.mktemp("sharded")
    before = os.getcwd()
    os.chdir(base)  # the task's cache directory
    try:
        out = run_inproc(write_spec(base, SPEC), base / "run")
    finally:
        os.chdir(before)
    assert out.code == 0, out.message
    return base / "run"


def test_each_checkpoint_is_a_committed_directory_and_old_ones_rotate(finished):
    ck = finished / "checkpoints"
    entries = index_entries(finished)
    assert sorted(e["file"] for e in entries) == ["final.pt", "step_12.pt", "step_8.pt"]  # keep 2 + final
    for e in entries:
        d = ck / e["file"]
        assert d.is_dir()
        assert {".metadata", "rest.pt", MANIFEST, "__0_0.distcp"} <= set(os.listdir(d))
        manifest = json.loads((d / MANIFEST).read_text())
        assert e["bytes"] == sum(f["bytes"] for f in manifest["files"].values())
    assert not [p for p in os.listdir(ck) if p.startswith(".")]  # no partial directory left behind
    assert [e["file"] for e in events(finished, "checkpoint")][:2] == ["step_4.pt", "step_8.pt"]
    assert not (ck / "step_4.pt").exists()


def test_full_state_dict_offline_equals_an_unsharded_run(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = run_inproc(write_spec(tmp_path, FAST_SPEC), tmp_path / "plain")
    assert plain.code == 0, plain.message
    reference = torch.load(tmp_path / "plain" / "checkpoints" / "final.pt", weights_only=True)
    state = full_state_dict(finished / "checkpoints" / "final.pt")
    assert state["counters"]["step"] == 12 and state["world_size"] == 1
    assert state["model"].keys() == reference["model"].keys()
    for k in reference["model"]:
        assert torch.equal(state["model"][k], reference["model"][k]), k
    moments = {k: v["exp_avg"] for k, v in state["optimizer"]["state"].items()}
    assert len(moments) == len(reference["model"]) and all(m.abs().sum() > 0 for m in moments.values())


def test_interrupted_and_resumed_is_exact(tmp_path, monkeypatch, signal_at):
    monkeypatch.chdir(tmp_path)
    spec = write_spec(tmp_path, SPEC)
    assert run_inproc(spec, tmp_path / "ref").code == 0
    signal_at(6, signal.SIGTERM)
    stopped = run_inproc(spec, tmp_path / "run")
    assert stopped.status == "interrupted" and stopped.step == 6, stopped.message
    resumed = run_inproc(spec, tmp_path / "run")
    assert resumed.code == 0, resumed.message
    assert train_losses(tmp_path / "run") == train_losses(tmp_path / "ref")  # bit for bit
    assert events(tmp_path / "run", "resume")[0]["step"] == 6


def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(finished, tmp_path):
    import shutil

    run = make_run(tmp_path, SPEC)
    ck = run.checkpointer.dir
    shutil.copytree(finished / "checkpoints", ck, dirs_exist_ok=True)
    shard = ck / "final.pt" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    (ck / "step_12.pt" / "rest.pt").write_bytes(b"truncated")
    warnings = []
    state, path = run.checkpointer.load_latest(warnings.append)
    assert path.name == "step_8.pt" and state["counters"]["step"] == 8
    assert "CRC-32" in warnings[0] and "final.pt" in warnings[0]
    assert "step_12.pt" in warnings[1]
    assert (ck / "final.pt.damaged").is_dir() and (ck / "step_12.pt.damaged").is_dir()
    assert [e["file"] for e in json.loads((ck / "index.json").read_text())["checkpoints"]] == ["step_8.pt"]
    saved = full_state_dict(ck / "step_8.pt")["model"]  # what step 8 holds is what came back
    assert saved.keys() == state["model"].keys()
    assert all(torch.equal(state["model"][k], v) for k, v in saved.items())
    run.task.close()


def test_metadata_that_would_run_code_is_refused(finished, tmp_path):
    import shutil

    target = tmp_path / "ck"
    shutil.copytree(finished / "checkpoints" / "final.pt", target)

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    (target / ".metadata").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(CheckpointError, match="metadata"):
        read_metadata(target)
    assert not (tmp_path / "pwned").exists()


def test_export_writes_single_file_weights_from_a_sharded_run(finished, tmp_path):
    from specrun.engine.export import export, from_export

    done = export(finished, tmp_path / "export")
    assert done.step == 12
    model, manifest = from_export(tmp_path / "export")
    saved = full_state_dict(finished / "checkpoints" / "final.pt")["model"]
    assert manifest["checkpoint"]["file"] == "final.pt"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
