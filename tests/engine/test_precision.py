"""What precision a run gets on each kind of device (the device objects need no hardware)."""

from dataclasses import replace

import pytest
import torch

from specrun.engine.device import Unsupported, setup_precision
from specrun.sections import PrecisionPolicy

FP16 = PrecisionPolicy(type="fp16", loss_scale="dynamic")


def test_fp16_on_a_cpu_falls_back_to_fp32_and_says_so():
    p = setup_precision(FP16, torch.device("cpu"))
    assert (p.compute, p.scaler) == ("fp32", None)
    assert p.notes == ["fp16 autocast needs a CUDA or MPS device; this run computes in fp32 on cpu"]


def test_fp16_on_a_cpu_with_policy_error_stops():
    with pytest.raises(Unsupported, match="precision.on_unsupported is error"):
        setup_precision(replace(FP16, on_unsupported="error"), torch.device("cpu"))


@pytest.mark.skipif(not torch.amp.is_autocast_available("mps"), reason="this torch has no MPS autocast")
def test_fp16_on_apple_mps_keeps_fp16_with_a_grad_scaler_for_mps():
    """The sha256 document's machine: fp16 autocast and GradScaler on MPS (torch >= 2.6)."""
    p = setup_precision(FP16, torch.device("mps"))
    assert p.compute == "fp16" and p.notes == []
    assert isinstance(p.scaler, torch.amp.GradScaler) and p.scaler._device == "mps"


def test_bf16_weights_say_what_they_cost():
    p = setup_precision(PrecisionPolicy(type="bf16", weights="bf16"), torch.device("cpu"))
    assert p.compute == "bf16" and any("no fp32 master copy" in n for n in p.notes)
