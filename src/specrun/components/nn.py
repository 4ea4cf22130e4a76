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
    """Multi-head self-attention. With ``softcap`` > 0 the scores are soft-capped before
    the softmax, Gemma 2's ``cap * tanh(scores / cap)``: fused SDPA kernels take no such
    cap, so that path computes the scores itself (more memory: the T x T scores exist)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0, causal: bool = True,
                 linear: type[nn.Module] = nn.Linear, softcap: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.causal = causal
        self.dropout = dropout
        self.softcap = float(softcap)
        self.qkv = linear(dim, 3 * dim, bias=False)
        self.out = linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        if self.softcap > 0:
            y = capped_attention(q, k, v, self.softcap, mask, self.causal and mask is None, dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                               is_causal=self.causal and mask is None)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


def capped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cap: float,
                     mask: torch.Tensor | None = None, causal: bool = False,
                     dropout: float = 0.0) -> torch.Tensor:
    """softmax(cap * tanh(q k^T / sqrt(d) / cap) + mask) v, as SDPA would compute it uncapped.

    ``mask`` is SDPA's: boolean (True attends) or additive. The softmax runs in fp32.
    """
    scores = (q @ k.transpose(-2, -1)).float() * q.shape[-1] ** -0.5
    scores = cap * torch.tanh(scores / cap)
    if causal:
        t, s = q.shape[-2], k.shape[-2]
        keep = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(diagonal=s - t)
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    if dropout:
        probs = F.dropout(probs, dropout)
    return probs @ v


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
                 causal: bool = True, linear: type[nn.Module] = nn.Linear, attn_softcap: float = 0.0):
        super().__init__()
        self.norm1 = RMSNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout, causal, linear, attn_softcap)
        self.norm2 = RMSNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout, linear)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class Stack(nn.Module):
    """``depth`` blocks with optional per-block gradient checkpointing."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, causal: bool = True,
                 linear: type[nn.Module] = nn.Linear, attn_softcap: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, dropout, causal, linear, attn_softcap) for _ in range(depth)
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
