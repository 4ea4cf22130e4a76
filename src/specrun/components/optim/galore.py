"""GaLore low-rank gradient projection, and AdamW with it (catalog entry ``galore_adamw``).

GaLore (Zhao et al., 2024): for a 2-D weight with gradient G [m, n], keep an
orthonormal projector P from the top-``rank`` singular vectors of G, refreshed
every ``update_every`` steps; the inner optimizer sees only the projected
gradient (rank x n or m x rank), so its state is low-rank too; its update is
projected back and multiplied by ``scale``.

Which weights: those whose parameter name contains one of ``targets``
(default ``["attn", "mlp"]``, the reference's ``target_modules_list``:
attention and MLP weights), so embeddings and the output head are updated
unprojected unless a target names them. Optimizers built directly (not from a
spec) take ``galore_params``; None means every 2-D weight.

Side, as in the reference implementation: if m >= n the projector is
P = V[:, :r]^T [r, n] and R = G P^T [m, r], back-projection R P; otherwise
P = U[:, :r] [m, r] and R = P^T G [r, n], back-projection P R. Parameters that
are not 2-D, or whose smaller side is not larger than ``rank``, are updated
unprojected (a projection could not make their state smaller).

The projector (``galore_proj``, fp32), its side and the step counter live in
the optimizer state, so ``state_dict()`` / ``load_state_dict()`` restore it
bit for bit; :class:`StatefulOptimizer` keeps the saved dtypes on load
(torch's default would cast every floating state tensor to the parameter's
dtype, turning bf16 momentum into fp32 and changing the trajectory).
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from specrun.components.optim.common import closure_loss, decay_groups
from specrun.components.optim.rounding import store_state

GALORE_DEFAULTS = {"rank": 128, "update_every": 200, "scale": 0.25, "targets": ["attn", "mlp"]}
STATE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
LEFT, RIGHT = 0, 1


def galore_config(raw: dict | None) -> dict | None:
    """Fill defaults of a ``galore { ... }`` block; None (absent) means off."""
    if raw is None or raw is False:
        return None
    cfg = {**GALORE_DEFAULTS, **dict(raw)}
    targets = cfg["targets"]
    if (int(cfg["rank"]) < 1 or int(cfg["update_every"]) < 1 or float(cfg["scale"]) <= 0
            or isinstance(targets, str) or not all(isinstance(t, str) and t for t in targets)):
        raise ValueError(f"invalid galore settings {cfg}")
    return {"rank": int(cfg["rank"]), "update_every": int(cfg["update_every"]),
            "scale": float(cfg["scale"]), "targets": list(targets)}


def galore_targets(model: torch.nn.Module, cfg: dict | None, ctx) -> list[torch.nn.Parameter] | None:
    """The weights whose name contains one of ``cfg["targets"]``; None when GaLore is off.

    Says so through ``ctx.note`` when GaLore is on and no 2-D weight matches (nothing
    would be projected: a misspelt target should not pass silently).
    """
    if cfg is None:
        return None
    chosen = [p for name, p in model.named_parameters()
              if p.dim() == 2 and any(t in name for t in cfg["targets"])]
    if not chosen:
        ctx.note(f"galore: no 2-D weight's name contains any of targets {cfg['targets']}; nothing is projected")
    return chosen


def projects(p: torch.Tensor, cfg: dict | None, targets: set[int] | None = None) -> bool:
    """Project ``p``'s gradient? (on, a target, 2-D and both sides larger than the rank)"""
    return (cfg is not None and p.dim() == 2 and min(p.shape) > cfg["rank"]
            and (targets is None or id(p) in targets))


def make_projector(grad: torch.Tensor, rank: int) -> tuple[torch.Tensor, int]:
    """(P, side) from the top-``rank`` singular vectors of ``grad`` (SVD in fp32)."""
    g = grad.detach().float()
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    if g.shape[0] >= g.shape[1]:
        return vh[:rank].contiguous(), RIGHT  # [r, n]
    return u[:, :rank].contiguous(), LEFT  # [m, r]


def project(grad: torch.Tensor, proj: torch.Tensor, side: int) -> torch.Tensor:
    g = grad.float()
    return g @ proj.t() if side == RIGHT else proj.t() @ g


def project_back(low: torch.Tensor, proj: torch.Tensor, side: int) -> torch.Tensor:
    return low @ proj if side == RIGHT else proj @ low


def galore_grad(state: dict, grad: torch.Tensor, cfg: dict) -> torch.Tensor:
    """Refresh the projector when due and return the low-rank gradient (fp32)."""
    if state["step"] % cfg["update_every"] == 0 or "galore_proj" not in state:
        state["galore_proj"], state["galore_side"] = make_projector(grad, cfg["rank"])
    return project(grad, state["galore_proj"], state["galore_side"])


class StatefulOptimizer(Optimizer):
    """Optimizer whose state tensors keep their saved dtype through ``load_state_dict``.

    ``galore_params``: the weights GaLore may project (None: every 2-D weight). Kept
    as identities, not in the state: the spec's ``targets`` choose them at every build.
    """

    def __init__(self, params, defaults: dict, galore_params=None):
        if defaults["lr"] <= 0:
            raise ValueError(f"lr must be > 0, got {defaults['lr']}")
        if defaults["state_dtype"] not in STATE_DTYPES:
            raise ValueError(f"state_dtype must be one of {sorted(STATE_DTYPES)}")
        defaults = {**defaults, "betas": tuple(defaults["betas"]), "galore": galore_config(defaults["galore"]),
                    "rounding_seed": int(defaults["rounding_seed"])}
        super().__init__(params, defaults)
        self.galore_params = None if galore_params is None else {id(p) for p in galore_params}

    def gradients(self, buffers: tuple[str, ...]):
        """(group, index, p, state, g, low) for every parameter with a gradient.

        ``index`` counts every parameter, with a gradient or not: the stochastic
        rounding stream of a state tensor is keyed by it. ``g`` is the fp32 gradient,
        projected to low rank when ``low``; the state ``buffers`` start as zeros of
        g's shape in the group's state dtype.
        """
        index = -1
        for group in self.param_groups:
            cfg, sdt = group["galore"], STATE_DTYPES[group["state_dtype"]]
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                state = self.state[p]
                if "step" not in state:
                    state["step"] = 0
                low = projects(p, cfg, self.galore_params)
                g = galore_grad(state, p.grad, cfg) if low else p.grad.float()
                if buffers[0] not in state:
                    for name in buffers:
                        state[name] = torch.zeros_like(g, dtype=sdt)
                yield group, index, p, state, g, low

    @staticmethod
    def apply_update(p: torch.Tensor, update: torch.Tensor, state: dict, group: dict, low: bool) -> None:
        """p -= lr * (update + weight_decay * p), the update projected back first when ``low``."""
        if low:
            update = project_back(update, state["galore_proj"], state["galore_side"]) * group["galore"]["scale"]
        lr, wd = group["lr"], group["weight_decay"]
        if wd:
            p.mul_(1 - lr * wd)
        p.add_(update.to(p.dtype), alpha=-lr)

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            if i not in saved:
                continue
            st = self.state[p]
            for key, value in saved[i].items():
                if torch.is_tensor(value):
                    st[key] = value.detach().to(device=p.device).clone()

    def set_params(self, params: dict) -> None:
        """Curriculum re-parameterisation: lr, betas, weight_decay (decayed groups only)."""
        for group in self.param_groups:
            if "lr" in params:
                group["lr"] = float(params["lr"])
            if "betas" in params:
                group["betas"] = tuple(float(b) for b in params["betas"])
            if "weight_decay" in params and group.get("weight_decay", 0.0) != 0.0:
                group["weight_decay"] = float(params["weight_decay"])


class GaLoreAdamW(StatefulOptimizer):
    """AdamW (decoupled weight decay, bias-corrected moments) with optional GaLore projection."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, state_dtype: str = "fp32", galore: dict | None = None,
                 galore_params=None, rounding_seed: int = 0):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        state_dtype=state_dtype, galore=galore, rounding_seed=rounding_seed)
        super().__init__(params, defaults, galore_params)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group, index, p, state, g, low in self.gradients(("exp_avg", "exp_avg_sq")):
            (beta1, beta2), eps, seed = group["betas"], group["eps"], group.get("rounding_seed", 0)
            state["step"] += 1
            t = state["step"]
            m = state["exp_avg"].float().mul_(beta1).add_(g, alpha=1 - beta1)
            v = state["exp_avg_sq"].float().mul_(beta2).addcmul_(g, g, value=1 - beta2)
            store_state(state["exp_avg"], m, seed, t, index, "exp_avg")
            store_state(state["exp_avg_sq"], v, seed, t, index, "exp_avg_sq")
            m_hat = m / (1 - beta1 ** t)
            v_hat = v / (1 - beta2 ** t)
            self.apply_update(p, m_hat / (v_hat.sqrt() + eps), state, group, low)
        return loss


def build_optimizer(params: dict, model: torch.nn.Module, ctx) -> GaLoreAdamW:
    """Catalog entry ``galore_adamw``: AdamW with GaLore on (``galore`` defaults filled)."""
    galore = galore_config(params.get("galore") or {})
    return GaLoreAdamW(
        decay_groups(model, float(params.get("weight_decay", 0.0))),
        lr=float(params.get("lr", 1e-3)),
        betas=tuple(params.get("betas", (0.9, 0.999))),
        eps=float(params.get("eps", 1e-8)),
        state_dtype=params.get("state_dtype", "fp32"),
        galore=galore,
        galore_params=galore_targets(model, galore, ctx),
        rounding_seed=ctx.seed,
    )
