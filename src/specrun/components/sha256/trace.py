"""SHA-256 compression traces, vectorised over a batch of message blocks.

Two implementations of the same arithmetic:

- NumPy on ``uint32`` arrays (CPU producers, ``inline`` transport, tests);
- torch on ``int64`` tensors masked to 32 bits after every addition (the
  ``device`` transport), because torch lacks ``uint32`` arithmetic for several
  ops on several backends. Both give identical words; a test checks it.

This module imports no torch at import time: producer processes load it and
must start fast.

Bit layout (shared by the task, the model and the docs): a word is unpacked
least-significant bit first, so bit ``j`` of a 32-bit word sits at position
``32 * word + j``. One transition's input is 10 words = 320 bits:
``a b c d e f g h W_t K_t``; its target is the 8 words of the next state.
"""

from __future__ import annotations

import numpy as np

MASK32 = 0xFFFFFFFF

K = np.array([
    0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4, 0xAB1C5ED5,
    0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE, 0x9BDC06A7, 0xC19BF174,
    0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F, 0x4A7484AA, 0x5CB0A9DC, 0x76F988DA,
    0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7, 0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967,
    0x27B70A85, 0x2E1B2138, 0x4D2C6DFC, 0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85,
    0xA2BFE8A1, 0xA81A664B, 0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070,
    0x19A4C116, 0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
    0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7, 0xC67178F2,
], dtype=np.uint32)

H0 = np.array([
    0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19,
], dtype=np.uint32)

STATE_WORDS = 8
INPUT_WORDS = 10  # a..h, W_t, K_t
WORD_BITS = 32
STATE_BITS = STATE_WORDS * WORD_BITS  # 256
INPUT_BITS = INPUT_WORDS * WORD_BITS  # 320


# ---------------------------------------------------------------------------------------------
# NumPy (uint32)
# ---------------------------------------------------------------------------------------------

_R_SIGMA0 = np.array([[7], [18]], dtype=np.uint32)  # sigma0: ROTR 7, ROTR 18 (and SHR 3)
_R_SIGMA1 = np.array([[17], [19]], dtype=np.uint32)  # sigma1: ROTR 17, ROTR 19 (and SHR 10)
_R_BIG0 = np.array([[2], [13], [22]], dtype=np.uint32)  # Sigma0(a)
_R_BIG1 = np.array([[6], [11], [25]], dtype=np.uint32)  # Sigma1(e)


def _rotr_xor(x: np.ndarray, amounts: np.ndarray) -> np.ndarray:
    """XOR of ``x`` rotated right by each of ``amounts`` ([k, 1]), in three ufunc calls.

    Per-call overhead dominates at small batch sizes, so the rotations are stacked.
    """
    return np.bitwise_xor.reduce((x >> amounts) | (x << (np.uint32(32) - amounts)), axis=0)


def _schedule_t(block: np.ndarray, rounds: int) -> np.ndarray:
    """Message schedule, time-major: [max(rounds, 16), B] uint32 (contiguous rows)."""
    block = np.asarray(block, dtype=np.uint32)
    w = np.empty((max(rounds, 16), block.shape[0]), dtype=np.uint32)
    w[:16] = block.T
    for t in range(16, rounds):
        x15, x2 = w[t - 15], w[t - 2]
        s0 = _rotr_xor(x15, _R_SIGMA0) ^ (x15 >> np.uint32(3))
        s1 = _rotr_xor(x2, _R_SIGMA1) ^ (x2 >> np.uint32(10))
        w[t] = s1 + w[t - 7] + s0 + w[t - 16]
    return w


def trace_np(block: np.ndarray, rounds: int = 64, init: np.ndarray | None = None):
    """Run ``rounds`` compression rounds on every block of the batch.

    ``block``: [B, 16] uint32 message words (big-endian words of the padded block);
    ``init``: [B, 8] uint32 chaining value (default: the SHA-256 IV for every row).
    Returns ``(states, w)``: states [B, rounds + 1, 8] uint32 (``states[:, 0]`` is
    ``init``; ``states[:, t + 1]`` the state after round ``t``) and w [B, rounds]
    (both are transposed views of time-major arrays).
    """
    if not 1 <= rounds <= 64:
        raise ValueError(f"rounds must be in 1..64, got {rounds}")
    w = _schedule_t(block, rounds)
    b = w.shape[1]
    st = np.empty((rounds + 1, 8, b), dtype=np.uint32)  # time-major: every word a contiguous row
    st[0] = H0[:, None] if init is None else np.asarray(init, dtype=np.uint32).T
    for t in range(rounds):
        cur, nxt = st[t], st[t + 1]
        a, bb, c, d, e, f, g, h = cur
        t1 = h + _rotr_xor(e, _R_BIG1) + ((e & f) ^ (~e & g)) + K[t] + w[t]
        t2 = _rotr_xor(a, _R_BIG0) + ((a & bb) ^ (c & (a ^ bb)))  # Sigma0(a) + Maj(a, b, c)
        nxt[1:4] = cur[0:3]  # b, c, d = a, b, c
        nxt[5:8] = cur[4:7]  # f, g, h = e, f, g
        np.add(d, t1, out=nxt[4])
        np.add(t1, t2, out=nxt[0])
    return st.transpose(2, 0, 1), w[:rounds].T


def words_to_bits_np(words: np.ndarray) -> np.ndarray:
    """[..., n] uint32 -> [..., 32 n] uint8 in {0, 1}, each word least-significant bit first."""
    words = np.ascontiguousarray(words, dtype="<u4")
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
    return bits


def bits_to_words_np(bits: np.ndarray) -> np.ndarray:
    """Inverse of :func:`words_to_bits_np`."""
    packed = np.packbits(np.asarray(bits, dtype=np.uint8), axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u4").astype(np.uint32)


def transition_words_np(states: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Inputs of every transition as words: [B, R, 10] = (a..h, W_t, K_t)."""
    b, r1, _ = states.shape
    r = r1 - 1
    out = np.empty((b, r, INPUT_WORDS), dtype=np.uint32)
    out[:, :, :8] = states[:, :r]
    out[:, :, 8] = w[:, :r]
    out[:, :, 9] = K[:r]
    return out


def fill_batch_np(block: np.ndarray, rounds: int, init: np.ndarray | None,
                  inputs: np.ndarray, targets: np.ndarray) -> None:
    """Write one batch in place: inputs [B, R, 320] uint8, targets [B, R, 256] uint8."""
    states, w = trace_np(block, rounds, init)
    inputs[...] = words_to_bits_np(transition_words_np(states, w))
    targets[...] = words_to_bits_np(states[:, 1:])


def make_batch_np(block: np.ndarray, rounds: int, init: np.ndarray | None = None):
    b = block.shape[0]
    inputs = np.empty((b, rounds, INPUT_BITS), dtype=np.uint8)
    targets = np.empty((b, rounds, STATE_BITS), dtype=np.uint8)
    fill_batch_np(block, rounds, init, inputs, targets)
    return inputs, targets


# ---------------------------------------------------------------------------------------------
# Message padding (for tests and benchmarks against hashlib)
# ---------------------------------------------------------------------------------------------

def pad_single_block(message: bytes) -> np.ndarray:
    """FIPS 180-4 padding of a message of at most 55 bytes into one block: [16] uint32."""
    if len(message) > 55:
        raise ValueError("a single-block message has at most 55 bytes")
    padded = message + b"\x80" + b"\x00" * (55 - len(message)) + (8 * len(message)).to_bytes(8, "big")
    return np.frombuffer(padded, dtype=">u4").astype(np.uint32)


def digest_from_trace(states: np.ndarray, init: np.ndarray | None = None) -> list[bytes]:
    """Digests of full 64-round traces: (final state + chaining value) as big-endian bytes."""
    if states.shape[1] != 65:
        raise ValueError("a digest needs the full 64-round trace")
    start = H0 if init is None else init
    with np.errstate(over="ignore"):
        final = (states[:, 64] + start).astype(">u4")
    return [row.tobytes() for row in final]


# ---------------------------------------------------------------------------------------------
# Random message blocks: a pure function of (seed, rank, index, stream)
# ---------------------------------------------------------------------------------------------

TRAIN_STREAM = 0
VAL_STREAM = 1


def random_blocks(seed: int, rank: int, index: int, batch_size: int, stream: int = TRAIN_STREAM,
                  random_init: bool = False):
    """Message words [B, 16] (and a random chaining value [B, 8] when ``random_init``).

    Micro-batch ``index`` of ``stream`` draws from Philox keyed by
    ``SeedSequence([seed, rank, index])`` (the validation stream adds a spawn key),
    so it is the same whichever process, transport or producer count computes it.
    """
    if stream == TRAIN_STREAM:
        seq = np.random.SeedSequence([seed, rank, index])
    else:
        seq = np.random.SeedSequence([seed, rank, index], spawn_key=(stream,))
    gen = np.random.Generator(np.random.Philox(seq))
    block = gen.integers(0, 1 << 32, size=(batch_size, 16), dtype=np.uint32)
    init = gen.integers(0, 1 << 32, size=(batch_size, 8), dtype=np.uint32) if random_init else None
    return block, init


# ---------------------------------------------------------------------------------------------
# torch (int64 masked to 32 bits)
# ---------------------------------------------------------------------------------------------

def _rotr_t(x, n: int):
    # x < 2**32, so x << (32 - n) < 2**63: no int64 overflow.
    return ((x >> n) | (x << (32 - n))) & MASK32


def trace_torch(block, rounds: int = 64, init=None):
    """torch version of :func:`trace_np` on the device of ``block``.

    ``block``: int64 tensor [B, 16] of values in [0, 2**32); ``init`` [B, 8] or None.
    Returns ``(states [B, rounds + 1, 8] int64, w [B, rounds] int64)``.
    """
    import torch

    if not 1 <= rounds <= 64:
        raise ValueError(f"rounds must be in 1..64, got {rounds}")
    block = block.to(torch.int64)
    dev = block.device
    bsz = block.shape[0]
    ws = [block[:, i] for i in range(16)]
    for t in range(16, rounds):
        x15, x2 = ws[t - 15], ws[t - 2]
        s0 = _rotr_t(x15, 7) ^ _rotr_t(x15, 18) ^ (x15 >> 3)
        s1 = _rotr_t(x2, 17) ^ _rotr_t(x2, 19) ^ (x2 >> 10)
        ws.append((s1 + ws[t - 7] + s0 + ws[t - 16]) & MASK32)
    k = torch.as_tensor(K.astype(np.int64), device=dev)
    if init is None:
        init = torch.as_tensor(H0.astype(np.int64), device=dev).expand(bsz, 8)
    init = init.to(device=dev, dtype=torch.int64)
    a, b, c, d, e, f, g, h = (init[:, i] for i in range(8))
    rows = [init]
    for t in range(rounds):
        s1 = _rotr_t(e, 6) ^ _rotr_t(e, 11) ^ _rotr_t(e, 25)
        ch = (e & f) ^ ((e ^ MASK32) & g)
        t1 = (h + s1 + ch + k[t] + ws[t]) & MASK32
        s0 = _rotr_t(a, 2) ^ _rotr_t(a, 13) ^ _rotr_t(a, 22)
        maj = (a & b) ^ (a & c) ^ (b & c)
        t2 = s0 + maj
        h, g, f = g, f, e
        e = (d + t1) & MASK32
        d, c, b = c, b, a
        a = (t1 + t2) & MASK32
        rows.append(torch.stack((a, b, c, d, e, f, g, h), dim=-1))
    return torch.stack(rows, dim=1), torch.stack(ws[:rounds], dim=1)


def words_to_bits_torch(words, dtype=None):
    """[..., n] int64 words -> [..., 32 n] bits (uint8 unless ``dtype``), LSB first."""
    import torch

    shifts = torch.arange(32, device=words.device, dtype=torch.int64)
    bits = (words.unsqueeze(-1) >> shifts) & 1
    bits = bits.reshape(*words.shape[:-1], words.shape[-1] * 32)
    return bits.to(dtype or torch.uint8)


def make_batch_torch(block, rounds: int, init=None):
    """inputs [B, R, 320] uint8 and targets [B, R, 256] uint8 on ``block``'s device."""
    import torch

    states, w = trace_torch(block, rounds, init)
    k = torch.as_tensor(K[:rounds].astype(np.int64), device=states.device)
    k = k.expand(states.shape[0], rounds)
    words = torch.cat((states[:, :rounds], w.unsqueeze(-1), k.unsqueeze(-1)), dim=-1)
    return words_to_bits_torch(words), words_to_bits_torch(states[:, 1:])
