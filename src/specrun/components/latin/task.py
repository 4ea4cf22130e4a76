"""Task ``latin_grid``: fill the blank cells of a partly revealed Latin square.

A micro-batch holds grids of mixed orders n (drawn uniformly from ``sizes``) and modes
(uniformly from ``modes``), each with a revealed fraction drawn uniformly from ``fill``.
Grids are padded to the largest order in the batch (``pad: batch``) or to 16 x 16
(``pad: full``, fixed shapes for compiled models); cell (r, c) is position r * L + c.

Targets are the solution tokens at the *blank* cells only (-100 at givens and padding):
the givens are in the input, so predicting them teaches nothing and would dilute the loss.

Batch keys (all on ``ctx.device``):

- ``inputs``    [B, L*L] long: value token at givens, MASK at blanks, PAD outside the grid
- ``targets``   [B, L*L] long: solution token at blanks, -100 elsewhere
- ``solution``  [B, L*L] long: the generated solution (PAD outside)
- ``cell_mask`` [B, L*L] bool: inside the n x n grid (the model's attention key mask)
- ``n``, ``mode`` [B] long: order and mode index (``generator.MODES``)

Determinism: micro-batch ``i`` is drawn from a numpy PCG64 stream seeded with
(seed, rank, i) and uses the parameters current when it is produced; batches are made
lazily on the consumer's thread, so after ``set_params`` no batch of the old difficulty
is ever served. Validation batch ``j`` uses the stream (seed, rank, j, "val").
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from specrun.components.latin import generator as gen

_VAL_STREAM = 0x5A11D
_TRAIN_STREAM = 0x7EA1

DEFAULTS = {
    "sizes": [3, 5],
    "modes": ["standard"],
    "fill": [0.5, 0.7],
    "epoch_size": 65536,
    "generator": "jacobson_matthews",
    "pool_size": 512,
    "pad": "batch",
}


def _as_pair(value, name: str, cast):
    if isinstance(value, dict):  # tolerate {"lo": 3, "hi": 5} / {"start":, "end":}
        value = [value.get("lo", value.get("start")), value.get("hi", value.get("end"))]
    elif hasattr(value, "lo") and hasattr(value, "hi"):  # an unresolved IntRange
        value = [value.lo, value.hi]
    if isinstance(value, (int, float)):
        value = [value, value]
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"latin_grid: {name} must be two numbers, got {value!r}") from None
    lo, hi = cast(lo), cast(hi)
    if lo > hi:
        raise ValueError(f"latin_grid: {name} {lo}..{hi} is empty")
    return lo, hi


def normalise_params(params: dict) -> dict:
    p = {**DEFAULTS, **(params or {})}
    lo, hi = _as_pair(p["sizes"], "sizes", int)
    if lo < gen.MIN_SIZE or hi > gen.MAX_SIZE:
        raise ValueError(f"latin_grid: sizes {lo}..{hi} must lie within {gen.MIN_SIZE}..{gen.MAX_SIZE}")
    modes = p["modes"]
    if isinstance(modes, str):
        modes = [modes]
    modes = list(dict.fromkeys(gen.normalise_mode(m) for m in modes))
    if not modes:
        raise ValueError("latin_grid: modes is empty")
    flo, fhi = _as_pair(p["fill"], "fill", float)
    if flo < 0.0 or fhi > 1.0:
        raise ValueError(f"latin_grid: fill {flo}..{fhi} must lie within 0..1")
    if p["generator"] not in ("jacobson_matthews", "cyclic"):
        raise ValueError(f"latin_grid: unknown generator {p['generator']!r}")
    if p["pad"] not in ("batch", "full"):
        raise ValueError(f"latin_grid: pad must be 'batch' or 'full', got {p['pad']!r}")
    return {**p, "sizes": (lo, hi), "modes": modes, "fill": (flo, fhi),
            "epoch_size": int(p["epoch_size"]), "pool_size": max(1, int(p["pool_size"]))}


class _Tables:
    """The token tables on one device (made once per device)."""

    def __init__(self, device):
        self.symbol_tokens = torch.as_tensor(gen.SYMBOL_TOKENS, device=device)  # [3, 17, 16]
        self.token_symbol = torch.as_tensor(gen.TOKEN_SYMBOL, device=device)  # [3, 17, V]


_tables: dict[str, _Tables] = {}


def tables(device) -> _Tables:
    key = str(torch.device(device))
    if key not in _tables:
        _tables[key] = _Tables(device)
    return _tables[key]


def check_grids(grid: torch.Tensor, inputs: torch.Tensor, n: torch.Tensor, mode: torch.Tensor,
                cell_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Exact Latin-square check of produced grids; bool [B], no host sync.

    ``grid`` and ``inputs`` are token grids [B, L*L] (L = padded side). A grid is valid iff
    every cell inside its n x n square holds a symbol of its mode's alphabet for order n,
    no symbol repeats in a row or a column (n cells, n distinct symbols of n: each exactly
    once), and every revealed cell of ``inputs`` (neither MASK nor PAD) is unchanged.
    Cells outside the n x n square are ignored.
    """
    b, cells = grid.shape
    side = int(round(cells ** 0.5))
    if side * side != cells:
        raise ValueError(f"grid of {cells} cells is not square")
    t = tables(grid.device)
    if cell_mask is None:
        idx = torch.arange(side, device=grid.device)
        cell_mask = ((idx[None, :, None] < n[:, None, None]) & (idx[None, None, :] < n[:, None, None])).reshape(b, cells)
    lookup = t.token_symbol[mode, n]  # [B, V]
    sym = torch.gather(lookup, 1, grid.clamp(0, gen.VOCAB_SIZE - 1).long())
    sym = torch.where((grid >= 0) & (grid < gen.VOCAB_SIZE), sym, torch.full_like(sym, -1))
    bad_symbol = (cell_mask & (sym < 0)).any(1)
    given = cell_mask & (inputs != gen.MASK) & (inputs != gen.PAD)
    changed = (given & (grid != inputs)).any(1)
    onehot = torch.nn.functional.one_hot(sym.clamp(min=0), side) * (cell_mask & (sym >= 0)).unsqueeze(-1)
    onehot = onehot.view(b, side, side, side)  # [b, row, col, symbol]
    row_dup = (onehot.sum(2) > 1).flatten(1).any(1)
    col_dup = (onehot.sum(1) > 1).flatten(1).any(1)
    return ~(bad_symbol | changed | row_dup | col_dup)


def produced_grid(outputs: dict, batch: dict) -> torch.Tensor:
    """The model's filling: ``outputs["filled"]`` (the iterative decoder, eval mode) when
    present, else the one-shot argmax at the blank cells with the givens copied."""
    filled = outputs.get("filled")
    if filled is not None:
        return filled
    pred = outputs["logits"].argmax(-1)
    blank = batch["inputs"] == gen.MASK
    return torch.where(blank, pred, batch["inputs"])


class LatinGridTask:
    metric_names = ("cell_accuracy", "valid_grid_rate")

    def __init__(self, params: dict, ctx):
        self.ctx = ctx
        self.params = normalise_params(params)
        self.device = torch.device(ctx.device) if ctx.device is not None else torch.device("cpu")
        self.cache_dir = getattr(ctx, "cache_dir", None)

    # -- contract -------------------------------------------------------------------

    def model_info(self) -> dict:
        return {
            "vocab_size": gen.VOCAB_SIZE,
            "seq_len": gen.MAX_SIZE * gen.MAX_SIZE,
            "max_size": gen.MAX_SIZE,
            "num_modes": len(gen.MODES),
            "pad_token": gen.PAD,
            "mask_token": gen.MASK,
            "value_offset": gen.VALUE_OFFSET,
        }

    def set_params(self, params: dict) -> None:
        self.params = normalise_params({**self.params, **(params or {})})

    def make_batch(self, index: int, split: str = "train") -> dict:
        """Micro-batch ``index`` of ``split`` under the current parameters (pure function)."""
        words = [int(self.ctx.seed) % (1 << 64), int(self.ctx.rank), int(index)]
        words.append(_VAL_STREAM if split == "val" else _TRAIN_STREAM)
        rng = np.random.Generator(np.random.PCG64(words))
        p = self.params
        arrays = gen.make_grids(rng, int(self.ctx.batch_size), p["sizes"], p["modes"], p["fill"],
                                p["generator"], p["pool_size"], p["pad"], self.cache_dir)
        return {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}

    def train_batches(self, start: int) -> Iterator[dict]:
        i = int(start)
        while True:
            yield self.make_batch(i, "train")
            i += 1

    def val_batches(self, count: int) -> Iterator[dict]:
        for j in range(int(count)):
            yield self.make_batch(j, "val")

    def batches_per_epoch(self) -> int | None:
        return max(1, self.params["epoch_size"] // int(self.ctx.batch_size))

    def metrics(self, outputs: dict, batch: dict) -> dict:
        grid = produced_grid(outputs, batch)
        blank = batch["targets"] != gen.IGNORE
        correct = ((grid == batch["targets"]) & blank).sum()
        cell_accuracy = correct.float() / blank.sum().clamp(min=1).float()
        valid = check_grids(grid, batch["inputs"], batch["n"], batch["mode"], batch["cell_mask"])
        return {"cell_accuracy": cell_accuracy, "valid_grid_rate": valid.float().mean()}

    def close(self) -> None:
        pass


def copy_baseline_valid_rate(batches, seed: int = 0) -> float:
    """Valid-grid rate of "copy the givens, guess every blank uniformly from the mode's
    alphabet" on ``batches`` (an iterable of batches); the bar a model has to clear."""
    g = torch.Generator().manual_seed(seed)
    valid = total = 0
    for batch in batches:
        n, mode, inputs = batch["n"].cpu(), batch["mode"].cpu(), batch["inputs"].cpu()
        blank = inputs == gen.MASK
        guess_sym = (torch.rand(inputs.shape, generator=g) * n[:, None]).long()
        guess = tables("cpu").symbol_tokens[mode[:, None], n[:, None], guess_sym]
        grid = torch.where(blank, guess, inputs)
        ok = check_grids(grid, inputs, n, mode, batch["cell_mask"].cpu())
        valid += int(ok.sum())
        total += ok.numel()
    return valid / max(1, total)


def build_task(params: dict, ctx) -> LatinGridTask:
    return LatinGridTask(params, ctx)
