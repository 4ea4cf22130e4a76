"""Transformer building blocks shared by every model family.

Pre-norm residual blocks with PyTorch's fused scaled-dot-product attention
(FlashAttention / memory-efficient kernels on GPU, a fused CPU kernel here).
Gradient checkpointing is per block with ``use_reentrant=False``, the variant
PyTorch recommends (works with autocast, keyword args and no-grad inputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32: bf16/fp16 squares overflow or lose the mean.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0, causal: bool = True,
                 linear: type[nn.Module] = nn.Linear):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.causal = causal
        self.dropout = dropout
        self.qkv = linear(dim, 3 * dim, bias=False)
        self.out = linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal and mask is None,
        )
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float = 0.0,
                 linear: type[nn.Module] = nn.Linear):
        super().__init__()
        self.up = linear(dim, hidden, bias=False)
        self.down = linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down(F.gelu(self.up(x), approximate="tanh")))


class Block(nn.Module):
    """x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 causal: bool = True, linear: type[nn.Module] = nn.Linear):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, causal, linear)
        self.norm2 = RMSNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout, linear)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class Stack(nn.Module):
    """``depth`` blocks with optional per-block gradient checkpointing."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, causal: bool = True,
                 linear: type[nn.Module] = nn.Linear):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, dropout, causal, linear) for _ in range(depth)
        )
        self.norm = RMSNorm(dim)
        self.gradient_checkpointing = False

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return self.norm(x)


def init_weights(module: nn.Module, depth: int) -> None:
    """GPT-2 style init: N(0, 0.02), residual projections scaled by 1/sqrt(2*depth)."""
    for name, p in module.named_parameters():
        if p.dim() < 2:
            continue
        std = 0.02 / math.sqrt(2 * depth) if name.endswith(("out.weight", "down.weight")) else 0.02
        nn.init.normal_(p, mean=0.0, std=std)


def softcap(logits: torch.Tensor, cap: float | None) -> torch.Tensor:
    """cap * tanh(logits / cap): bounded logits without a hard clip's dead gradient."""
    if not cap:
        return logits
    return cap * torch.tanh(logits / cap)
