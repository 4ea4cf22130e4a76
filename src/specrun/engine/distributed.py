"""Beyond one process: PyTorch's own engine (torchrun, DDP, FSDP), not a new one.

``specrun run`` re-launches itself through ``torch.distributed.run`` when the
spec's ``distributed`` block asks for more than one process and it is not
already running under a launcher; under torchrun (or a cluster launcher that
sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR) each process joins the
process group here. Only rank 0 writes logs and checkpoints; every decision
that gates read (skips, promotions, stops) is taken on values reduced across
ranks, so all ranks take the same branch and none waits forever.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass

from specrun.plan import Plan
from specrun.sections import DistributedPolicy


def launch_if_needed(plan: Plan, argv: list[str]) -> int | None:
    """Start torchrun for a multi-process spec; None when this process should train itself."""
    dist = plan.distributed
    if plan.world_size <= 1 or "WORLD_SIZE" in os.environ:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run",
           f"--nproc_per_node={dist.nproc_per_node}", f"--nnodes={dist.nnodes}"]
    if dist.nnodes > 1 or dist.rdzv_endpoint:
        cmd += [f"--rdzv_backend={dist.rdzv_backend}",
                f"--rdzv_endpoint={dist.rdzv_endpoint or 'localhost:29400'}",
                f"--rdzv_id={dist.rdzv_id or plan.name}"]
    else:
        cmd += ["--standalone"]
    env = dict(os.environ)
    if "--run-dir" not in argv:
        from specrun.engine.rundir import new_run_id

        env.setdefault("SPECRUN_RUN_ID", new_run_id())  # every rank names the same new run
    cmd += ["-m", "specrun.cli"] + argv[1:]
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:  # torchrun forwards the signal to the ranks, which save and exit
        return 130


@dataclass
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: object
    strategy: str
    host_group: object = None  # a gloo group for host-side agreement; None: the default group is gloo

    def shard(self, model):
        """FSDP2: each repeated block, then the root, keeps only this rank's shard of its weights.

        Called before the optimizer is built, so that it holds the shards (DTensors).
        A model names its blocks with ``fsdp_units()``; otherwise every element of every
        ``nn.ModuleList`` is one (the transformer blocks of our models). Methods other
        than ``forward`` that run the model (``generate`` for validation samples) are
        registered so that they gather the weights too.
        """
        import torch
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        units = model.fsdp_units() if hasattr(model, "fsdp_units") else [
            block for m in model.modules() if isinstance(m, torch.nn.ModuleList) for block in m]
        for unit in reversed(units):  # inner blocks first (an MoE's experts inside a zone block)
            fully_shard(unit, mesh=mesh)
        fully_shard(model, mesh=mesh)
        for name in getattr(model, "fsdp_forward_methods", ("generate",)):
            if callable(getattr(model, name, None)):
                register_fsdp_forward_method(model, name)
        return model

    def wrap(self, model):
        import torch

        if self.strategy == "fsdp":
            return model  # sharded in place by shard(), before the optimizer was built
        ids = [self.device.index] if self.device.type == "cuda" else None
        # A model with switched or staged modules declares what DDP must know (unused
        # parameters, per-rank buffers such as a replay memory) in `ddp_options`.
        options = getattr(model, "ddp_options", {})
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, **options)

    def gradient_sync(self, model, last: bool):
        """Context for one micro-batch's forward and backward: DDP all-reduces only on the last.

        The earlier micro-batches of an accumulation window add into the local ``.grad``
        under ``no_sync``; the last backward all-reduces the sum, once per optimizer step.
        FSDP reduce-scatters every backward: skipping it would keep whole unsharded
        gradients on every rank, the memory FSDP exists to save.
        """
        if last or self.strategy != "ddp" or not hasattr(model, "no_sync"):
            return contextlib.nullcontext()
        return model.no_sync()

    def average_gradients(self, params) -> None:
        """All-reduce (mean) gradients by hand: when the last micro-batch of a window was dropped
        (nonfinite.scope micro_batch), no backward ran outside ``no_sync`` to do it."""
        import torch.distributed as td

        if self.strategy != "ddp":
            return  # FSDP reduce-scattered in every backward
        for p in params:
            if p.grad is not None:
                td.all_reduce(p.grad)
                p.grad.div_(self.world_size)

    def any_rank(self, flag) -> None:
        """A 0/1 device flag becomes 1 on every rank if it is 1 on any: an all-reduce on the
        device, queued behind the step's kernels, not a host sync."""
        import torch.distributed as td

        td.all_reduce(flag, op=td.ReduceOp.MAX)

    def mean_tensor(self, values):
        """The mean across ranks of a tensor of numbers (one all-reduce)."""
        import torch.distributed as td

        values = values.to(self._comm_device())
        td.all_reduce(values)
        return values / self.world_size

    def barrier(self) -> None:
        import torch.distributed as td

        td.barrier(group=self.host_group)

    def all_agree(self, flag: bool) -> bool:
        """True only if every rank says True (a skip on one rank is a skip on all)."""
        import torch
        import torch.distributed as td

        t = torch.tensor([1 if flag else 0], device=self._comm_device())
        td.all_reduce(t, op=td.ReduceOp.MIN)
        return bool(t.item())

    def first_signal(self, signum: int | None) -> int | None:
        """The signal any rank received (the largest number wins), or None.

        Asked every step, over the host group (gloo, CPU tensors): a round trip between the
        processes, never a wait for the GPU's queue to drain."""
        import torch
        import torch.distributed as td

        t = torch.tensor([signum or 0])
        td.all_reduce(t, op=td.ReduceOp.MAX, group=self.host_group)
        return int(t.item()) or None

    def mean(self, values: dict):
        import torch
        import torch.distributed as td

        names = sorted(values)
        t = torch.stack([values[n].float().reshape(()) for n in names]).to(self._comm_device())
        td.all_reduce(t)
        return dict(zip(names, t / self.world_size))

    def _comm_device(self):
        import torch

        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def close(self) -> None:
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


def from_environment(plan: Plan) -> Dist | None:
    """Join the process group when a launcher started this process; None when alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    import torch
    import torch.distributed as td

    policy = plan.distributed or DistributedPolicy()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and policy.backend != "gloo"
    backend = policy.backend
    if backend == "auto":
        backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not td.is_initialized():
        from datetime import timedelta

        # A dead peer must end the run, not park the others in a collective for the default 30 minutes.
        td.init_process_group(backend=backend, timeout=timedelta(minutes=5))
    # FSDP2 (fully_shard) runs on CUDA with nccl and on the CPU with gloo alike.
    host_group = td.new_group(backend="gloo") if td.get_backend() != "gloo" else None
    return Dist(td.get_rank(), td.get_world_size(), local, device, policy.strategy, host_group)
