"""The step's numbers stay on the device until something reads them.

Each step leaves its loss, gradient norm and skip flag (and the task's metrics on the
steps that compute them) here as device tensors. ``read`` brings every pending step to
the host in one transfer, and across ranks in one all-reduce, at the steps where
something is decided: a log row, a validation, a checkpoint, a gate that reads a train
series, the end. Between those steps the loop never waits for the device.

The non-finite check is on the device too: ``nonfinite`` is 1.0 when the step's loss or
gradient norm is NaN or infinite, and an optimizer that takes PyTorch's ``found_inf``
(the fused Adam/AdamW/SGD kernels) skips its update on the device by itself.
"""

from __future__ import annotations

import math

import torch

SKIP = "_skip"  # the key of the non-finite flag among a step's pending values


class Readout:
    # Devices whose tensors live in host memory: reading a flag there waits for nothing (no
    # queue of kernels to drain) and costs less than handing it to the optimizer's kernels.
    free_reads = ("cpu",)

    def __init__(self, device: torch.device, alone: bool = True):
        self.pending: list[tuple[int, float, list[str], list[torch.Tensor]]] = []  # step, lr, names, values
        self._one = torch.ones((), device=device)
        self.on_host = device.type in self.free_reads
        # One process on a host device: the flag is read, not computed. Two reads cost less than
        # a kernel and a fresh tensor a step (~15 us in the loop on a small model), and the flag
        # is one of two constant tensors. Across ranks each step's flag is all-reduced in place:
        # it must be its own tensor.
        self._host_flags = (torch.zeros(()), torch.ones(())) if self.on_host and alone else None
        self._read: dict[int, float] = {}  # id of a tensor nonfinite() read -> its value, until add()

    def nonfinite(self, loss: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        """1.0 (float, on the device) if the loss or the gradient norm is NaN or infinite, else 0.0.

        GradScaler's own check: one kernel for both values, writing a fresh flag. It also
        multiplies them by one, which leaves every value (NaN and inf included) as it was.
        Alone on a host device: the two values read, and a constant flag (never to be written).
        """
        if self._host_flags is not None:
            loss_v, norm_v = loss.item(), norm.item()
            skip = not (math.isfinite(loss_v) and math.isfinite(norm_v))
            flag = self._host_flags[skip]
            self._read = {id(loss): loss_v, id(norm): norm_v, id(flag): float(skip)}  # for add(): no second read
            return flag
        found = torch.zeros((), device=self._one.device)
        torch._amp_foreach_non_finite_check_and_unscale_([loss.float(), norm.float()], found, self._one)
        return found

    def add(self, step: int, lr: float, values: dict[str, torch.Tensor]) -> None:
        numbers = list(values.values())
        if self._read:  # alone on the CPU: the values nonfinite() has just read are kept as numbers
            numbers = [self._read.get(id(v), v) for v in numbers]
            self._read = {}
        self.pending.append((step, lr, list(values), numbers))

    def __len__(self) -> int:
        return len(self.pending)

    def read(self, dist=None) -> list[tuple[int, float, dict[str, float]]]:
        """Every pending step's numbers on the host, oldest first (means across ranks), and clear."""
        if not self.pending:
            return []
        values = [v for _, _, _, step_values in self.pending for v in step_values]
        tensors = [v for v in values if isinstance(v, torch.Tensor)]  # all of them, but alone on the CPU
        if tensors:
            if not all(v.dtype == torch.float32 and v.dim() == 0 for v in tensors):  # a task's own dtype or shape
                tensors = [v.detach().reshape(()).float() for v in tensors]
            with torch.no_grad():
                flat = torch.stack(tensors)  # one op, not three per value: ~1 us a step instead of ~9
            if dist is not None:
                flat = dist.mean_tensor(flat)  # the skip flags agree already: their mean is the flag
            read = iter(flat.tolist())  # the one device->host transfer
            values = [next(read) if isinstance(v, torch.Tensor) else v for v in values]
        numbers = values
        out, at = [], 0
        for step, lr, names, values in self.pending:
            out.append((step, lr, dict(zip(names, numbers[at:at + len(values)]))))
            at += len(values)
        self.pending = []
        return out
