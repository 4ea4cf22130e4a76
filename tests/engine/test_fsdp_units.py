"""FSDP's units: nested blocks (an MoE's experts inside a zone block) shard inner first.

One gloo process in a subprocess of its own (a process group is process-wide state).
"""

import os
import socket
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os, torch, torch.distributed as td
    from torch import nn
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["PORT"])
    td.init_process_group("gloo", rank=0, world_size=1)
    from specrun.engine.distributed import Dist
    from specrun.components.lm.memory import ZoneBlock
    torch.manual_seed(0)
    m = nn.Module()
    m.zone = nn.ModuleList(ZoneBlock(16, 2, 32, 4, 2, 0.0) for _ in range(2))
    m.forward = lambda x: sum(block(x)[0].sum() for block in m.zone)
    Dist(0, 1, 0, torch.device("cpu"), "fsdp").shard(m)
    m(torch.randn(2, 5, 16)).backward()
    print("sharded", sum(p.grad is not None for p in m.parameters()))
    td.destroy_process_group()
""")


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def test_nested_module_lists_shard_inner_blocks_first():
    env = {**os.environ, "PORT": _free_port(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("sharded ")
