"""Gradient accumulation over k micro-batches equals one batch k times larger.

Two ways: the step's own functions (micro_step, optimizer_step) on the same tensors,
and two whole runs, batch 16 x accumulate 2 against batch 32 x accumulate 1, served
identical samples. SGD, not AdamW, for the whole runs: Adam is nearly blind to the
scale of the gradient, so it would not notice a missing 1/k.
"""

import torch

from specrun.components.builtin import RuleClassification
from specrun.engine.step import micro_step, optimizer_step, unscale_and_clip
from specrun.engine.readout import Readout

from .conftest import csv_rows, make_run, params_copy, run_inproc, write_spec

SPEC = """
spec acc
seed 11
task rule_classification {{ features 8; classes 3 }}
model mlp {{ width 32; depth 2; dropout 0.0 }}
loss cross_entropy
optimizer {optimizer}
batch {batch}
accumulate {accumulate}
max_steps 6
{clip}
log {{ every 1 step }}
"""


def _spec(batch, accumulate, optimizer="adamw { lr 0.01 }", clip="clip_grad_norm 1.0"):
    return SPEC.format(batch=batch, accumulate=accumulate, optimizer=optimizer, clip=clip)


def _data(n=32, seed=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_micro_steps_sum_to_the_large_batch_gradient(tmp_path):
    small = make_run(tmp_path, _spec(16, 2), "small.train")
    large = make_run(tmp_path, _spec(32, 1), "large.train")
    for name, p in small.model.state_dict().items():  # same seed: same initial weights
        assert torch.equal(p, large.model.state_dict()[name])
    x, y = _data()

    losses, accuracies = [], []
    for half in (slice(0, 16), slice(16, 32)):
        loss, metrics = micro_step(small, {"inputs": x[half], "targets": y[half]}, 1.0 / small.plan.accumulate)
        losses.append(loss)
        accuracies.append(metrics["accuracy"])
    big_loss, big_metrics = micro_step(large, {"inputs": x, "targets": y}, 1.0)

    torch.testing.assert_close(torch.stack(losses).mean(), big_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.stack(accuracies).mean(), big_metrics["accuracy"])
    grads_small = {n: p.grad.clone() for n, p in small.model.named_parameters()}
    grads_large = {n: p.grad.clone() for n, p in large.model.named_parameters()}
    for n in grads_small:
        torch.testing.assert_close(grads_small[n], grads_large[n], rtol=1e-5, atol=1e-7)
    assert any(g.abs().sum() > 0 for g in grads_large.values())

    clip = small.plan.settings["clip_grad_norm"]
    norm_s, norm_l = unscale_and_clip(small, clip), unscale_and_clip(large, clip)
    flags = [Readout(n.device).nonfinite(n, n) for n in (norm_s, norm_l)]
    optimizer_step(small, flags[0])
    optimizer_step(large, flags[1])
    assert not any(flags)
    torch.testing.assert_close(norm_s, norm_l, rtol=1e-5, atol=1e-7)
    after_s, after_l = params_copy(small.model), params_copy(large.model)
    for n in after_s:
        torch.testing.assert_close(after_s[n], after_l[n], rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in small.model.parameters())  # zero_grad(set_to_none=True)


def _pool(monkeypatch, total=6 * 32):
    """Serve sample i of the training stream from one fixed pool, whatever the micro-batch size."""
    x, y = _data(total, seed=9)

    def batch(self, stream, index):
        b = self.ctx.batch_size
        return {"inputs": x[index * b:(index + 1) * b].clone(), "targets": y[index * b:(index + 1) * b].clone()}

    monkeypatch.setattr(RuleClassification, "_batch", batch)


def test_whole_runs_agree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _pool(monkeypatch)
    finals = {}
    losses = {}
    for batch, accumulate in ((16, 2), (32, 1), (8, 4)):
        spec = write_spec(tmp_path, _spec(batch, accumulate, "sgd { lr 0.5 }", ""), f"acc{accumulate}.train")
        run_dir = tmp_path / f"run{accumulate}"
        out = run_inproc(spec, run_dir)
        assert out.code == 0, out.message
        finals[accumulate] = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]
        _, rows = csv_rows(run_dir / "metrics.csv")
        assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
        losses[accumulate] = [float(r["train.loss"]) for r in rows]
    for k in (2, 4):
        for name, w in finals[1].items():
            torch.testing.assert_close(finals[k][name], w, rtol=1e-4, atol=1e-5, msg=f"accumulate {k}: {name}")
        for a, b in zip(losses[k], losses[1]):
            assert abs(a - b) <= 1e-4 * max(1.0, abs(b))
    first = {n: w for n, w in finals[1].items()}
    # the runs trained: weights moved away from the initial ones by more than the tolerance
    init = make_run(tmp_path, _spec(32, 1, "sgd { lr 0.5 }", ""), "init.train").model.state_dict()
    assert max((first[n] - init[n]).abs().max().item() for n in init) > 1e-2
