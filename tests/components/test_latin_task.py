"""Task latin_grid: determinism, fill ratios, curriculum changes, padding, and the exact checker."""

from __future__ import annotations

import itertools

import pytest
import torch

from specrun.components.api import Context
from specrun.components.latin import generator as gen
from specrun.components.latin.task import (
    build_task,
    check_grids,
    copy_baseline_valid_rate,
    produced_grid,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ctx(tmp_path, batch=16, seed=0, rank=0):
    return Context(seed=seed, device=torch.device("cpu"), batch_size=batch, rank=rank,
                   cache_dir=str(tmp_path))


def _task(tmp_path, batch=16, seed=0, rank=0, **params):
    params.setdefault("pool_size", 16)
    return build_task(params, _ctx(tmp_path, batch, seed, rank))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _sides(batch):
    return int(round(batch["inputs"].shape[1] ** 0.5))


def test_batch_i_is_a_pure_function_of_seed_rank_index_params(tmp_path):
    t1 = _task(tmp_path, sizes=[3, 8], modes=["standard", "negative"], fill=[0.2, 0.6])
    t2 = _task(tmp_path, sizes=[3, 8], modes=["standard", "negative"], fill=[0.2, 0.6])
    first = list(itertools.islice(t1.train_batches(0), 6))
    resumed = list(itertools.islice(t2.train_batches(3), 3))
    for a, b in zip(first[3:], resumed):
        assert _same(a, b)
    assert not _same(first[0], first[1])
    other_rank = next(_task(tmp_path, rank=1, sizes=[3, 8], modes=["standard", "negative"],
                            fill=[0.2, 0.6]).train_batches(0))
    other_seed = next(_task(tmp_path, seed=1, sizes=[3, 8], modes=["standard", "negative"],
                            fill=[0.2, 0.6]).train_batches(0))
    assert not _same(first[0], other_rank) and not _same(first[0], other_seed)


def test_val_batches_repeat_and_differ_from_train(tmp_path):
    task = _task(tmp_path, sizes=[3, 6])
    a, b = list(task.val_batches(3)), list(task.val_batches(3))
    assert all(_same(x, y) for x, y in zip(a, b))
    assert not _same(a[0], next(task.train_batches(0)))


def test_layout_targets_and_padding(tmp_path):
    task = _task(tmp_path, batch=32, sizes=[3, 7], modes=["standard", "zero_inclusive", "negative"],
                 fill=[0.3, 0.6])
    batch = next(task.train_batches(0))
    side = _sides(batch)
    assert side == int(batch["n"].max())
    inputs, targets, solution, mask = batch["inputs"], batch["targets"], batch["solution"], batch["cell_mask"]
    idx = torch.arange(side)
    inside = ((idx[None, :, None] < batch["n"][:, None, None]) & (idx[None, None, :] < batch["n"][:, None, None]))
    assert torch.equal(mask, inside.reshape(mask.shape))
    assert (inputs[~mask] == gen.PAD).all() and (targets[~mask] == gen.IGNORE).all()
    blank = inputs == gen.MASK
    assert torch.equal(blank, mask & (targets != gen.IGNORE))  # targets at the blanks only
    assert torch.equal(targets[blank], solution[blank])
    given = mask & ~blank
    assert torch.equal(inputs[given], solution[given])
    assert check_grids(solution, inputs, batch["n"], batch["mode"], mask).all()
    for key in ("inputs", "targets", "solution", "n", "mode"):
        assert batch[key].dtype == torch.long
    full = next(_task(tmp_path, pad="full", sizes=[3, 5]).train_batches(0))
    assert full["inputs"].shape[1] == 256


def test_fill_ratio_respected(tmp_path):
    for lo, hi in [(0.5, 0.7), (0.1, 0.3), (0.0, 0.1), (0.9, 1.0)]:
        task = _task(tmp_path, batch=64, sizes=[3, 12], fill=[lo, hi])
        for batch in itertools.islice(task.train_batches(0), 3):
            cells = (batch["n"] ** 2).float()
            revealed = (batch["cell_mask"] & (batch["inputs"] != gen.MASK)).sum(1).float()
            blanks = (batch["inputs"] == gen.MASK).sum(1)
            assert (blanks >= 1).all()  # at least one target per grid
            frac = revealed / cells
            # inside [lo, hi] unless the one-blank rule forbids it (3x3 at fill 0.9 -> 8 of 9)
            assert ((frac >= lo - 1e-9) | (blanks == 1)).all(), (lo, frac.min())
            assert (frac <= hi + 1e-9).all(), (hi, frac.max())
            if hi - lo >= 0.2:  # the draws spread over the range
                assert frac.max() - frac.min() > (hi - lo) / 3


def test_set_params_changes_sizes_modes_fill_with_no_stale_batch(tmp_path):
    task = _task(tmp_path, batch=64, sizes=[3, 4], modes=["standard"], fill=[0.5, 0.7])
    stream = task.train_batches(0)
    before = [next(stream) for _ in range(3)]
    assert all(int(b["n"].max()) <= 4 and (b["mode"] == 0).all() for b in before)
    task.set_params({"sizes": [9, 10], "modes": ["negative"], "fill": [0.1, 0.2]})
    after = next(stream)  # the very next batch of the same iterator
    assert int(after["n"].min()) >= 9 and (after["mode"] == 2).all()
    revealed = (after["cell_mask"] & (after["inputs"] != gen.MASK)).sum(1).float() / after["n"] ** 2
    assert (revealed <= 0.2 + 1e-9).all()
    # partial updates keep the other settings; names are case-insensitive
    task.set_params({"modes": ["ZERO_INCLUSIVE"]})
    assert task.params["sizes"] == (9, 10) and task.params["modes"] == ["zero_inclusive"]
    # the batch at an index depends on the params now in force
    again = _task(tmp_path, batch=64, sizes=[9, 10], modes=["negative"], fill=[0.1, 0.2])
    assert _same(next(again.train_batches(3)), after)


def test_bad_params_are_refused(tmp_path):
    for bad in ({"sizes": [2, 5]}, {"sizes": [5, 17]}, {"sizes": [6, 4]}, {"fill": [0.5, 1.2]},
                {"modes": ["positive"]}, {"modes": []}):
        with pytest.raises(ValueError):
            _task(tmp_path, **bad)


def test_range_forms_accepted(tmp_path):
    from specrun.spec.values import IntRange

    assert _task(tmp_path, sizes=IntRange(4, 6)).params["sizes"] == (4, 6)
    assert _task(tmp_path, sizes=[5, 5]).params["sizes"] == (5, 5)
    assert _task(tmp_path, sizes=7).params["sizes"] == (7, 7)
    assert _task(tmp_path, fill=[0.25, 0.25]).params["fill"] == (0.25, 0.25)


def test_epoch_and_model_info(tmp_path):
    task = build_task({"epoch_size": 1000}, _ctx(tmp_path, batch=32))
    assert task.batches_per_epoch() == 31
    info = task.model_info()
    assert info["vocab_size"] == gen.VOCAB_SIZE and info["max_size"] == 16 and info["num_modes"] == 3
    assert task.metric_names == ("cell_accuracy", "valid_grid_rate")
    task.close()


# ---- the exact checker on hand-made grids --------------------------------------------------


def _grid(values, mode="standard", side=None):
    """A hand-made grid of values (None = blank) -> (tokens [1, side*side], n [1], mode [1])."""
    n = len(values)
    side = side or n
    tok = torch.full((side, side), gen.PAD, dtype=torch.long)
    for r, row in enumerate(values):
        for c, v in enumerate(row):
            tok[r, c] = gen.MASK if v is None else gen.value_to_token(v)
    return tok.reshape(1, -1), torch.tensor([n]), torch.tensor([gen.MODE_INDEX[mode]])


GOOD = [[1, 2, 3], [2, 3, 1], [3, 1, 2]]


@pytest.mark.parametrize("side", [3, 5])
def test_checker_accepts_a_valid_grid_and_rejects_each_flaw(side):
    givens, n, mode = _grid([[1, None, None], [None, 3, None], [None, None, None]], side=side)

    def ok(values, mode_name="standard", inputs=givens):
        grid, _, m = _grid(values, mode_name, side)
        return bool(check_grids(grid, inputs, n, m)[0])

    assert ok(GOOD)
    assert not ok([[1, 2, 3], [2, 3, 1], [2, 1, 3]])  # duplicates in columns 0 and 2
    assert not ok([[1, 2, 2], [2, 3, 1], [3, 1, 2]])  # duplicate in row 0 (and column 2)
    assert not ok([[1, 3, 2], [3, 2, 1], [2, 1, 3]])  # a Latin square, but (1,1) contradicts the given 3
    assert ok([[1, 3, 2], [3, 2, 1], [2, 1, 3]], inputs=_grid([[1] + [None] * 2] + [[None] * 3] * 2, side=side)[0])
    assert not ok([[0, 1, 2], [1, 2, 0], [2, 0, 1]])  # 0 is not a symbol of standard mode
    assert not ok([[1, 2, 4], [2, 4, 1], [4, 1, 2]])  # 4 is outside 1..3
    grid, _, _ = _grid(GOOD, side=side)
    grid[0, 4 if side == 3 else 6] = gen.MASK  # a blank left unfilled
    assert not bool(check_grids(grid, givens, n, mode)[0])
    # row-only check would miss this one: rows fine, columns all repeat
    assert not ok([[1, 2, 3], [1, 2, 3], [1, 2, 3]], inputs=_grid([[None] * 3] * 3, side=side)[0])


def test_checker_modes_and_padding_is_ignored():
    zero = [[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]]
    neg = [[-2, -1, 1, 2], [-1, -2, 2, 1], [1, 2, -2, -1], [2, 1, -1, -2]]
    neg_with_zero = [[-2, -1, 0, 2], [-1, -2, 2, 0], [0, 2, -2, -1], [2, 0, -1, -2]]
    blank = [[None] * 4] * 4
    for values, mode, want in [(zero, "zero_inclusive", True), (zero, "standard", False),
                               (neg, "negative", True), (neg_with_zero, "negative", False),
                               (neg, "zero_inclusive", False)]:
        grid, n, m = _grid(values, mode, side=6)
        grid = grid.clone()
        grid.view(6, 6)[5, 5] = 7  # garbage outside the 4x4 square is ignored
        assert bool(check_grids(grid, _grid(blank, mode, 6)[0], n, m)[0]) is want, (mode, values)


def test_checker_batch_of_mixed_grids_and_metrics(tmp_path):
    task = _task(tmp_path, batch=24, sizes=[3, 6], modes=["standard", "zero_inclusive", "negative"])
    batch = next(task.train_batches(0))
    # perfect logits: the solution everywhere
    logits = torch.nn.functional.one_hot(batch["solution"], gen.VOCAB_SIZE).float()
    m = task.metrics({"logits": logits}, batch)
    assert m["cell_accuracy"].dim() == 0 and float(m["cell_accuracy"]) == 1.0
    assert float(m["valid_grid_rate"]) == 1.0
    # break one blank in the first half of the grids
    broken = batch["solution"].clone()
    for b in range(12):
        cell = int(torch.nonzero(batch["inputs"][b] == gen.MASK)[0])
        broken[b, cell] = gen.MASK if b % 2 else (broken[b, cell] - 1 if broken[b, cell] > 2 else broken[b, cell] + 1)
    m = task.metrics({"logits": torch.zeros_like(logits), "filled": broken}, batch)
    assert float(m["valid_grid_rate"]) == 0.5
    assert torch.equal(produced_grid({"logits": logits}, batch)[batch["cell_mask"]],
                       batch["solution"][batch["cell_mask"]])


def test_copy_baseline_is_low_and_deterministic(tmp_path):
    task = _task(tmp_path, batch=64, sizes=[3, 4], fill=[0.5, 0.7])
    rate = copy_baseline_valid_rate(task.val_batches(4))
    assert rate == copy_baseline_valid_rate(task.val_batches(4))
    assert 0.0 <= rate < 0.05
    full = _task(tmp_path, batch=64, sizes=[3, 3], fill=[1.0, 1.0])  # one blank per grid
    assert copy_baseline_valid_rate(full.val_batches(4)) == pytest.approx(1 / 3, abs=0.1)
