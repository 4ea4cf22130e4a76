"""DDP all-reduces once per optimizer step, whatever `accumulate` is (no_sync on the others).

A DDP communication hook counts the all-reduce rounds (calls for bucket 0: every
synchronised backward reduces each bucket once). In-process on a one-rank gloo group
(fast), and on two ranks with the losses of the single-process run (slow).
"""

import multiprocessing
import os
import socket

import pytest
import torch
import torch.distributed as td
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from specrun.engine import distributed
from specrun.engine.distributed import Dist

from .conftest import load_plan, run_inproc, train_losses, write_spec

SPEC = """
spec ddp_sync
seed 3
task rule_classification { features 8; classes 3 }
model mlp { width 16; depth 2; dropout 0.0 }
loss cross_entropy
optimizer adamw { lr 1e-2 }
batch 8
accumulate {accumulate}
max_steps 6
log {{ every 1 step }}
checkpoint {{ every 3 steps }}
distributed {{ strategy ddp; nproc_per_node {nproc}; backend gloo }}
"""


def _spec(directory, accumulate, nproc=1, batch=8):
    text = SPEC.replace("{accumulate}", str(accumulate)).replace("{nproc}", str(nproc)).replace("{{", "{") \
        .replace("}}", "}").replace("batch 8", f"batch {batch}")
    return write_spec(directory, text, f"ddp_sync_{accumulate}_{nproc}_{batch}.train")


def _counting_wrap(counts: list):
    """Dist.wrap plus a hook that counts all-reduce rounds, then all-reduces as DDP would."""
    original = Dist.wrap

    def wrap(self, model):
        ddp = original(self, model)

        def hook(state, bucket):
            if bucket.index() == 0:
                counts.append(1)
            return allreduce_hook(None, bucket)

        ddp.register_comm_hook(None, hook)
        return ddp

    return wrap


def _run_ranked(spec_path, run_dir, rank: int, world: int, counts: list):
    from specrun.engine.execute import Options, execute

    spec, plan = load_plan(spec_path)
    dist = Dist(rank, world, 0, torch.device("cpu"), "ddp")
    return execute(plan, Options(run_dir=str(run_dir), quiet=True), dist)


@pytest.mark.parametrize("accumulate", [1, 4])
def test_one_all_reduce_per_optimizer_step(tmp_path, monkeypatch, accumulate):
    counts: list = []
    monkeypatch.setattr(Dist, "wrap", _counting_wrap(counts))
    spec_path = _spec(tmp_path, accumulate)
    td.init_process_group("gloo", store=td.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        out = _run_ranked(spec_path, tmp_path / "ddp", 0, 1, counts)
    finally:
        if td.is_initialized():
            td.destroy_process_group()
    assert out.code == 0, out.message
    assert len(counts) == 6  # six optimizer steps, one round each
    alone = run_inproc(spec_path, tmp_path / "alone", sets=("distributed.nproc_per_node=1",))
    assert alone.code == 0, alone.message
    assert train_losses(tmp_path / "ddp", float) == pytest.approx(train_losses(tmp_path / "alone", float), rel=1e-6)


def _rank_main(rank, world, port, spec_path, run_dir, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    counts: list = []
    Dist.wrap = _counting_wrap(counts)
    _, plan = load_plan(spec_path)
    dist = distributed.from_environment(plan)
    from specrun.engine.execute import Options, execute

    out = execute(plan, Options(run_dir=str(run_dir), quiet=True), dist)
    with open(result_path, "w") as fh:
        fh.write(f"{out.code} {len(counts)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_all_reduce_once_per_step_and_match_one_process(tmp_path):
    spec_path = _spec(tmp_path, 3, nproc=2)
    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, 2, port, spec_path, tmp_path / "two", tmp_path / f"r{r}"))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    for r in range(2):
        code, rounds = (tmp_path / f"r{r}").read_text().split()
        assert (code, rounds) == ("0", "6")  # 6 steps x accumulate 3: 6 all-reduce rounds, not 18
    one = run_inproc(spec_path, tmp_path / "one", sets=("batch=16", "distributed.nproc_per_node=1"))
    assert one.code == 0, one.message
    two, one = train_losses(tmp_path / "two", float), train_losses(tmp_path / "one", float)
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
