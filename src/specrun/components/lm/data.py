"""Cutting samples from a tokenised split, and the deterministic micro-batch map.

Packing (``packing`` parameter):

- ``pad``: one document per sample, truncated to ``seq_len + 1`` tokens and
  padded; the padding is never a target.
- ``concat``: the split's documents back to back, cut into ``seq_len + 1``
  windows that overlap by one token (window j starts at ``j * seq_len``).

A sample of ``seq_len + 1`` tokens gives ``input_ids = s[:-1]`` and
``targets = s[1:]``, with -100 where the target is padding or masked out
(``loss_on response``).

The schedule: with ``n`` samples, ``w`` ranks and micro-batch size ``B``,
each epoch holds ``n // w // B`` micro-batches per rank (the remainder is
dropped so every rank takes the same number of steps). Epoch ``e`` visits the
samples in the order of a permutation drawn from ``(seed, e)``; rank ``r``
takes every ``w``-th entry of that order starting at ``r``. So micro-batch
``i`` of rank ``r`` is a pure function of (seed, rank, world_size, i, params),
which is what makes resume exact.
"""

from __future__ import annotations

import numpy as np

from specrun.components.lm.corpus import Split

IGNORE = -100


class Packed:
    """Samples of ``seq_len + 1`` tokens cut from one split."""

    def __init__(self, split: Split, seq_len: int, packing: str, pad_id: int):
        self.split = split
        self.seq_len = seq_len
        self.packing = packing
        self.pad_id = pad_id
        if packing == "pad":
            self.size = split.documents
        elif packing == "concat":
            self.size = max(0, (len(split.tokens) - 1) // seq_len)
        else:
            raise ValueError(f"unknown packing {packing!r}")

    def __len__(self) -> int:
        return self.size

    def gather(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, targets), both int64 ``[len(indices), seq_len]``."""
        t1 = self.seq_len + 1
        ids = np.full((len(indices), t1), self.pad_id, dtype=np.int64)
        keep = np.zeros((len(indices), t1), dtype=bool)
        tokens, mask = self.split.tokens, self.split.mask
        for row, j in enumerate(indices):
            if self.packing == "pad":
                lo = int(self.split.offsets[j])
                hi = min(int(self.split.offsets[j + 1]), lo + t1)
            else:
                lo = int(j) * self.seq_len
                hi = lo + t1
            n = hi - lo
            ids[row, :n] = tokens[lo:hi]
            keep[row, :n] = True if mask is None else mask[lo:hi].astype(bool)
        targets = ids[:, 1:].copy()
        targets[~keep[:, 1:]] = IGNORE
        return ids[:, :-1], targets


class Schedule:
    """Which samples micro-batch ``i`` holds, for one rank."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size, self.batch_size = size, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.per_epoch = size // world_size // batch_size
        if self.per_epoch == 0:
            raise ValueError(
                f"task text_lm: the training split has {size} samples, fewer than "
                f"batch {batch_size} x world size {world_size}; add data or lower the batch"
            )
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            seq = np.random.SeedSequence([self.seed, epoch, 0x7E47])
            self._perm = np.random.Generator(np.random.PCG64(seq)).permutation(self.size)
            self._epoch = epoch
        return self._perm

    def indices(self, i: int) -> np.ndarray:
        epoch, j = divmod(i, self.per_epoch)
        perm = self.permutation(epoch)
        pos = (j * self.batch_size + np.arange(self.batch_size)) * self.world_size + self.rank
        return perm[pos]


def val_indices(size: int, batch_size: int, count: int, rank: int, world_size: int) -> list[np.ndarray]:
    """``count`` fixed batches: rank r's share (every world_size-th sample), in order, wrapping."""
    own = np.arange(rank, size, world_size)
    if len(own) == 0:
        raise ValueError(f"task text_lm: the validation split has {size} samples, fewer than "
                         f"the world size {world_size}")
    flat = np.arange(count * batch_size) % len(own)
    return [own[flat[k * batch_size:(k + 1) * batch_size]] for k in range(count)]
