"""Latin squares: validity for every order and mode, the token space, the JM chain's uniformity."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from specrun.components.latin import generator as gen


def _klein(square: np.ndarray) -> bool:
    """Order 4: isotopic to the Klein-four table iff every row pair differs by a fixed-point-free involution."""
    for i, j in itertools.combinations(range(4), 2):
        sigma = np.empty(4, int)
        sigma[square[i]] = square[j]
        if any(sigma[sigma[x]] != x for x in range(4)):
            return False
    return True


def test_mode_alphabets():
    assert gen.mode_values("standard", 4) == [1, 2, 3, 4]
    assert gen.mode_values("zero_inclusive", 4) == [0, 1, 2, 3]
    assert gen.mode_values("negative", 5) == [-2, -1, 0, 1, 2]
    assert gen.mode_values("negative", 4) == [-2, -1, 1, 2]
    assert gen.mode_values("NEGATIVE", 16) == list(range(-8, 0)) + list(range(1, 9))
    for mode in gen.MODES:
        for n in range(gen.MIN_SIZE, gen.MAX_SIZE + 1):
            values = gen.mode_values(mode, n)
            assert len(values) == len(set(values)) == n
            if mode == "negative":
                assert sorted(values) == sorted(-v for v in values)  # symmetric around 0
    with pytest.raises(ValueError):
        gen.normalise_mode("positive")


def test_token_space_covers_every_mode_without_collisions():
    specials = {gen.PAD, gen.MASK}
    for m in range(len(gen.MODES)):
        for n in range(gen.MIN_SIZE, gen.MAX_SIZE + 1):
            tokens = gen.SYMBOL_TOKENS[m, n, :n]
            assert len(set(tokens.tolist())) == n
            assert not specials & set(tokens.tolist())
            assert tokens.min() >= 2 and tokens.max() < gen.VOCAB_SIZE
            assert (gen.TOKEN_SYMBOL[m, n, tokens] == np.arange(n)).all()
            assert [gen.token_to_value(t) for t in tokens] == gen.mode_values(m, n)
    assert gen.VOCAB_SIZE == 27


@pytest.mark.parametrize("generator", ["jacobson_matthews", "cyclic"])
def test_every_order_gives_latin_squares(generator):
    rng = np.random.default_rng(0)
    for n in range(gen.MIN_SIZE, gen.MAX_SIZE + 1):
        squares = gen.sample_squares(rng, n, 6, generator, pool_size=8)
        assert squares.shape == (6, n, n)
        assert all(gen.is_latin(sq) for sq in squares), n


def test_batches_hold_valid_grids_in_every_mode():
    rng = np.random.default_rng(1)
    arrays = gen.make_grids(rng, 96, (3, 16), list(gen.MODES), (0.0, 0.0), pool_size=8)
    side = arrays["inputs"].shape[1]
    side = int(round(side ** 0.5))
    assert side == arrays["n"].max()
    for b in range(96):
        n, m = int(arrays["n"][b]), int(arrays["mode"][b])
        grid = arrays["solution"][b].reshape(side, side)
        assert (grid[n:, :] == gen.PAD).all() and (grid[:, n:] == gen.PAD).all()
        sym = gen.TOKEN_SYMBOL[m, n, grid[:n, :n]]
        assert gen.is_latin(sym)
    assert set(arrays["mode"].tolist()) == {0, 1, 2}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 9), count=st.integers(1, 5), seed=st.integers(0, 2**32 - 1))
def test_random_isotopes_stay_latin(n, count, seed):
    rng = np.random.default_rng(seed)
    base = gen.jacobson_matthews(rng, n, count, visits=2)
    assert all(gen.is_latin(sq) for sq in base)
    assert all(gen.is_latin(sq) for sq in gen.random_isotopes(rng, base))


def test_is_latin_rejects():
    assert gen.is_latin(gen.cyclic_square(5))
    bad = gen.cyclic_square(5)
    bad[0, 0], bad[0, 1] = bad[0, 1], bad[0, 0]  # rows still fine, columns broken
    assert not gen.is_latin(bad)
    assert not gen.is_latin(np.zeros((3, 3), int))


def test_jacobson_matthews_is_uniform_on_order_4():
    # 576 Latin squares of order 4: 432 isotopic to Z4, 144 to the Klein group (a quarter)
    squares = gen.jacobson_matthews(np.random.default_rng(7), 4, 6000, visits=16)
    counts = collections.Counter(sq.tobytes() for sq in squares)
    assert len(counts) == 576
    klein = np.mean([_klein(sq) for sq in squares])
    assert abs(klein - 0.25) < 0.03, klein
    # the expected count per square is 10.4; a chi-square far above its 575 dof means bias
    expected = len(squares) / 576
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 700, chi2


def test_cyclic_generator_never_reaches_the_klein_class():
    rng = np.random.default_rng(3)
    cyclic = gen.sample_squares(rng, 4, 400, "cyclic")
    assert not any(_klein(sq) for sq in cyclic)
    jm = gen.sample_squares(rng, 4, 400, "jacobson_matthews", pool_size=64)
    assert 0.1 < np.mean([_klein(sq) for sq in jm]) < 0.4


def test_pool_is_cached_and_deterministic(tmp_path):
    a = gen.square_pool(6, 5, tmp_path)
    files = list((tmp_path / "latin").glob("*.npy"))
    assert len(files) == 1
    gen._pool_memory.pop((6, 5))
    b = gen.square_pool(6, 5, tmp_path)  # read back from disk
    assert (a == b).all()
    gen._pool_memory.pop((6, 5))
    files[0].unlink()
    c = gen.square_pool(6, 5, None)  # made again from scratch: the same pool
    assert (a == c).all()
