"""One optimizer step's arithmetic: forward/backward of a micro-batch, unscale and clip,
and the update that a non-finite step skips.

The loop (loop.py) decides when and how often these run; this module is what each does
to the model, the gradients and the optimizer. It is its own module so that the step's
numerics (accumulation, clipping, the skip without a host sync) can be tested on their
own, through these names, without running a whole loop. Nothing here waits for the
device except where a comment says why.
"""

from __future__ import annotations

import torch

from specrun.engine.setup import Run


def micro_step(run: Run, batch: dict, scale: float, with_metrics: bool = True, drop_nonfinite: bool = False):
    """Forward and backward of one micro-batch. Returns (loss, metric tensors) without syncing.

    With ``drop_nonfinite`` (nonfinite.scope micro_batch) a micro-batch whose loss is NaN
    or inf gets no backward and (None, {}) comes back: a host sync per micro-batch, the
    price of skipping one batch rather than the whole step.
    """
    with run.precision.autocast():
        outputs = run.train_model(batch)
        loss = run.loss_fn(outputs, batch)
        total = loss + outputs["aux_loss"] if "aux_loss" in outputs else loss
    if drop_nonfinite:
        finite = bool(torch.isfinite(total.detach()))  # a host sync: the price of dropping one batch alone
        if run.dist is not None:
            finite = run.dist.all_agree(finite)  # every rank drops it, or DDP's backward hangs
        if not finite:
            return None, {}
    if scale != 1.0:
        total = total * scale
    scaler = run.precision.scaler
    (scaler.scale(total) if scaler else total).backward()
    if not with_metrics:
        return loss.detach(), {}
    with torch.no_grad():
        metrics = dict(run.task.metrics(outputs, batch))
        metrics.update(outputs.get("metrics", {}))
        if "aux_loss" in outputs:
            metrics["aux_loss"] = outputs["aux_loss"].detach()
    return loss.detach(), metrics


def rescale_grads(run: Run, factor: float) -> None:
    """Multiply every gradient by ``factor``: when micro-batches were dropped, the accumulated
    gradient (a sum of 1/accumulate shares) becomes the mean over the kept ones."""
    with torch.no_grad():
        for group in run.optimizer.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.mul_(factor)


def unscale_and_clip(run: Run, clip: float | None) -> torch.Tensor:
    """Unscale (fp16) and clip; the pre-clip norm, still on the device."""
    params = [p for g in run.optimizer.param_groups for p in g["params"] if p.grad is not None]
    if run.precision.scaler is not None:
        run.precision.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf"))
    # Under FSDP the norm is a DTensor over the shards; full_tensor() is its all-reduce.
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


def skips_on_device(optimizer) -> bool:
    """PyTorch's fused Adam/AdamW/SGD/Adagrad read a ``found_inf`` flag and skip on the device."""
    return getattr(optimizer, "_step_supports_amp_scaling", False) and \
        type(optimizer).__module__.startswith("torch.optim")


def optimizer_step(run: Run, nonfinite: torch.Tensor) -> None:
    """Step unless ``nonfinite`` (a 0-dim 0/1 float tensor on the device) is set.

    Without a host sync when the optimizer skips on the device (``skips_on_device``):
    the update kernels leave weights, moments and step counts as they were. Any other
    optimizer needs the decision on the host, which costs one sync per step. On the CPU
    the flag is read on the host: nothing to wait for there, and cheaper than found_inf.
    """
    opt, scaler = run.optimizer, run.precision.scaler
    on_host = run.readout is None or run.readout.on_host
    if scaler is not None:
        # Our flag joins the scaler's (set by unscale_ in unscale_and_clip): a non-finite loss is skipped as
        # an overflow is. The scaler then skips on the device (fused) or reads the flag itself.
        for found in scaler._found_inf_per_device(opt).values():
            torch.maximum(found, nonfinite.to(found.device), out=found)
        scaler.step(opt)
        scaler.update()
    elif not on_host and skips_on_device(opt):
        opt.grad_scale, opt.found_inf = None, nonfinite
        try:
            opt.step()
        finally:
            del opt.grad_scale, opt.found_inf
    elif not nonfinite.item():  # on the CPU, or an optimizer that cannot skip on the device
        opt.step()
    opt.zero_grad(set_to_none=True)
