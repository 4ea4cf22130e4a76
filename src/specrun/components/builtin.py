"""Built-in components: a synthetic task with a known rule, an MLP, AdamW and SGD.

They exist so the engine can be tested (and benchmarked) apart from the
reference tasks: real training on a problem whose answer is known.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from specrun.components.api import Context


class RuleClassification:
    """label = argmax(W x + noise), x ~ N(0, I); W fixed by the seed.

    Micro-batch ``i`` is drawn from a generator seeded with (seed, i), so any
    batch can be rebuilt from its index alone: exact resume needs no saved
    data-loader state.
    """

    def __init__(self, params: dict, ctx: Context):
        self.ctx = ctx
        self.features = params["features"]
        self.classes = params["classes"]
        self.noise = params["noise"]
        self.epoch_size = params["epoch_size"]
        self.val_offset = params["val_seed_offset"]
        gen = torch.Generator().manual_seed(ctx.seed)
        self.rule = torch.randn(self.features, self.classes, generator=gen)
        self.metric_names = ("accuracy",)

    def model_info(self) -> dict:
        return {"in_features": self.features, "classes": self.classes}

    def set_params(self, params: dict) -> None:
        for key, value in params.items():
            if key not in ("noise",):
                raise ValueError(f"rule_classification cannot change '{key}' during a run")
            setattr(self, key, value)

    def _batch(self, stream: int, index: int) -> dict:
        # The whole global micro-batch (all ranks) comes from one generator and each rank
        # takes its slice: two processes of batch b see exactly what one process of
        # batch 2b sees, so a distributed run can be checked against a single one.
        size, world, rank = self.ctx.batch_size, self.ctx.world_size, self.ctx.rank
        gen = torch.Generator().manual_seed(hash((self.ctx.seed, stream, index)) & (2**63 - 1))
        x = torch.randn(size * world, self.features, generator=gen)
        logits = x @ self.rule
        if self.noise:
            logits = logits + self.noise * torch.randn(logits.shape, generator=gen)
        part = slice(rank * size, (rank + 1) * size)
        batch = {"inputs": x[part], "targets": logits.argmax(-1)[part]}
        return {k: v.to(self.ctx.device, non_blocking=True) for k, v in batch.items()}

    def train_batches(self, start: int) -> Iterator[dict]:
        index = start
        while True:
            yield self._batch(0, index)
            index += 1

    def val_batches(self, count: int) -> Iterator[dict]:
        for i in range(count):
            yield self._batch(self.val_offset, i)

    def batches_per_epoch(self) -> int:
        return max(1, self.epoch_size // self.ctx.batch_size)

    def metrics(self, outputs: dict, batch: dict) -> dict:
        correct = (outputs["logits"].argmax(-1) == batch["targets"]).float().mean()
        return {"accuracy": correct}

    def close(self) -> None:
        pass


class MLP(nn.Module):
    def __init__(self, in_features: int, classes: int, width: int, depth: int, dropout: float):
        super().__init__()
        layers, dim = [], in_features
        for _ in range(depth):
            layers += [nn.Linear(dim, width), nn.GELU(), nn.Dropout(dropout)]
            dim = width
        layers.append(nn.Linear(dim, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, batch: dict) -> dict:
        return {"logits": self.net(batch["inputs"])}


def build_rule_task(params: dict, ctx: Context) -> RuleClassification:
    return RuleClassification(params, ctx)


def build_mlp(params: dict, info: dict, ctx: Context) -> MLP:
    return MLP(info["in_features"], info["classes"], params["width"], params["depth"], params["dropout"])


def build_adamw(params: dict, model: nn.Module, ctx: Context) -> torch.optim.Optimizer:
    # Fused wherever PyTorch has the kernel (CUDA, CPU, ...): one kernel per step, and it skips a
    # non-finite step on the device (found_inf), so the loop never waits to decide.
    args = dict(lr=params["lr"], betas=tuple(params["betas"]), eps=params["eps"],
                weight_decay=params["weight_decay"])
    trainable = [p for p in model.parameters() if p.requires_grad]
    try:
        return torch.optim.AdamW(trainable, fused=True, **args)
    except RuntimeError:  # a device (or dtype) without the fused kernel
        return torch.optim.AdamW(trainable, **args)


def build_sgd(params: dict, model: nn.Module, ctx: Context) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=params["lr"], momentum=params["momentum"], weight_decay=params["weight_decay"],
    )
