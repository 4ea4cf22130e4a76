"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), optional GaLore.

Per parameter, with gradient g and momentum m::

    update = sign(beta1 * m + (1 - beta1) * g)
    p      = p - lr * (update + weight_decay * p)
    m      = beta2 * m + (1 - beta2) * g

One state buffer (Adam keeps two). ``state_dtype bf16`` stores m in bfloat16,
halving it again: the arithmetic is done in fp32 and the result stored with
deterministic stochastic rounding (see ``rounding``), since a round-to-nearest
store stops m from moving once ``(1 - beta2) * |g - m|`` is below half a bf16
step of m. With ``galore { rank .. update_every .. scale .. }`` the gradient of
every large 2-D weight is projected to rank ``rank`` first (see ``galore``):
m lives in the low-rank space, and the sign update is projected back and
multiplied by ``scale``.
"""

from __future__ import annotations

import torch

from specrun.components.optim.common import closure_loss, decay_groups
from specrun.components.optim.galore import StatefulOptimizer, galore_config, galore_targets
from specrun.components.optim.rounding import store_state


class Lion(StatefulOptimizer):
    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.99), weight_decay: float = 0.0,
                 state_dtype: str = "fp32", galore: dict | None = None, galore_params=None,
                 rounding_seed: int = 0):
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay,
                        state_dtype=state_dtype, galore=galore, rounding_seed=rounding_seed)
        super().__init__(params, defaults, galore_params)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group, index, p, state, g, low in self.gradients(("exp_avg",)):
            beta1, beta2 = group["betas"]
            m = state["exp_avg"].float()
            update = (m * beta1).add_(g, alpha=1 - beta1).sign_()
            self.apply_update(p, update, state, group, low)
            store_state(state["exp_avg"], m.mul_(beta2).add_(g, alpha=1 - beta2),
                        group.get("rounding_seed", 0), state["step"], index, "exp_avg")
            state["step"] += 1
        return loss


def build_optimizer(params: dict, model: torch.nn.Module, ctx) -> Lion:
    """Catalog entry ``lion``; ``galore`` absent (or null) means no projection."""
    galore = galore_config(params.get("galore"))
    return Lion(
        decay_groups(model, float(params.get("weight_decay", 0.0))),
        lr=float(params.get("lr", 1e-4)),
        betas=tuple(params.get("betas", (0.9, 0.99))),
        state_dtype=params.get("state_dtype", "fp32"),
        galore=galore,
        galore_params=galore_targets(model, galore, ctx),
        rounding_seed=ctx.seed,
    )
