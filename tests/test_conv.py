"""util/conv.py (the GEMM conv path), the models' ``conv_impl`` switch and util.trainer's precision hooks.

Tolerances: fp32 GEMM path vs nn.Conv1d 1e-5 relative to the largest value (same sums, another order);
bf16 3e-2 (bf16 keeps 8 significant bits). Gradients are compared relative to the largest gradient of
the whole model (a few biases have gradients that are pure rounding noise: attention key biases do not
change a softmax).
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from util.conv import channel_first, conv1d_tm, conv_impl, time_major, weight_taps
from util.errors import EEGKitError


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("kernel, dilation, time", [(3, 1, 17), (3, 4, 40), (5, 2, 23), (3, 32, 20), (1, 1, 9)])
def test_conv1d_tm_matches_conv1d_outputs_and_gradients(kernel, dilation, time):
    torch.manual_seed(0)
    batch, c_in, c_out = 3, 5, 7
    conv = nn.Conv1d(c_in, c_out, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2).double()
    x = torch.randn(batch, c_in, time, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(batch, c_out, time, dtype=torch.float64)
    conv(x).backward(grad)
    ref = (x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone(), conv(x).detach())

    rows = time_major(x.detach()).requires_grad_()  # (time * batch, C_in)
    weight = weight_taps(conv.weight.detach()).requires_grad_()  # (k, C_in, C_out)
    bias = conv.bias.detach().clone().requires_grad_()
    out = conv1d_tm(rows, weight, bias, batch, dilation)
    assert out.shape == (time * batch, c_out)
    out.backward(time_major(grad))
    assert _rel(channel_first(out.detach(), batch), ref[3]) < 1e-12
    assert _rel(channel_first(rows.grad, batch), ref[0]) < 1e-12
    assert _rel(weight.grad.permute(2, 1, 0), ref[1]) < 1e-12
    assert _rel(bias.grad, ref[2]) < 1e-12


@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
def test_weight_taps_values_layout_and_gradient(dtype):
    torch.manual_seed(2)
    weight = torch.randn(7, 5, 3, requires_grad=True)  # (C_out, C_in, k)
    taps = weight_taps(weight, dtype)  # (k, C_in, C_out)
    assert taps.shape == (3, 5, 7) and taps.dtype == (dtype or torch.float32)
    assert torch.equal(taps.float(), weight.detach().permute(2, 1, 0).to(taps.dtype).float())
    assert all(taps[j].stride(1) == 1 for j in range(3))  # each tap is a GEMM operand as it is
    upstream = torch.randn(3, 5, 7).to(taps.dtype)
    (taps * upstream).float().sum().backward()
    assert weight.grad.dtype == torch.float32 and weight.grad.is_contiguous()
    assert torch.equal(weight.grad, upstream.float().permute(2, 1, 0))


def test_conv1d_tm_bf16_within_bf16_rounding():
    torch.manual_seed(1)
    conv = nn.Conv1d(16, 32, 3, dilation=2, padding=2)
    x = torch.randn(2, 16, 50)
    out = conv1d_tm(time_major(x, torch.bfloat16), weight_taps(conv.weight.detach(), torch.bfloat16),
                    conv.bias.detach(), 2, 2)
    assert out.dtype == torch.bfloat16
    assert _rel(channel_first(out, 2), conv(x).detach()) < 3e-2


def test_conv_impl_resolution_and_refusal():
    assert conv_impl("auto", "cpu") == "gemm"
    assert conv_impl("auto", "cuda") == "native"
    assert conv_impl("native", "cpu") == "native" and conv_impl("gemm", "cuda") == "gemm"
    with pytest.raises(ValueError, match="conv_impl must be one of auto, native, gemm"):
        conv_impl("fast")
    from task2_regression.models import build_model
    with pytest.raises(EEGKitError, match="conv_impl"):
        build_model({"type": "cat_wavenet", "layers": 2, "conv_impl": "fast"}, {"envelope": 1})


def _grads(model) -> dict:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _compare_paths(model, set_impl, run, tolerance):
    set_impl("native")
    out_native = run()
    out_native.square().mean().backward()
    g_native = _grads(model)
    model.zero_grad()
    set_impl("gemm")
    out_gemm = run()
    out_gemm.square().mean().backward()
    g_gemm = _grads(model)
    assert _rel(out_gemm.detach(), out_native.detach()) < tolerance
    scale = max(float(g.abs().max()) for g in g_native.values())
    assert g_native.keys() == g_gemm.keys()
    worst = max(float((g_gemm[k] - g_native[k]).abs().max()) for k in g_native) / scale
    assert worst < tolerance


def test_wavenet_auto_is_gemm_only_under_cpu_bf16_autocast():
    from task2_regression.models.wavenet import WaveNetRegressor

    stage = WaveNetRegressor(4, 2, layers=2, dilation_cycle=2, residual_channels=8, skip_channels=8)
    stage.conv_impl = "auto"
    cpu = torch.device("cpu")
    assert stage.resolved_conv_impl(cpu) == "native"  # fp32: oneDNN's conv is the faster one
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stage.resolved_conv_impl(cpu) == "gemm"
    assert stage.resolved_conv_impl(torch.device("cuda")) == "native"
    stage.conv_impl = "gemm"
    assert stage.resolved_conv_impl(cpu) == "gemm"  # an explicit choice is kept


def test_cat_wavenet_gemm_path_equals_native():
    from task2_regression.models import build_model

    torch.manual_seed(0)
    model = build_model({"type": "cat_wavenet", "layers": 3, "dilation_cycle": 3, "residual_channels": 8,
                         "last_stage_channels": 12, "attention_dim": 8, "attention_heads": 2,
                         "attention_depth": 1, "attention_chunk": 16}, {"envelope": 1, "mel": 10})
    eeg = torch.randn(2, 48, 64)
    _compare_paths(model, model.set_conv_impl, lambda: model(eeg)["mel"], 1e-5)


def test_neurospex_gemm_path_equals_native():
    from speaker_extraction.models import build_model

    torch.manual_seed(0)
    model = build_model({"type": "neurospex", "N": 16, "L": 16, "B": 16, "H": 24, "P": 3, "X": 3, "R": 2,
                         "eeg_channels": 8, "eeg_dim": 8, "adc_blocks": 1, "attn_heads": 2})
    mixture, eeg = torch.randn(2, 800), torch.randn(2, 13, 8)

    def set_impl(name):
        model.conv_impl = name

    _compare_paths(model, set_impl, lambda: model(mixture, eeg), 1e-5)


def test_set_precision_bf16_outputs_fp32_and_close_then_back_to_fp32():
    from util.trainer import check_precision, set_precision

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 4))
    x = torch.randn(10, 32)
    reference = model(x)
    set_precision(model, "bf16")
    inside = {}
    model[0].register_forward_hook(lambda m, a, out: inside.update(dtype=out.dtype))
    out = model(x)
    assert inside["dtype"] == torch.bfloat16  # the layers ran in bf16 ...
    assert out.dtype == torch.float32  # ... the caller gets fp32 (loss / metrics in fp32)
    assert 0 < _rel(out, reference) < 3e-2
    assert not torch.is_autocast_enabled("cpu")  # autocast left with the forward
    set_precision(model, "fp32")
    assert torch.equal(model(x), reference)
    with pytest.raises(EEGKitError, match="train.precision must be one of fp32, bf16, got 'fp16'"):
        check_precision("fp16")


def test_fit_refuses_a_bad_precision(tmp_path):
    from util import distributed
    from util.trainer import fit

    config = {"train": {"precision": "half", "seed": 0, "lr": 1e-3, "betas": [0.9, 0.999], "patience": 1,
                        "epochs": 1, "grad_clip": 0.0}}
    info = distributed.DistInfo(0, 1, 0, torch.device("cpu"))
    with pytest.raises(EEGKitError, match="train.precision"):
        fit(config, tmp_path / "run", info, lambda: nn.Linear(2, 1), None, None, [], [], 1, "x", task="task2")
    assert not (tmp_path / "run").exists()


def test_make_adam_is_fused_on_cpu_and_matches_plain_adam_to_rounding():
    from util.trainer import make_adam

    torch.manual_seed(0)
    a, b = nn.Linear(6, 3), nn.Linear(6, 3)
    b.load_state_dict(a.state_dict())
    fast, plain = make_adam(a.parameters(), 1e-2, (0.9, 0.98)), \
        torch.optim.Adam(b.parameters(), lr=1e-2, betas=(0.9, 0.98), foreach=False)
    assert fast.defaults["fused"]
    x = torch.randn(5, 6)
    for model, optimizer in ((a, fast), (b, plain)):
        for _ in range(3):
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
    torch.manual_seed(0)
    start = nn.Linear(6, 3)  # the same initial weights as a and b
    for p, q, p0 in zip(a.parameters(), b.parameters(), start.parameters()):
        assert (q - p0).abs().min() > 1e-3  # three steps of lr 1e-2 moved every weight
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
