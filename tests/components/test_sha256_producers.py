"""sha256_trace's shared-memory producers: order, determinism, curriculum, and clean shutdown."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
import torch

import specrun.components.sha256.producers as P
from specrun.components.api import Context
from specrun.components.sha256.task import build_task

from sha256_helpers import alive, needs_shm

pytestmark = needs_shm


def ctx(batch_size=8, seed=0):
    return Context(seed=seed, device=torch.device("cpu"), batch_size=batch_size)


def take(it, n):
    return [{k: v.clone() for k, v in next(it).items()} for _ in range(n)]


def same(a, b):
    return all(torch.equal(x["inputs"], y["inputs"]) and torch.equal(x["targets"], y["targets"])
               for x, y in zip(a, b, strict=True))


def our_children():
    """Live children other than multiprocessing's resource tracker (it lives as long as we do)."""
    kids = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                kids.append(p.pid)
        except psutil.NoSuchProcess:
            pass
    return kids


@pytest.fixture
def clean():
    """Assert a test leaves no producer processes and no segments behind."""
    # only this process's segments: other test runs on the machine make their own
    def ours():
        return {n for n in os.listdir("/dev/shm") if n.startswith(f"{P.SEGMENT_PREFIX}{os.getpid()}_")}

    before_segments = ours()
    before_children = set(our_children())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and set(our_children()) - before_children:
        time.sleep(0.05)
    assert set(our_children()) - before_children == set()
    assert ours() - before_segments == set()


def test_batches_in_order_and_independent_of_producer_count(clean):
    inline = build_task({"rounds": 5, "transport": "inline"}, ctx())
    expected = take(inline.train_batches(0), 12)
    for n in (1, 3):
        task = build_task({"rounds": 5, "producers": n}, ctx())
        try:
            got = take(task.train_batches(0), 12)
            assert same(got, expected)
            assert got[0]["inputs"].shape == (8, 5, 320) and got[0]["targets"].shape == (8, 5, 256)
            assert got[0]["inputs"].dtype == torch.uint8
        finally:
            task.close()
    inline.close()


def test_resume_from_index_and_restart(clean):
    task = build_task({"rounds": 3, "producers": 2}, ctx(seed=9))
    try:
        full = take(task.train_batches(0), 10)
        assert same(take(task.train_batches(6), 4), full[6:])  # a new iterator supersedes the old one
        assert same(take(task.train_batches(2), 3), full[2:5])
    finally:
        task.close()


def test_views_are_zero_copy_and_stay_valid_for_one_more_batch(clean):
    task = build_task({"rounds": 2, "producers": 1}, ctx())
    try:
        it = task.train_batches(0)
        first = next(it)
        snapshot = first["inputs"].clone()
        import numpy as np

        seg = np.frombuffer(task.loader._buf, dtype=np.uint8)
        lo, hi = seg.ctypes.data, seg.ctypes.data + seg.nbytes
        del seg
        assert lo <= first["inputs"].data_ptr() < hi  # a view of the shared segment, not a copy
        assert lo <= first["targets"].data_ptr() < hi
        next(it)  # the engine moved on once: the previous batch is still intact
        assert torch.equal(first["inputs"], snapshot)
    finally:
        task.close()


def test_set_params_serves_no_stale_batch(clean):
    inline = build_task({"rounds": 4, "transport": "inline"}, ctx(seed=2))
    task = build_task({"rounds": 4, "producers": 2, "ring": 8}, ctx(seed=2))
    try:
        it, ref = task.train_batches(0), inline.train_batches(0)
        for step, params in enumerate([{"rounds": 4}, {"rounds": 9}, {"rounds": 2},
                                       {"init_state": "random"}, {"rounds": 64}, {"rounds": 1}]):
            task.set_params(params)
            inline.set_params(params)
            time.sleep(0.05 * (step % 2))  # let producers fill the ring under the old params, sometimes
            got, want = take(it, 3), take(ref, 3)
            assert same(got, want), params
            assert all(b["inputs"].shape[1] == task.params["rounds"] for b in got)
        with pytest.raises(ValueError, match="cannot change"):
            task.set_params({"producers": 5})
    finally:
        task.close()
        inline.close()


def test_growing_rounds_beyond_the_segment_replaces_the_pool(clean, monkeypatch):
    monkeypatch.setattr(P, "_shm_budget", lambda: 0)  # segment sized for the current rounds only
    inline = build_task({"rounds": 2, "transport": "inline"}, ctx(seed=3))
    task = build_task({"rounds": 2, "producers": 2}, ctx(seed=3))
    try:
        it, ref = task.train_batches(0), inline.train_batches(0)
        held = next(it)
        next(ref)
        old_pids, old_name = task.loader.pids, task.loader.segment_name
        snapshot = held["inputs"].clone()
        for params in ({"rounds": 6}, {"rounds": 3}):
            task.set_params(params)
            inline.set_params(params)
            assert same(take(it, 2), take(ref, 2))
        assert task.loader.segment_name != old_name and old_name not in os.listdir("/dev/shm")
        assert alive(old_pids) == []
        assert torch.equal(held["inputs"], snapshot)  # a view the engine held stays readable
    finally:
        task.close()
        inline.close()


def test_val_batches_fixed_and_separate(clean):
    task = build_task({"rounds": 3, "transport": "inline", "epoch_size": 100}, ctx())
    a, b = list(task.val_batches(3)), list(task.val_batches(3))
    assert same(a, b)
    assert not torch.equal(a[0]["inputs"], next(task.train_batches(0))["inputs"])
    assert task.batches_per_epoch() == 12
    assert build_task({"transport": "inline"}, ctx()).batches_per_epoch() is None
    task.close()


def test_metrics():
    task = build_task({"rounds": 2, "transport": "inline"}, ctx())
    batch = next(task.train_batches(0))
    perfect = {"logits": batch["targets"].float() * 2 - 1}
    m = task.metrics(perfect, batch)
    assert set(m) == set(task.metric_names)
    assert all(v.dim() == 0 and float(v) == 1.0 for v in m.values())
    # copy-only prediction: shifted bits right, new a and new e bits copied from old a and e
    words = batch["inputs"].reshape(*batch["inputs"].shape[:2], 10, 32)
    copy = torch.cat([words[:, :, i] for i in (0, 0, 1, 2, 4, 4, 5, 6)], dim=-1).float() * 2 - 1
    m = task.metrics({"logits": copy}, batch)
    assert float(m["bit_accuracy"]) == pytest.approx(0.75 + 0.25 * float(m["nonshift_accuracy"]))
    assert 0.4 < float(m["nonshift_accuracy"]) < 0.6 and float(m["state_accuracy"]) == 0.0
    task.close()


def test_close_stops_workers_and_unlinks(clean):
    task = build_task({"rounds": 2, "producers": 2}, ctx())
    pids, name = task.loader.pids, task.loader.segment_name
    batch = next(task.train_batches(0))
    snapshot = batch["targets"].clone()
    assert len(alive(pids)) == 2 and name in os.listdir("/dev/shm")
    task.close()
    assert alive(pids) == [] and name not in os.listdir("/dev/shm")
    assert torch.equal(batch["targets"], snapshot)  # still mapped while the engine holds it


def test_killed_producer_raises_clear_error_quickly(clean):
    task = build_task({"rounds": 2, "producers": 2}, ctx())
    try:
        it = task.train_batches(0)
        next(it)
        os.kill(task.loader.pids[1], signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(P.ProducerError, match=r"producer 1 died \(exit code -9"):
            for _ in range(100):
                next(it)
        assert time.monotonic() - t0 < 5
    finally:
        task.close()


def test_producer_exception_is_reported(clean):
    task = build_task({"rounds": 2, "producers": 1}, ctx())
    try:
        it = task.train_batches(0)
        next(it)
        task.loader.restart(5, {"rounds": 0, "init_state": "iv"})  # trace_np refuses 0 rounds
        with pytest.raises(P.ProducerError, match="(?s)producer 0 failed.*rounds must be in 1..64"):
            next(it)
    finally:
        task.close()


def test_sigterm_handler_only_when_nobody_else_has_one(clean):
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        a = build_task({"rounds": 1, "producers": 1}, ctx())
        b = build_task({"rounds": 1, "producers": 1}, ctx())
        assert signal.getsignal(signal.SIGTERM) is P._sigterm_to_exit
        a.close()
        assert signal.getsignal(signal.SIGTERM) is P._sigterm_to_exit  # b still relies on it
        b.close()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

        def engine_handler(signum, frame):
            pass

        signal.signal(signal.SIGTERM, engine_handler)
        c = build_task({"rounds": 1, "producers": 1}, ctx())
        assert signal.getsignal(signal.SIGTERM) is engine_handler
        c.close()
        assert signal.getsignal(signal.SIGTERM) is engine_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
