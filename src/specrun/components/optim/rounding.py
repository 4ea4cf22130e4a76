"""bfloat16 optimizer state that keeps moving: deterministic stochastic rounding.

An exponential moving average ``m = beta * m + (1 - beta) * g`` moves by
``(1 - beta) * (g - m)`` per step. bfloat16 keeps 8 significant bits, so once
that move is below half a unit in the last place of ``m`` a round-to-nearest
store gives back the old ``m``: with beta 0.99 the momentum stops moving when
``|g - m|`` is below about a fifth of ``|m|`` (under a constant gradient of 1.3
it sticks at 1.0 forever), and with Adam's beta2 0.999 the second moment
sticks far earlier.

Stochastic rounding stores ``x`` as one of its two bfloat16 neighbours with
probabilities proportional to closeness, so the stored value equals ``x`` in
expectation and small moves accumulate instead of vanishing. It is done on the
bit pattern: add a uniform random 16-bit integer to the fp32 bits, clear the
low 16 bits (the result is then exactly a bfloat16 value). fp32 and bfloat16
share the sign bit and exponent, so this rounds the magnitude up with
probability (dropped bits) / 2^16, for either sign; infinities stay infinite and
NaN stays NaN.

Memory: nothing persistent beyond the bfloat16 state itself (half of fp32); the
step needs transient fp32 and int32 copies of the buffer being stored, as the
round-to-nearest store needed the fp32 copy.

Determinism: the random bits come from a generator seeded with a hash of
(rounding seed, step, parameter index, buffer name), all of which a checkpoint
restores (the step and the seed are optimizer state; the index is the
parameter's position), so a resumed run draws the very same bits and stays bit
identical, and every data-parallel rank, stepping the same parameters at the
same step, rounds identically. No generator state has to be saved.
"""

from __future__ import annotations

import hashlib

import torch

LOW_BITS = 1 << 16  # the 16 mantissa bits fp32 has and bfloat16 lacks
HIGH_MASK = -LOW_BITS  # int32 mask 0xFFFF0000


def rounding_generator(device: torch.device, *key: int | str) -> torch.Generator:
    """A generator on ``device`` seeded by a stable hash of ``key`` (same key, same bits)."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    gen = torch.Generator(device=device)
    gen.manual_seed(int.from_bytes(digest, "little") >> 1)  # manual_seed takes < 2^63
    return gen


def stochastic_round_bf16(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``x`` (any float dtype) rounded stochastically to bfloat16, unbiased in expectation."""
    x32 = x.float().contiguous()
    noise = torch.randint(0, LOW_BITS, x32.shape, dtype=torch.int32, device=x32.device, generator=generator)
    bits = (x32.view(torch.int32) + noise) & HIGH_MASK
    rounded = bits.view(torch.float32)
    # NaN bit patterns near the top of the int32 range would wrap: keep NaN as it is.
    return torch.where(torch.isnan(x32), x32, rounded).to(torch.bfloat16)


def store_state(buffer: torch.Tensor, value: torch.Tensor, seed: int, step: int, index: int, name: str) -> None:
    """Write fp32 ``value`` into optimizer state ``buffer``: exactly if fp32, stochastically if bf16."""
    if buffer.dtype != torch.bfloat16:
        buffer.copy_(value)
        return
    buffer.copy_(stochastic_round_bf16(value, rounding_generator(buffer.device, seed, step, index, name)))
