"""Model ``sparse_logic_transformer``: a small BitNet-style transformer over one SHA-256 round.

Every transition (one row of ``inputs``: 10 words of 32 bits) is an independent
short sequence; attention is non-causal. Two ways to cut it into tokens
(param ``tokens``):

- ``bits`` (default): bit-sliced, 32 tokens, token ``j`` carries bit ``j`` of all
  10 words (a..h, W_t, K_t). SHA-256's round is the same boolean function at
  every bit position plus two kinds of cross-position wiring: the fixed
  rotations of Sigma0/Sigma1 (offsets 2, 13, 22 and 6, 11, 25) and the carry
  chains of the additions (bit j-1 -> j). Bit-slicing makes the per-position
  logic (Ch, Maj, the XORs) a function of one token's 10 features, shared by
  all 32 positions, and the rotations an attention pattern at a fixed cyclic
  offset, which a learned relative-position bias per head expresses directly.
- ``words``: 10 tokens of 32 bits (a shared bit embedding plus a word-position
  embedding), the layout the brief sketches; the model must then discover
  which bit of which word feeds which output bit through dense 32-wide
  projections.

Output: per token a small head (``bits``: 8 logits, one per state word;
``words``: 32 logits for the first 8 tokens), reshaped to [B, R, 256] in the
task's bit order.

Linear layers inside the blocks are :class:`BitLinear` when ``weights`` is
``ternary``: weights quantised to {-1, 0, +1} times their mean absolute value
(BitNet b1.58 absmean), straight-through estimator in backward; activations
optionally quantised to ``activation_bits`` (absmax per token). Embeddings,
norms and the output head stay full precision, as in BitNet.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from specrun.components.nn import Stack, init_weights

WORDS_IN = 10
WORDS_OUT = 8
WORD_BITS = 32


class BitLinear(nn.Linear):
    """Linear layer with ternary weights (absmean) and optional absmax activation quantisation.

    As BitNet b1.58's reference code (``weight_quant`` / ``activation_quant``)::

        s_w = 1 / mean|w|;          w_codes = round_clip(w * s_w, -1, 1)
        s_x = qmax / max|x| (per token);  x_codes = round_clip(x * s_x, -qmax - 1, qmax)
        y   = (x_codes @ w_codes^T) / (s_x * s_w) + bias

    with straight-through estimators: forward uses the codes, backward the identity,
    so the latent full-precision ``w`` keeps learning.

    Both quantisers run in fp32 whatever the input dtype or autocast: in bf16,
    ``x * s_x`` lands on the wrong side of a rounding boundary for about 10 % of
    8-bit codes. The matrix product then takes the integer codes themselves (exact
    in bf16 and fp16) and the scales are applied after it in fp32, so under autocast
    the only roundings left are those of the product's output and of its rescaling.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 activation_bits: int = 0, eps: float = 1e-5, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.activation_bits = int(activation_bits)
        self.eps = eps

    def weight_codes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes in {-1, 0, 1}, scale s_w) in fp32, no gradient: w ~ codes / s_w."""
        w = self.weight.detach().float()
        scale = 1.0 / w.abs().mean().clamp(min=self.eps)
        return (w * scale).round().clamp(-1, 1), scale

    def activation_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(integer codes, per-token scale s_x) in fp32, no gradient: x ~ codes / s_x."""
        qmax = 2 ** (self.activation_bits - 1) - 1
        x = x.detach().float()
        scale = qmax / x.abs().amax(dim=-1, keepdim=True).clamp(min=self.eps)
        return (x * scale).round().clamp(-qmax - 1, qmax), scale

    def quantized_weight(self) -> torch.Tensor:
        """The ternary weight times its scale (what forward multiplies by), no STE."""
        codes, scale = self.weight_codes()
        return (codes / scale).to(self.weight.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_codes, scale = self.weight_codes()
        w = _straight_through(self.weight, scale, w_codes)
        if self.activation_bits:
            x_codes, x_scale = self.activation_codes(x)
            x = _straight_through(x, x_scale, x_codes)
            scale = scale * x_scale
        y = F.linear(x, w)  # integer codes: exact in any dtype autocast picks
        y = (y.float() / scale).to(y.dtype)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ternary, activation_bits={self.activation_bits}"


def _straight_through(t: torch.Tensor, scale: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """``codes`` forward, ``t * scale`` backward, in ``t``'s dtype (fp32 arithmetic in between).

    ``t * scale`` lies within 0.5 of its code (or beyond the clip), so the subtraction
    and the addition are exact: the forward value is exactly the integer code.
    """
    scaled = t.float() * scale
    return (scaled + (codes - scaled).detach()).to(t.dtype)


class SparseLogicTransformer(nn.Module):
    supports_gradient_checkpointing = True

    def __init__(self, *, width: int = 256, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, weights: str = "ternary", activation_bits: int = 0,
                 tokens: str = "bits"):
        super().__init__()
        if weights not in ("ternary", "full"):
            raise ValueError(f"weights must be 'ternary' or 'full', got {weights!r}")
        if tokens not in ("bits", "words"):
            raise ValueError(f"tokens must be 'bits' or 'words', got {tokens!r}")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.tokens = tokens
        self.heads = heads
        linear = partial(BitLinear, activation_bits=activation_bits) if weights == "ternary" else nn.Linear
        if tokens == "bits":
            self.seq_len, feat, out = WORD_BITS, WORDS_IN, WORDS_OUT
            # Cyclic relative-position bias per head: (j - i) mod 32 -> bias, shared by the blocks.
            self.rel_bias = nn.Parameter(torch.zeros(heads, WORD_BITS))
            idx = (torch.arange(WORD_BITS)[None, :] - torch.arange(WORD_BITS)[:, None]) % WORD_BITS
            self.register_buffer("rel_index", idx, persistent=False)
        else:
            self.seq_len, feat, out = WORDS_IN, WORD_BITS, WORD_BITS
            self.rel_bias = None
        self.embed = nn.Linear(feat, width, bias=True)  # shared bit embedding (inputs in {-1, +1})
        self.pos = nn.Parameter(torch.zeros(self.seq_len, width))
        self.stack = Stack(width, depth, heads, mlp_ratio, dropout, causal=False, linear=linear)
        self.head = nn.Linear(width, out, bias=True)
        init_weights(self, depth)
        nn.init.normal_(self.pos, std=0.02)

    def set_gradient_checkpointing(self, on: bool = True) -> None:
        self.stack.gradient_checkpointing = bool(on)

    def forward(self, batch: dict) -> dict:
        x = batch["inputs"]
        b, r, n = x.shape
        bits = x.reshape(b * r, WORDS_IN, WORD_BITS).to(self.embed.weight.dtype) * 2 - 1
        if self.tokens == "bits":
            bits = bits.transpose(1, 2)  # [N, 32 bit positions, 10 words]
        h = self.embed(bits) + self.pos
        mask = None
        if self.rel_bias is not None:
            mask = self.rel_bias[:, self.rel_index].unsqueeze(0).to(h.dtype)  # [1, H, 32, 32]
        h = self.stack(h, mask)
        logits = self.head(h)
        if self.tokens == "bits":
            logits = logits.transpose(1, 2)  # [N, 8 words, 32 bits]
        else:
            logits = logits[:, :WORDS_OUT]
        return {"logits": logits.reshape(b, r, WORDS_OUT * WORD_BITS)}


def build_model(params: dict, info: dict, ctx) -> SparseLogicTransformer:
    if info and (info.get("input_bits", 320) != 320 or info.get("state_bits", 256) != 256):
        raise ValueError("sparse_logic_transformer expects 320 input bits and 256 state bits")
    model = SparseLogicTransformer(
        width=int(params.get("width", 256)),
        depth=int(params.get("depth", 4)),
        heads=int(params.get("heads", 4)),
        mlp_ratio=float(params.get("mlp_ratio", 4.0)),
        dropout=float(params.get("dropout", 0.0)),
        weights=params.get("weights", "ternary"),
        activation_bits=int(params.get("activation_bits", 0)),
        tokens=params.get("tokens", "bits"),
    )
    if params.get("gradient_checkpointing"):
        model.set_gradient_checkpointing(True)
    return model
