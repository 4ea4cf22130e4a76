"""Model ``grid_transformer``: a bidirectional transformer over the cells of a grid.

Each cell is one position: token embedding + row embedding + column embedding, plus an
embedding of the grid's order n and of its mode, added to every cell. The shared
pre-norm ``Stack`` from ``components.nn`` runs with ``causal=False`` and a key-padding
mask (cells outside the n x n square are never attended to), and a linear head gives
logits over the shared token space at every cell.

How the grid gets filled
------------------------
Training is masked prediction: the blanks are MASK tokens and the loss is cross-entropy
at the blanks, all predicted at once (not autoregressively as the original trainer did:
a Latin square has no natural order, and one parallel pass per step trains on every
blank at once). In training mode ``forward`` returns the one-shot logits and the task's
metrics read their argmax.

In eval mode (``model.eval()``) with ``decode_steps > 1`` the forward pass also runs the
iterative confident-cell decoder and returns the grid it produced as
``outputs["filled"]``: ``decode_steps`` passes; each pass restricts the logits to the
mode's alphabet, commits the ``ceil(remaining / passes_left)`` most confident blank
cells of every grid, and feeds the grid back, so later cells condition on the earlier
choices. ``outputs["logits"]`` stays the first (one-shot) pass, so validation loss is
comparable with training loss, while ``valid_grid_rate`` and ``cell_accuracy`` in
validation measure the decoder's grids.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from specrun.components.latin import generator as gen
from specrun.components.nn import Stack, init_weights


class GridTransformer(nn.Module):
    supports_gradient_checkpointing = True

    def __init__(self, vocab_size: int = gen.VOCAB_SIZE, max_size: int = gen.MAX_SIZE,
                 num_modes: int = len(gen.MODES), width: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, decode_steps: int = 8,
                 relation_bias: bool = True):
        super().__init__()
        self.vocab_size = vocab_size
        self.max_size = max_size
        self.decode_steps = int(decode_steps)
        self.tok = nn.Embedding(vocab_size, width)
        self.row = nn.Embedding(max_size, width)
        self.col = nn.Embedding(max_size, width)
        self.size = nn.Embedding(max_size + 1, width)
        self.mode = nn.Embedding(num_modes, width)
        self.drop = nn.Dropout(dropout)
        self.stack = Stack(width, depth, heads, mlp_ratio, dropout, causal=False)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.heads = heads
        # learned per-head attention bias for the cell pair's relation: same cell, same row,
        # same column, neither (zero at init: plain attention until it learns otherwise)
        self.relation = nn.Parameter(torch.zeros(heads, 4)) if relation_bias else None
        init_weights(self, depth)
        tables = torch.as_tensor(gen.TOKEN_SYMBOL >= 0)  # [modes, max+1, V]: the alphabets
        self.register_buffer("alphabet", tables, persistent=False)

    # -- switches -----------------------------------------------------------------

    def set_gradient_checkpointing(self, on: bool) -> None:
        self.stack.gradient_checkpointing = bool(on)

    def set_params(self, params: dict) -> None:
        if "decode_steps" in params:
            self.decode_steps = int(params["decode_steps"])

    # -- forward ------------------------------------------------------------------

    def _positions(self, cells: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        side = math.isqrt(cells)
        if side * side != cells or side > self.max_size:
            raise ValueError(f"grid_transformer: {cells} cells is not a square grid of side <= {self.max_size}")
        idx = torch.arange(cells, device=device)
        return idx // side, idx % side

    def _attention_mask(self, cell_mask, rows, cols):
        """Keys outside the grid are never attended to (queries keep >= 9 keys: no empty rows)."""
        if self.relation is None:
            return cell_mask[:, None, None, :] if cell_mask is not None else None
        same_row = rows[:, None] == rows[None, :]
        same_col = cols[:, None] == cols[None, :]
        kind = torch.where(same_row & same_col, 0, torch.where(same_row, 1, torch.where(same_col, 2, 3)))
        bias = self.relation[:, kind]  # [heads, N, N]
        device_type = bias.device.type
        if torch.is_autocast_enabled(device_type):  # the kernels want the mask in q's dtype
            bias = bias.to(torch.get_autocast_dtype(device_type))
        if cell_mask is not None and cell_mask.device.type == "cpu" and bool(cell_mask.all()):
            cell_mask = None  # no padding: one [1, heads, N, N] bias (on GPU we skip this sync)
        if cell_mask is None:
            return bias.unsqueeze(0)
        pad = torch.zeros(cell_mask.shape, dtype=bias.dtype, device=bias.device)
        pad = pad.masked_fill(~cell_mask, float("-inf"))
        return bias.unsqueeze(0) + pad[:, None, None, :]  # [B, heads, N, N]

    def logits(self, tokens: torch.Tensor, batch: dict) -> torch.Tensor:
        rows, cols = self._positions(tokens.shape[1], tokens.device)
        x = self.tok(tokens) + self.row(rows) + self.col(cols)
        x = x + (self.size(batch["n"]) + self.mode(batch["mode"])).unsqueeze(1)
        h = self.stack(self.drop(x), self._attention_mask(batch.get("cell_mask"), rows, cols))
        return self.head(h)

    def forward(self, batch: dict) -> dict:
        logits = self.logits(batch["inputs"], batch)
        out = {"logits": logits}
        if not self.training and self.decode_steps > 1:
            out["filled"] = self.decode(batch, logits, self.decode_steps)
        return out

    @torch.no_grad()
    def decode(self, batch: dict, first_logits: torch.Tensor | None = None, steps: int | None = None) -> torch.Tensor:
        """Iterative confident-cell decoding; returns the filled token grid [B, cells]."""
        steps = max(1, int(steps or self.decode_steps))
        grid = batch["inputs"].clone()
        open_ = grid == gen.MASK
        allowed = self.alphabet[batch["mode"], batch["n"]].unsqueeze(1)  # [B, 1, V]
        cells = grid.shape[1]
        positions = torch.arange(cells, device=grid.device).expand_as(grid)
        for step in range(steps):
            logits = first_logits if (step == 0 and first_logits is not None) else self.logits(grid, batch)
            logits = logits.float().masked_fill(~allowed, float("-inf"))
            conf, pred = logits.log_softmax(-1).max(-1)
            conf = conf.masked_fill(~open_, float("-inf"))
            remaining = open_.sum(1, keepdim=True)
            take = torch.div(remaining + (steps - step - 1), steps - step, rounding_mode="floor")
            order = conf.argsort(dim=1, descending=True)
            rank = torch.empty_like(order).scatter_(1, order, positions)
            commit = open_ & (rank < take)
            grid = torch.where(commit, pred, grid)
            open_ = open_ & ~commit
        return grid


def build_model(params: dict, info: dict, ctx) -> GridTransformer:
    return GridTransformer(
        vocab_size=int(info.get("vocab_size", gen.VOCAB_SIZE)),
        max_size=int(info.get("max_size", gen.MAX_SIZE)),
        num_modes=int(info.get("num_modes", len(gen.MODES))),
        width=int(params.get("width", 128)),
        depth=int(params.get("depth", 4)),
        heads=int(params.get("heads", 4)),
        mlp_ratio=float(params.get("mlp_ratio", 4.0)),
        dropout=float(params.get("dropout", 0.0)),
        decode_steps=int(params.get("decode_steps", 8)),
        relation_bias=bool(params.get("relation_bias", True)),
    )
