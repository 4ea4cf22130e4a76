"""A metric function returning named scalars."""

import torch


def margin(outputs, batch, top: int = 2):
    _, targets = batch
    best = outputs.topk(top, dim=-1).values
    return {"margin": (best[:, 0] - best[:, 1]).mean(), "hit": (outputs.argmax(-1) == targets).float().mean()}
