"""index.json is read back from disk, so it is untrusted: bad entries are skipped (and said), a
missing or malformed index is rebuilt from the files, and nothing outside the checkpoint
directory is ever loaded, renamed or deleted. Also: the store seam behind the checkpointer."""

import json

import pytest
import torch

from specrun.engine.checkpoint import Checkpointer, CheckpointError
from specrun.engine.store import CheckpointStore, FileStore

from .conftest import FAST_SPEC, events, index_entries, run_inproc, write_spec


def _state(step: int) -> dict:
    return {"model": {"w": torch.full((8,), float(step))}, "counters": {"step": step}}


def _ck(directory, keep=2, **kw):
    return Checkpointer(directory, keep, "step_{step}.pt", "best.pt", "final.pt", **kw)


def _write_index(directory, entries):
    (directory / "index.json").write_text(json.dumps({"checkpoints": entries}))


@pytest.fixture
def outside(tmp_path):
    """A file beside the checkpoint directory that a hostile index names; it must survive untouched."""
    victim = tmp_path / "precious.pt"
    torch.save(_state(999), victim)
    return victim


@pytest.mark.parametrize("name", ["../precious.pt", "ABSOLUTE", "sub/../../precious.pt", ".", "..", "",
                                  "index.json", ".step_1.pt.partial"])
def test_a_hostile_entry_is_skipped_never_loaded_renamed_or_deleted(tmp_path, outside, name):
    d = tmp_path / "ck"
    ck = _ck(d, keep=1)
    ck.save(_state(1), "regular", 1, 0)
    bad = {"file": str(outside) if name == "ABSOLUTE" else name, "step": 50, "kind": "regular",
           "bytes": outside.stat().st_size, "time": 0.0}
    _write_index(d, [bad] + index_entries_of(d))
    before = outside.read_bytes()
    warnings = []
    state, path = ck.load_latest(warnings.append)
    assert state["counters"]["step"] == 1 and path == d / "step_1.pt"
    assert any("skipped an entry" in w and "not a plain checkpoint name" in w for w in warnings)
    ck.save(_state(2), "regular", 2, 0)  # rotation, keep 1: the hostile entry is never a victim
    ck.quarantine(bad)
    assert outside.read_bytes() == before and not outside.with_name("precious.pt.damaged").exists()
    assert {p.name for p in d.iterdir()} == {"index.json", "step_2.pt"}


def index_entries_of(directory):
    return json.loads((directory / "index.json").read_text())["checkpoints"]


@pytest.mark.parametrize("field,value,why", [
    ("step", "12", "step '12' is not a non-negative integer"),
    ("step", -1, "step -1"),
    ("step", True, "step True"),
    ("kind", "evil", "kind 'evil'"),
    ("bytes", None, "bytes None"),
    ("crc32", "abc", "crc32 'abc'"),
    ("time", "yesterday", "time 'yesterday'"),
    ("epoch", 1.5, "epoch 1.5"),
])
def test_an_entry_of_the_wrong_type_is_skipped_with_a_warning(tmp_path, field, value, why):
    d = tmp_path / "ck"
    ck = _ck(d)
    ck.save(_state(4), "regular", 4, 0)
    ck.save(_state(8), "regular", 8, 0)
    entries = index_entries_of(d)
    entries[1][field] = value
    _write_index(d, entries)
    warnings = []
    state, path = ck.load_latest(warnings.append)
    assert path.name == "step_4.pt"
    assert len(warnings) == 1 and why in warnings[0]


def test_an_entry_without_time_or_epoch_is_fine(tmp_path):
    d = tmp_path / "ck"
    ck = _ck(d)
    ck.save(_state(4), "regular", 4, 0)
    entries = index_entries_of(d)
    del entries[0]["time"], entries[0]["epoch"]
    _write_index(d, entries)
    state, path = ck.load_latest(lambda m: pytest.fail(m))
    assert state["counters"]["step"] == 4


@pytest.mark.parametrize("text", [None, "[]", "null", '"checkpoints"', '{"checkpoints": {}}', "{}", "",
                                  b"\xff\xfe\x00"])
def test_a_missing_or_malformed_index_is_rebuilt_from_the_files(tmp_path, text):
    d = tmp_path / "ck"
    ck = _ck(d)
    ck.save(_state(4), "regular", 4, 0)
    ck.save(_state(8), "final", 8, 0)
    index = d / "index.json"
    if text is None:
        index.unlink()
    elif isinstance(text, bytes):
        index.write_bytes(text)
    else:
        index.write_text(text)
    warnings = []
    state, path = ck.load_latest(warnings.append)
    assert path.name == "final.pt" and state["counters"]["step"] == 8
    assert "rebuilt it from the 2 checkpoint file(s)" in warnings[0]
    assert sorted(e["file"] for e in index_entries_of(d)) == ["final.pt", "step_4.pt"]


def test_an_empty_directory_has_no_checkpoints_and_no_warning(tmp_path):
    assert _ck(tmp_path / "ck").candidates(lambda m: pytest.fail(m)) == []


def test_a_symlinked_checkpoint_is_not_loaded(tmp_path, outside):
    d = tmp_path / "ck"
    ck = _ck(d)
    ck.save(_state(4), "regular", 4, 0)
    (d / "step_9.pt").symlink_to(outside)
    entries = index_entries_of(d) + [{"file": "step_9.pt", "step": 9, "kind": "regular",
                                      "bytes": outside.stat().st_size, "time": 1.0}]
    _write_index(d, entries)
    warnings = []
    state, path = ck.load_latest(warnings.append)
    assert path.name == "step_4.pt" and "symbolic link" in warnings[0]
    assert outside.exists() and not outside.with_name("precious.pt.damaged").exists()


def test_a_deleted_checkpoint_is_reported_as_gone_not_renamed(tmp_path):
    d = tmp_path / "ck"
    ck = _ck(d)
    ck.save(_state(4), "regular", 4, 0)
    ck.save(_state(8), "regular", 8, 0)
    (d / "step_8.pt").unlink()
    warnings = []
    assert ck.load_latest(warnings.append)[1].name == "step_4.pt"
    assert "the file is gone" in warnings[0] and ".damaged" not in warnings[0]


def test_a_run_resumes_past_a_hostile_index(tmp_path, monkeypatch, outside):
    """End to end: a copied run directory whose index names a file outside it, with a string step."""
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    spec = write_spec(tmp_path, FAST_SPEC.replace("max_steps 12", "max_steps 8"))
    assert run_inproc(spec, run_dir).code == 0
    entries = index_entries(run_dir)
    entries.append({"file": "../../precious.pt", "step": 100, "kind": "final", "bytes": 1, "time": 9e9})
    entries.append({"file": "final.pt", "step": "8", "kind": "final"})  # overrides the good one: skipped
    _write_index(run_dir / "checkpoints", entries)
    before = outside.read_bytes()
    out = run_inproc(write_spec(tmp_path, FAST_SPEC), run_dir, allow_spec_change=True)  # 8 -> 12 steps
    assert out.code == 0, out.message
    assert outside.read_bytes() == before
    warned = [e["message"] for e in events(run_dir, "warning")]
    assert any("../../precious.pt" in w for w in warned) and any("step '8'" in w for w in warned)
    assert events(run_dir, "resume")[-1]["step"] == 8  # the good final.pt entry came first and was kept


class MemoryStore(CheckpointStore):
    """A second store, to show the checkpointer depends on the four calls only."""

    def __init__(self, directory):
        super().__init__(directory)
        self.states: dict[str, dict] = {}

    def save(self, name, state):
        self.path(name)
        self.states[name] = state
        return self.fingerprint(name)

    def load(self, name, fingerprint=None):
        if name not in self.states:
            raise CheckpointError(f"no checkpoint {name}")
        return self.states[name]

    def list(self):
        return sorted(self.states)

    def delete(self, name):
        return self.states.pop(name, None) is not None

    def set_aside(self, name):
        if name not in self.states:
            return None
        self.states[name + ".damaged"] = self.states.pop(name)
        return name + ".damaged"

    def fingerprint(self, name):
        return {"bytes": 1}


def test_the_checkpointer_works_through_any_store(tmp_path):
    store = MemoryStore(tmp_path / "ck")
    ck = _ck(tmp_path / "ck", keep=2, store=store)
    for step in (1, 2, 3):
        ck.save(_state(step), "regular", step, 0)
    assert store.list() == ["step_2.pt", "step_3.pt"]  # rotation deleted through the store
    assert not any(p.suffix == ".pt" for p in (tmp_path / "ck").iterdir())  # only the index is a file
    state, path = ck.load_latest(lambda m: pytest.fail(m))
    assert state["counters"]["step"] == 3 and path.name == "step_3.pt"
    del store.states["step_3.pt"]
    warnings = []
    assert ck.load_latest(warnings.append)[0]["counters"]["step"] == 2
    assert "the file is gone" in warnings[0]
    (tmp_path / "ck" / "index.json").unlink()
    assert [e["file"] for e in ck.index(lambda m: None)] == ["step_2.pt"]  # rebuilt through store.list/load


def test_a_store_refuses_names_that_are_not_plain(tmp_path):
    store = FileStore(tmp_path)
    for name in ("../x.pt", "/etc/passwd", "a/b.pt", ".hidden.pt", "..", ""):
        with pytest.raises(CheckpointError, match="not a plain checkpoint file name"):
            store.delete(name)
