"""util/prelu.py (PReLU with a hand-written backward) and the TCN's channel-last depthwise conv
(speaker_extraction/models/tcn.py), each against torch's own op.

PReLU: outputs and input gradients bit-identical to ``F.prelu`` (the backward is built so that every
element is the same product); the slope gradient is the same sum in another order (1e-6 relative).
Depthwise conv: against ``nn.Conv1d(groups=C)`` in float64, outputs and all three gradients to 1e-12.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from speaker_extraction.models.tcn import depthwise_conv_cl
from util.prelu import prelu


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prelu_matches_torch_bit_for_bit_and_slope_gradient_to_rounding(dtype):
    torch.manual_seed(0)
    x = torch.randn(3, 40, 16).to(dtype)
    x[0, 0, :4] = 0.0  # x == 0 takes the slope side in torch's backward
    upstream = torch.randn(3, 40, 16).to(dtype)
    slope = torch.tensor([0.3])
    results = []
    for fn in (lambda a, s: F.prelu(a, s.to(a.dtype)), prelu):
        a, s = x.clone().requires_grad_(), slope.clone().requires_grad_()
        out = fn(a, s)
        out.backward(upstream)
        results.append((out, a.grad, s.grad))
    (ref_out, ref_gx, _), (out, gx, gs) = results
    assert out.dtype == dtype and gx.dtype == dtype and gs.dtype == torch.float32
    assert torch.equal(out, ref_out)
    assert torch.equal(gx, ref_gx)
    # d out / d slope = x where x <= 0: the sum, worked out here in float64
    expected = float((upstream.double() * x.double() * (x <= 0)).sum())
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: products and sum rounded to 8 bits
    assert abs(float(gs) - expected) <= tol * abs(expected)


def test_prelu_with_per_channel_slopes_is_torch_prelu():
    x = torch.randn(2, 5, 7)
    slope = torch.rand(5)
    assert torch.equal(prelu(x, slope), F.prelu(x, slope))


@pytest.mark.parametrize("dilation, kernel, frames", [(1, 3, 20), (4, 3, 20), (16, 3, 20), (32, 3, 20), (2, 5, 9)])
def test_depthwise_conv_cl_matches_conv1d_outputs_and_gradients(dilation, kernel, frames):
    torch.manual_seed(1)
    channels = 6
    conv = nn.Conv1d(channels, channels, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2,
                     groups=channels).double()
    x = torch.randn(2, frames, channels, dtype=torch.float64, requires_grad=True)  # (batch, frames, C)
    upstream = torch.randn(2, frames, channels, dtype=torch.float64)
    ref = conv(x.transpose(1, 2)).transpose(1, 2)
    ref_grads = torch.autograd.grad(ref, (x, conv.weight, conv.bias), upstream)
    out = depthwise_conv_cl(x, conv)
    grads = torch.autograd.grad(out, (x, conv.weight, conv.bias), upstream)
    assert out.shape == (2, frames, channels)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
