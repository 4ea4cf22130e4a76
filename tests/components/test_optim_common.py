"""What the optimizers share: the closure call and the weight-decay groups."""

from __future__ import annotations

import torch

from specrun.components.optim.common import closure_loss, decay_groups


def test_closure_loss_runs_the_closure_with_gradients_on():
    x = torch.ones(3, requires_grad=True)
    with torch.no_grad():
        loss = closure_loss(lambda: (x * 2).sum())
        assert closure_loss(None) is None
    assert loss.item() == 6.0 and loss.requires_grad


def test_decay_groups_decay_matrices_only():
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    decay, no_decay = decay_groups(model, 0.1)
    assert [p.dim() for p in decay["params"]] == [2] and decay["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
