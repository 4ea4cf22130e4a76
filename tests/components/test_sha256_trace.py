"""SHA-256 traces: equal to hashlib, NumPy equal to torch, bit layout, seed streams."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from specrun.components.api import Context
from specrun.components.sha256 import trace as T
from specrun.components.sha256.task import build_task


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _digests(messages: list[bytes]) -> list[bytes]:
    block = np.stack([T.pad_single_block(m) for m in messages])
    states, _ = T.trace_np(block, 64)
    return T.digest_from_trace(states)


def test_full_traces_match_hashlib():
    rng = np.random.default_rng(0)
    messages = [rng.bytes(int(n)) for n in rng.integers(0, 56, size=200)] + [b"", b"abc", b"x" * 55]
    assert _digests(messages) == [hashlib.sha256(m).digest() for m in messages]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=55), min_size=1, max_size=8))
def test_hashlib_equality_property(messages):
    assert _digests(messages) == [hashlib.sha256(m).digest() for m in messages]


def test_known_vector_abc():
    # FIPS 180-2 appendix B.1: the state after round 0 of "abc" and the digest
    states, w = T.trace_np(T.pad_single_block(b"abc")[None], 64)
    assert states[0, 1, 0] == 0x5D6AEBCD and states[0, 1, 4] == 0xFA2A4622
    assert T.digest_from_trace(states)[0].hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_digest_with_random_chaining_value_is_a_compression():
    # two-block message: second block's compression starts from the first block's digest
    msg = b"a" * 64 + b"tail"
    first = np.frombuffer(msg[:64], dtype=">u4").astype(np.uint32)[None]
    s1, _ = T.trace_np(first, 64)
    cv = np.frombuffer(T.digest_from_trace(s1)[0], dtype=">u4").astype(np.uint32)[None]
    tail = msg[64:] + b"\x80" + b"\x00" * (55 - 4) + (8 * len(msg)).to_bytes(8, "big")
    second = np.frombuffer(tail, dtype=">u4").astype(np.uint32)[None]
    s2, _ = T.trace_np(second, 64, init=cv)
    assert T.digest_from_trace(s2, init=cv)[0] == hashlib.sha256(msg).digest()


@pytest.mark.parametrize("rounds", [1, 7, 16, 17, 64])
@pytest.mark.parametrize("random_init", [False, True])
def test_torch_trace_equals_numpy(rounds, random_init):
    block, init = T.random_blocks(3, 1, 11, 32, random_init=random_init)
    s_np, w_np = T.trace_np(block, rounds, init)
    init_t = None if init is None else torch.from_numpy(init.astype(np.int64))
    s_t, w_t = T.trace_torch(torch.from_numpy(block.astype(np.int64)), rounds, init_t)
    assert np.array_equal(s_t.numpy(), s_np) and np.array_equal(w_t.numpy(), w_np)
    x_np, y_np = T.make_batch_np(block, rounds, init)
    x_t, y_t = T.make_batch_torch(torch.from_numpy(block.astype(np.int64)), rounds, init_t)
    assert np.array_equal(x_t.numpy(), x_np) and np.array_equal(y_t.numpy(), y_np)


def test_bit_layout():
    block, _ = T.random_blocks(0, 0, 0, 4)
    states, w = T.trace_np(block, 8)
    x, y = T.make_batch_np(block, 8)
    assert x.shape == (4, 8, 320) and y.shape == (4, 8, 256)
    assert x.dtype == np.uint8 and set(np.unique(x)) <= {0, 1}
    words_in = T.bits_to_words_np(x)
    assert np.array_equal(words_in[..., :8], states[:, :8])
    assert np.array_equal(words_in[..., 8], w)
    assert np.array_equal(words_in[..., 9], np.broadcast_to(T.K[:8], (4, 8)))
    assert np.array_equal(T.bits_to_words_np(y), states[:, 1:])
    # least significant bit first
    assert x[0, 0, 0] == states[0, 0, 0] & 1 and x[0, 0, 31] == states[0, 0, 0] >> 31
    # next state's b, c, d, f, g, h are copies: the 192 "shifted" bits
    assert np.array_equal(y[..., 32:128], x[..., 0:96]) and np.array_equal(y[..., 160:256], x[..., 128:224])


def test_random_blocks_are_pure_functions_of_seed_rank_index():
    a, _ = T.random_blocks(5, 0, 7, 16)
    b, _ = T.random_blocks(5, 0, 7, 16)
    assert np.array_equal(a, b)
    for other in (T.random_blocks(6, 0, 7, 16)[0], T.random_blocks(5, 1, 7, 16)[0],
                  T.random_blocks(5, 0, 8, 16)[0], T.random_blocks(5, 0, 7, 16, T.VAL_STREAM)[0]):
        assert not np.array_equal(a, other)


def test_device_transport_equals_inline():
    ctx = Context(seed=4, device=torch.device("cpu"), batch_size=8)
    inline = build_task({"rounds": 12, "transport": "inline", "init_state": "random"}, ctx)
    device = build_task({"rounds": 12, "transport": "device", "init_state": "random"}, ctx)
    try:
        for a, b in zip([next(inline.train_batches(3))] + list(inline.val_batches(2)),
                        [next(device.train_batches(3))] + list(device.val_batches(2))):
            assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["targets"], b["targets"])
    finally:
        inline.close()
        device.close()
