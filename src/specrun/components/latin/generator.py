"""Random Latin squares, the three value modes, the shared token space, and an exact checker.

Latin squares
-------------
A square of order ``n`` is an ``n x n`` array of symbol indices ``0..n-1`` with every
symbol once per row and once per column. Two generators:

``cyclic``
    ``L[r, c] = (r + c) mod n`` followed by a random isotopy (row, column and symbol
    permutations) and a random conjugate (one of the six role permutations of
    (row, column, symbol)). Fast, but it only ever reaches the *main class* of the
    cyclic group Z_n: for n = 4 it never produces the Klein-four square (a quarter of
    all order-4 squares), for n >= 6 it misses almost every square there is, and every
    square it makes is a group table in disguise (for even n none has a transversal;
    every row pair differs by a permutation whose cycles all have the same length).

``jacobson_matthews`` (default)
    A pool of squares per order drawn from the Jacobson–Matthews Markov chain
    (J. Combin. Des. 4 (1996) 405-437), whose stationary distribution is uniform on
    Latin squares, run vectorised over the whole pool at once, then the same random
    isotopy + conjugate per sample (both keep the uniform distribution uniform). The
    chain moves through "improper" states; stopping at "the first proper state after
    step T" is biased (we measured 8 % Klein-four squares at n = 4 instead of 25 %), so
    each chain instead stops at its ``k``-th *proper visit*: the proper states a chain
    visits form the trace chain on proper squares, whose stationary distribution is the
    uniform one. Checked: n = 4 gives all 576 squares evenly (Klein share 0.248), n = 5
    gives the Z5 class at 0.107 (exact: 17280/161280 = 0.107).

Modes and tokens
----------------
``standard`` uses the values 1..n, ``zero_inclusive`` 0..n-1, ``negative`` the values
symmetric around 0: -(n-1)/2..(n-1)/2 for odd n and, for even n (the design document
is silent), -n/2..-1, 1..n/2 -- zero is left out so that the alphabet stays symmetric
and has n members. Every value of every mode for n <= 16 lies in -8..16, so one token
space serves them all: ``PAD = 0``, ``MASK = 1`` (a blank cell), value ``v`` is token
``v + VALUE_OFFSET`` (-8 -> 2, 16 -> 26): 27 tokens.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

MAX_SIZE = 16
MIN_SIZE = 3
MODES = ("standard", "zero_inclusive", "negative")
MODE_INDEX = {name: i for i, name in enumerate(MODES)}

PAD = 0
MASK = 1
VALUE_MIN = -8
VALUE_MAX = 16
VALUE_OFFSET = 2 - VALUE_MIN  # value v -> token v + 10
VOCAB_SIZE = VALUE_MAX + VALUE_OFFSET + 1  # 27
IGNORE = -100


def mode_values(mode: str | int, n: int) -> list[int]:
    """The alphabet of ``mode`` for a square of order ``n``, in symbol-index order."""
    name = MODES[mode] if isinstance(mode, (int, np.integer)) else normalise_mode(mode)
    if name == "standard":
        return list(range(1, n + 1))
    if name == "zero_inclusive":
        return list(range(n))
    if n % 2:
        h = (n - 1) // 2
        return list(range(-h, h + 1))
    h = n // 2
    return list(range(-h, 0)) + list(range(1, h + 1))


def normalise_mode(name: str) -> str:
    key = str(name).strip().lower()
    if key not in MODE_INDEX:
        raise ValueError(f"unknown latin mode {name!r}; expected one of {', '.join(MODES)}")
    return key


def value_to_token(v: int) -> int:
    return int(v) + VALUE_OFFSET


def token_to_value(t: int) -> int | None:
    return int(t) - VALUE_OFFSET if 2 <= int(t) < VOCAB_SIZE else None


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """SYMBOL_TOKENS[mode, n, k] = token of symbol k (PAD for k >= n);
    TOKEN_SYMBOL[mode, n, token] = symbol index, or -1 outside the alphabet."""
    sym_tok = np.full((len(MODES), MAX_SIZE + 1, MAX_SIZE), PAD, np.int64)
    tok_sym = np.full((len(MODES), MAX_SIZE + 1, VOCAB_SIZE), -1, np.int64)
    for m in range(len(MODES)):
        for n in range(1, MAX_SIZE + 1):
            for k, v in enumerate(mode_values(m, n)):
                t = value_to_token(v)
                sym_tok[m, n, k] = t
                tok_sym[m, n, t] = k
    return sym_tok, tok_sym


SYMBOL_TOKENS, TOKEN_SYMBOL = _tables()


# ---------------------------------------------------------------- squares


def cyclic_square(n: int) -> np.ndarray:
    r = np.arange(n)
    return (r[:, None] + r[None, :]) % n


def is_latin(square: np.ndarray) -> bool:
    """Plain reference check on symbol indices 0..n-1 (used by tests)."""
    sq = np.asarray(square)
    n = sq.shape[0]
    if sq.shape != (n, n) or sq.min() < 0 or sq.max() >= n:
        return False
    want = np.arange(n)
    return all((np.sort(sq, axis=1) == want).all(axis=1)) and all((np.sort(sq, axis=0).T == want).all(axis=1))


def jacobson_matthews(rng: np.random.Generator, n: int, count: int, visits: int | None = None) -> np.ndarray:
    """``count`` Latin squares of order ``n`` from independent Jacobson–Matthews chains.

    All chains run at once on a flat int8 incidence cube ``M[b, r, c, s]``. A proper
    state is a 0/1 cube with one 1 on every line; an improper one has a single -1 cell
    whose three lines hold two 1s each. Each chain starts at the cyclic square and stops
    at its ``visits``-th proper state (default ``4 n``; the share of row pairs whose
    permutation is one n-cycle, 0.57 for Z8 and 0.34 for random squares, settles after
    about n/2 visits).
    """
    if visits is None:
        visits = 4 * n
    n2, n3 = n * n, n ** 3
    ar = np.arange(n)
    m = np.zeros((count, n3), np.int8)
    m[:, (ar[:, None] * n2 + ar[None, :] * n + cyclic_square(n)).ravel()] = 1
    m = m.ravel()
    improper = np.zeros(count, bool)
    bad_cell = np.zeros(count, np.int64)  # flat index of the -1 cell within its cube
    proper_visits = np.zeros(count, np.int64)
    active = np.arange(count)

    def pick(index: np.ndarray, value: int) -> np.ndarray:
        """Uniform choice among the positions of each line that hold ``value``."""
        line = m[index]
        score = rng.random(line.shape)
        score[line != value] = -1.0
        return score.argmax(1)

    while active.size:
        k = active.size
        base = active * n3
        was_improper = improper[active]
        # proper: a uniform 0-cell (uniform (r, c), then a uniform absent symbol)
        rc = rng.integers(0, n2, k) * n
        cell = rc + pick((base + rc)[:, None] + ar, 0)
        cell = np.where(was_improper, bad_cell[active], cell)
        r0, c0, s0 = cell // n2, (cell // n) % n, cell % n
        r1 = pick((base + c0 * n + s0)[:, None] + ar * n2, 1)
        c1 = pick((base + r0 * n2 + s0)[:, None] + ar * n, 1)
        s1 = pick((base + r0 * n2 + c0 * n)[:, None] + ar, 1)
        R0, R1, C0, C1 = r0 * n2, r1 * n2, c0 * n, c1 * n
        m[base + R0 + C0 + s0] += 1
        m[base + R0 + C1 + s1] += 1
        m[base + R1 + C0 + s1] += 1
        m[base + R1 + C1 + s0] += 1
        m[base + R1 + C0 + s0] -= 1
        m[base + R0 + C1 + s0] -= 1
        m[base + R0 + C0 + s1] -= 1
        last = base + R1 + C1 + s1
        m[last] -= 1
        now_improper = m[last] < 0
        improper[active] = now_improper
        bad_cell[active] = last - base
        proper_visits[active] += ~now_improper
        done = ~now_improper & (proper_visits[active] >= visits)
        active = active[~done]
    return m.reshape(count, n, n, n).argmax(3).astype(np.int8)


_CONJUGATES = np.array([[0, 1, 2], [1, 0, 2], [0, 2, 1], [2, 1, 0], [1, 2, 0], [2, 0, 1]])


def random_isotopes(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    """Apply a uniform conjugate and a uniform isotopy to each square of ``base`` [g, n, n]."""
    g, n, _ = base.shape
    b = np.arange(g)
    idx = np.arange(n)
    rows = np.broadcast_to(idx[:, None], (n, n)).ravel()
    cols = np.broadcast_to(idx[None, :], (n, n)).ravel()
    triples = np.stack([np.broadcast_to(rows, (g, n * n)), np.broadcast_to(cols, (g, n * n)),
                        base.reshape(g, n * n).astype(np.int64)], axis=1)  # [g, 3, n*n]
    roles = _CONJUGATES[rng.integers(0, len(_CONJUGATES), g)]
    t = np.take_along_axis(triples, roles[:, :, None], axis=1)
    conj = np.empty((g, n, n), np.int64)
    conj[b[:, None], t[:, 0], t[:, 1]] = t[:, 2]
    pr = np.argsort(rng.random((g, n)), axis=1)
    pc = np.argsort(rng.random((g, n)), axis=1)
    ps = np.argsort(rng.random((g, n)), axis=1)
    out = conj[b[:, None, None], pr[:, :, None], pc[:, None, :]]
    return ps[b[:, None, None], out]


# ---------------------------------------------------------------- the pool

_POOL_SEED = 0x1A71  # the pool is a constant of (order, pool size): a run's seed picks from it
_pool_lock = threading.Lock()
_pool_memory: dict[tuple[int, int], np.ndarray] = {}


def square_pool(n: int, size: int, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """``size`` Jacobson–Matthews squares of order ``n`` [size, n, n] int8, made once.

    Kept in memory and, when ``cache_dir`` is given, in ``<cache_dir>/latin/`` (written
    atomically), so a second run starts at once. The pool is a pure function of (n, size).
    """
    key = (n, size)
    with _pool_lock:
        if key in _pool_memory:
            return _pool_memory[key]
        path = None
        if cache_dir is not None:
            path = Path(cache_dir) / "latin" / f"jm_pool_n{n}_k{size}_s{_POOL_SEED}.npy"
            if path.exists():
                try:
                    pool = np.load(path)
                    if pool.shape == (size, n, n) and all(is_latin(p) for p in pool[:4]):
                        _pool_memory[key] = pool
                        return pool
                except (OSError, ValueError):
                    pass
        rng = np.random.default_rng([_POOL_SEED, n, size])
        pool = jacobson_matthews(rng, n, size)
        _pool_memory[key] = pool
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
                np.save(tmp, pool)
                os.replace(tmp, path)
            except OSError:
                pass
        return pool


def sample_squares(rng: np.random.Generator, n: int, count: int, generator: str = "jacobson_matthews",
                   pool_size: int = 512, cache_dir=None) -> np.ndarray:
    """``count`` random Latin squares of order ``n`` (symbol indices) [count, n, n] int64."""
    if generator == "cyclic" or n <= 3:  # every square of order <= 3 is isotopic to Z_n
        base = np.broadcast_to(cyclic_square(n), (count, n, n))
    else:
        pool = square_pool(n, pool_size, cache_dir)
        base = pool[rng.integers(0, len(pool), count)]
    return random_isotopes(rng, base)


# ---------------------------------------------------------------- batches


def make_grids(rng: np.random.Generator, batch: int, sizes: tuple[int, int], modes: list[str],
               fill: tuple[float, float], generator: str = "jacobson_matthews", pool_size: int = 512,
               pad: str = "batch", cache_dir=None) -> dict[str, np.ndarray]:
    """One batch as numpy arrays; cell (r, c) of a grid padded to side L sits at r * L + c.

    Keys: ``inputs`` (value tokens at revealed cells, MASK at blanks, PAD outside the
    grid), ``targets`` (solution token at blanks, -100 at givens and padding),
    ``solution`` (solution tokens, PAD outside), ``cell_mask`` (inside the n x n grid),
    ``n`` and ``mode`` (per grid).
    """
    lo, hi = sizes
    n = rng.integers(lo, hi + 1, batch)
    mode_ids = np.array([MODE_INDEX[m] for m in modes])
    mode = mode_ids[rng.integers(0, len(mode_ids), batch)]
    frac = rng.uniform(fill[0], fill[1], batch) if fill[1] > fill[0] else np.full(batch, float(fill[0]))
    side = MAX_SIZE if pad == "full" else int(n.max())

    sym = np.full((batch, side, side), -1, np.int64)
    for size in np.unique(n):
        where = np.flatnonzero(n == size)
        sym[where, :size, :size] = sample_squares(rng, int(size), where.size, generator, pool_size, cache_dir)
    inside = sym >= 0
    solution = SYMBOL_TOKENS[mode[:, None, None], n[:, None, None], np.maximum(sym, 0)]
    solution = np.where(inside, solution, PAD).reshape(batch, side * side)
    inside = inside.reshape(batch, side * side)

    # revealed count: the sampled fraction of n*n, kept inside [fill_lo, fill_hi] * n*n where
    # an integer fits, and at least one blank per grid (a grid with no blank has no target)
    cells = n * n
    k = np.rint(frac * cells).astype(np.int64)
    k_lo = np.ceil(fill[0] * cells - 1e-9).astype(np.int64)
    k_hi = np.floor(fill[1] * cells + 1e-9).astype(np.int64)
    fits = k_lo <= k_hi
    k = np.where(fits, np.clip(k, k_lo, k_hi), k)
    k = np.clip(k, 0, cells - 1)
    keys = rng.random((batch, side * side))
    keys[~inside] = 2.0
    order = np.argsort(keys, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(side * side)[None, :].repeat(batch, 0), axis=1)
    revealed = rank < k[:, None]

    inputs = np.where(revealed, solution, np.where(inside, MASK, PAD))
    targets = np.where(inside & ~revealed, solution, IGNORE)
    return {"inputs": inputs, "targets": targets, "solution": solution, "cell_mask": inside,
            "n": n.astype(np.int64), "mode": mode.astype(np.int64)}
