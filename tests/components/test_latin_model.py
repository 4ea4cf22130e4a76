"""Model grid_transformer: shapes over mixed sizes, padding invariance, checkpointing, the decoder."""

from __future__ import annotations

import pytest
import torch

from specrun.components.api import Context
from specrun.components.latin import generator as gen
from specrun.components.latin.model import build_model
from specrun.components.latin.task import build_task, check_grids


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ctx(tmp_path):
    return Context(seed=0, device=torch.device("cpu"), batch_size=12, cache_dir=str(tmp_path))


def _model(ctx, task, **params):
    torch.manual_seed(0)
    params = {"width": 32, "depth": 2, "heads": 4, **params}
    return build_model(params, task.model_info(), ctx)


def _take(batch, rows):
    return {k: v[rows] for k, v in batch.items()}


def test_forward_shapes_with_mixed_sizes_and_modes(ctx):
    task = build_task({"sizes": [3, 9], "modes": ["standard", "zero_inclusive", "negative"],
                       "pool_size": 8}, ctx)
    batch = next(task.train_batches(0))
    model = _model(ctx, task)
    out = model(batch)
    side = int(batch["n"].max())
    assert out["logits"].shape == (12, side * side, gen.VOCAB_SIZE)
    assert "filled" not in out  # training mode: one-shot only
    assert torch.isfinite(out["logits"]).all()  # padded query rows too (keys-only mask)
    full = build_task({"sizes": [3, 9], "pad": "full", "pool_size": 8}, ctx)
    assert model(next(full.train_batches(0)))["logits"].shape == (12, 256, gen.VOCAB_SIZE)
    metrics = task.metrics(out, batch)
    assert set(metrics) == {"cell_accuracy", "valid_grid_rate"}
    assert all(v.dim() == 0 for v in metrics.values())


def test_padding_does_not_change_a_grids_logits(ctx):
    """A grid's logits are the same alone (no padding) and padded in a batch of larger grids."""
    task = build_task({"sizes": [3, 7], "pool_size": 8}, ctx)
    model = _model(ctx, task).eval()
    model.decode_steps = 1
    batch = next(task.train_batches(0))
    side = int(batch["n"].max())
    small = int(torch.argmin(batch["n"]))
    n = int(batch["n"][small])
    assert n < side
    padded = model(batch)["logits"][small].view(side, side, -1)[:n, :n]
    alone = _take(batch, [small])
    keep = batch["cell_mask"][small].view(side, side)[:n, :n].reshape(-1)
    assert keep.all()
    alone = {k: (v.view(1, side, side)[:, :n, :n].reshape(1, n * n) if v.dim() == 2 else v)
             for k, v in alone.items()}
    single = model(alone)["logits"][0].view(n, n, -1)
    torch.testing.assert_close(padded, single, atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_equal_grads(ctx):
    task = build_task({"sizes": [3, 6], "pool_size": 8}, ctx)
    batch = next(task.train_batches(0))
    model = _model(ctx, task, depth=3)
    assert model.supports_gradient_checkpointing

    def grads(on):
        model.zero_grad(set_to_none=True)
        model.set_gradient_checkpointing(on)
        logits = model(batch)["logits"]
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    loss_off, off = grads(False)
    loss_on, on = grads(True)
    assert model.stack.gradient_checkpointing
    assert torch.equal(loss_off, loss_on)
    for name in off:
        torch.testing.assert_close(on[name], off[name], atol=1e-6, rtol=1e-5, msg=name)


def _bytes_held_for_backward(model, batch) -> int:
    """Storages autograd keeps from the forward pass for backward (bench/latin_gradckpt.py's measure):
    every tensor packed by autograd plus, with checkpointing, the block inputs it recomputes from
    (inside a non-reentrant checkpoint its own hooks replace ours, so those are counted here)."""
    seen: dict[int, int] = {}

    def keep(t):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()

    def pre_hook(module, inputs):
        if model.stack.gradient_checkpointing:
            for t in inputs:
                if isinstance(t, torch.Tensor):
                    keep(t)

    handles = [b.register_forward_pre_hook(pre_hook) for b in model.stack.blocks]
    with torch.autograd.graph.saved_tensors_hooks(lambda t: keep(t) or t, lambda t: t):
        logits = model(batch)["logits"]
    for h in handles:
        h.remove()
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten()).backward()
    return sum(seen.values())


def test_gradient_checkpointing_holds_far_less_for_backward(ctx):
    """The document's criterion: checkpointing lowers activation memory by more than 25%."""
    task = build_task({"sizes": [8, 8], "pool_size": 8}, ctx)
    batch = next(task.train_batches(0))
    model = _model(ctx, task, width=64, depth=4)
    model.set_gradient_checkpointing(False)
    off = _bytes_held_for_backward(model, batch)
    model.set_gradient_checkpointing(True)
    on = _bytes_held_for_backward(model, batch)
    assert on < 0.75 * off, (on, off)


def test_decoder_fills_every_blank_keeps_givens_and_uses_the_alphabet(ctx):
    task = build_task({"sizes": [3, 8], "modes": ["standard", "zero_inclusive", "negative"],
                       "fill": [0.0, 0.4], "pool_size": 8}, ctx)
    batch = next(task.val_batches(1))
    model = _model(ctx, task, decode_steps=4).eval()
    with torch.no_grad():
        out = model(batch)
    filled = out["filled"]
    mask = batch["cell_mask"]
    assert not (filled == gen.MASK).any()
    given = mask & (batch["inputs"] != gen.MASK)
    assert torch.equal(filled[given], batch["inputs"][given])
    assert (filled[~mask] == gen.PAD).all()
    alphabet = torch.as_tensor(gen.TOKEN_SYMBOL)[batch["mode"], batch["n"]]  # [B, V]
    assert torch.gather(alphabet >= 0, 1, filled.clamp(min=0))[mask].all()
    # an untrained model's grids are (almost surely) not all valid, but the checker runs on them
    assert check_grids(filled, batch["inputs"], batch["n"], batch["mode"], mask).dtype == torch.bool
    # the logits stay the one-shot pass, identical to a training-mode forward without dropout
    model.train()
    torch.testing.assert_close(model(batch)["logits"], out["logits"])


def test_decoder_with_a_perfect_oracle_produces_valid_grids(ctx):
    """The decoder commits cells in confidence order; with logits that know the answer it is exact."""
    task = build_task({"sizes": [4, 9], "fill": [0.0, 0.3], "pool_size": 8}, ctx)
    batch = next(task.val_batches(1))
    model = _model(ctx, task, decode_steps=5).eval()
    oracle = torch.nn.functional.one_hot(batch["solution"], gen.VOCAB_SIZE).float() * 10
    model.logits = lambda tokens, b: oracle  # type: ignore[method-assign]
    filled = model.decode(batch, None, 5)
    assert torch.equal(filled[batch["cell_mask"]], batch["solution"][batch["cell_mask"]])
    assert check_grids(filled, batch["inputs"], batch["n"], batch["mode"], batch["cell_mask"]).all()


def test_bad_width_heads_refused(ctx):
    task = build_task({"pool_size": 8}, ctx)
    with pytest.raises(ValueError):
        build_model({"width": 30, "depth": 1, "heads": 4}, task.model_info(), ctx)


def test_bf16_autocast_forward_and_relation_bias_learns(ctx):
    task = build_task({"sizes": [3, 5], "pool_size": 8}, ctx)
    batch = next(task.train_batches(0))
    model = _model(ctx, task)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(batch)["logits"]
    assert torch.isfinite(logits.float()).all()
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch["targets"].flatten())
    loss.backward()
    assert model.relation.grad is not None and model.relation.grad.abs().sum() > 0
    plain = _model(ctx, task, relation_bias=False)
    assert plain.relation is None
    assert plain(batch)["logits"].shape == logits.shape
