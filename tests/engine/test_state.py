"""engine/state.py's RNG state: what a checkpoint keeps of Python's, NumPy's and torch's random
streams survives a weights_only load and puts every stream back where it was.

Whole-run resumes (test_resume*.py) show the sum of it; this is the piece that a
weights_only load would refuse if it held a NumPy array or a tuple it cannot rebuild.
"""

import io
import random

import numpy as np
import torch

from specrun.engine.state import rng_state, set_rng_state


def _draws() -> tuple:
    return random.random(), random.getrandbits(64), np.random.rand(3).tolist(), np.random.randn(), \
        torch.rand(3).tolist()


def test_rng_state_survives_a_weights_only_load_and_restores_every_stream():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # NumPy keeps a cached Gaussian: it must come back too
    buffer = io.BytesIO()
    torch.save(rng_state(), buffer)
    expected = _draws()

    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert _draws() != expected
    buffer.seek(0)
    set_rng_state(torch.load(buffer, weights_only=True))
    assert _draws() == expected


def test_the_numpy_keys_round_trip_exactly():
    np.random.seed(12345)
    before = np.random.get_state()
    set_rng_state(rng_state())
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]
    assert after[1].dtype == np.uint32
