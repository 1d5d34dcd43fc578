"""Tests for the CAT-guided WaveNet (task2_regression/models/cat_wavenet.py and parts)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.nn.utils import parametrize

from task2_regression.models.cat_wavenet import CATWaveNet
from task2_regression.models.cross_attention import _attend
from task2_regression.models.wavenet import gated_activation

ALL_TARGETS = {"envelope": 1, "mel": 10, "mel80": 80, "mag": 257}
TINY = dict(layers=4, dilation_cycle=4, residual_channels=16, last_stage_channels=24,
            attention_dim=16, attention_heads=2, attention_depth=1)


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Fixed seed; one intra-op thread (2 threads thrash on a shared, loaded 2-core box)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pearson(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(batch, time, bands) x2 -> (batch, bands) Pearson r over time."""
    pred = pred - pred.mean(1, keepdim=True)
    target = target - target.mean(1, keepdim=True)
    return (pred * target).sum(1) / (pred.norm(dim=1) * target.norm(dim=1) + 1e-8)


def test_four_stages_all_outputs_at_5s():
    model = CATWaveNet(ALL_TARGETS, **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 320, 64))
    assert list(out) == list(ALL_TARGETS)
    for name, bands in ALL_TARGETS.items():
        assert out[name].shape == (2, 320, bands)
        assert out[name].dtype == torch.float32
        assert torch.isfinite(out[name]).all()
    # the wide stage is the mag stage
    assert model.stages[3].layers[0].residual_conv.out_channels == 24
    assert model.stages[1].layers[0].residual_conv.out_channels == 16


@pytest.mark.parametrize("n_samples,chunk", [(320, None), (1920, None), (3840, None), (3840, 320)])
def test_any_window_length(n_samples, chunk):
    model = CATWaveNet({"envelope": 1, "mel": 10}, attention_chunk=chunk, **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(1, n_samples, 64))
    assert out["envelope"].shape == (1, n_samples, 1)
    assert out["mel"].shape == (1, n_samples, 10)
    assert torch.isfinite(out["mel"]).all()


def test_target_subsets():
    mel_only = CATWaveNet({"mel": 10}, **TINY)
    assert len(mel_only.attention) == 0 and len(mel_only.stages) == 1
    out = mel_only(torch.randn(2, 100, 64))
    assert list(out) == ["mel"] and out["mel"].shape == (2, 100, 10)
    two = CATWaveNet({"envelope": 1, "mel": 10}, **TINY)
    assert len(two.attention) == 1
    # no mag stage -> no wide stage: both stages use residual_channels
    assert all(s.layers[0].residual_conv.out_channels == 16 for s in two.stages)
    out = two(torch.randn(2, 100, 64))
    assert list(out) == ["envelope", "mel"] and out["envelope"].shape == (2, 100, 1)


def test_bad_input_shape_raises():
    model = CATWaveNet({"mel": 10}, **TINY)
    with pytest.raises(ValueError, match="batch, time, 64"):
        model(torch.randn(2, 64, 100))


def _config(name: str) -> dict:
    import yaml

    repo = Path(__file__).resolve().parents[1]
    return yaml.safe_load((repo / "task2_regression" / "configs" / f"{name}.yaml").read_text())


def test_paper_size_parameter_count():
    """configs/cat_wavenet.yaml built through the registry (meta device: no memory, fast)."""
    from task2_regression.models import build_model

    cfg = _config("cat_wavenet")
    assert cfg["model"]["layers"] == 36 and cfg["model"]["dilation_cycle"] == 12
    with torch.device("meta"):
        model = build_model(cfg["model"], {t: ALL_TARGETS[t] for t in cfg["targets"]})
    assert isinstance(model, CATWaveNet)
    n_params = sum(p.numel() for p in model.parameters())
    assert abs(n_params - 94e6) / 94e6 < 0.10, n_params
    dilations = [layer.dilated_conv.dilation[0] for layer in model.stages[0].layers]
    assert dilations == [2 ** (i % 12) for i in range(36)]
    assert model.stages[3].layers[0].skip_conv.out_channels == 512
    assert model.stages[2].layers[0].skip_conv.out_channels == 128


def test_fold_weight_norm_keeps_outputs():
    model = CATWaveNet({"envelope": 1, "mel": 10}, **TINY)
    with torch.no_grad():  # make the weight-norm gains non-trivial
        for name, param in model.named_parameters():
            if name.endswith("original0"):
                param.mul_(torch.rand_like(param) + 0.5)
    model.eval()
    eeg = torch.randn(2, 200, 64)
    with torch.no_grad():
        before = model(eeg)
        n_folded = model.fold_weight_norm()
        after = model(eeg)
    # per stage: input conv, 3 convs per layer (2 in the last layer), 2 head convs
    assert n_folded == 2 * (1 + 3 * 4 - 1 + 2)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-5)


def test_fast_path_equals_plain_path_outputs_and_gradients():
    model = CATWaveNet(ALL_TARGETS, fast=False, **TINY)
    eeg = torch.randn(2, 160, 64)
    results = []
    for fast in (False, True):
        model.set_speed(fused_gate=fast, attention_impl="sdpa" if fast else "plain",
                        attention_chunk=None)
        model.zero_grad()
        out = model(eeg)
        sum((o ** 2).mean() for o in out.values()).backward()
        assert all(p.grad is not None for p in model.parameters())  # none unused (DDP)
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append(({k: v.detach() for k, v in out.items()}, grads))
    (plain_out, plain_grads), (fast_out, fast_grads) = results
    for name in plain_out:
        torch.testing.assert_close(fast_out[name], plain_out[name], rtol=1e-4, atol=1e-5)
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], rtol=1e-3, atol=1e-5)


def test_fused_gate_no_grad_matches_plain():
    x = torch.randn(3, 8, 50)
    expected = gated_activation(x, fused=False)
    with torch.no_grad():
        got = gated_activation(x.clone(), fused=True)
    torch.testing.assert_close(got, expected)


def test_chunked_attention_matches_per_chunk_attention():
    query, key, value = (torch.randn(2, 8, 50) for _ in range(3))
    chunk = 16  # 50 = 3 * 16 + 2: the padded tail chunk must be masked
    got = _attend(query, key, value, heads=2, impl="sdpa", chunk=chunk)
    plain = _attend(query, key, value, heads=2, impl="plain", chunk=chunk)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
    for start in range(0, 50, chunk):
        piece = slice(start, min(start + chunk, 50))
        expected = _attend(query[..., piece], key[..., piece], value[..., piece], heads=2,
                           impl="plain", chunk=None)
        torch.testing.assert_close(got[..., piece], expected, rtol=1e-5, atol=1e-5)
    # a chunk at least as long as the window is full attention
    full = _attend(query, key, value, heads=2, impl="sdpa", chunk=None)
    torch.testing.assert_close(_attend(query, key, value, 2, "sdpa", 64), full)


def test_sdpa_attention_takes_the_flash_kernel_forward_and_backward():
    """CPU SDPA silently falls back to its math kernel (4.5x slower at 1920 frames) for a query whose
    last axis is not unit-stride; `_attend` must hand it contiguous heads."""
    query, key, value = (torch.randn(1, 8, 40, requires_grad=True) for _ in range(3))
    with torch.profiler.profile() as prof:
        _attend(query, key, value, heads=2, impl="sdpa", chunk=None).sum().backward()
    kernels = {event.key for event in prof.key_averages()}
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels
    assert "aten::_scaled_dot_product_flash_attention_for_cpu_backward" in kernels
    assert "aten::_scaled_dot_product_attention_math" not in kernels


def test_bf16_autocast_close_to_float32():
    model = CATWaveNet({"envelope": 1, "mel": 10}, **TINY).eval()
    eeg = torch.randn(1, 128, 64)
    with torch.no_grad():
        reference = model(eeg)["mel"]
        model.bf16 = True
        low = model(eeg)["mel"]
    assert low.dtype == torch.float32
    assert _pearson(low, reference).min() > 0.95


def test_tiny_model_overfits_one_batch():
    model = CATWaveNet({"envelope": 1, "mel": 10}, **TINY)
    eeg = torch.randn(2, 128, 64)
    targets = {"envelope": torch.randn(2, 128, 1), "mel": torch.randn(2, 128, 10)}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(50):  # reaches about -0.94 (seed 0, 1 thread); 80 steps at lr 5e-3 took twice as long
        out = model(eeg)
        loss = sum(-_pearson(out[k], targets[k]).mean() for k in targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = -_pearson(model(eeg)["mel"], targets["mel"]).mean().item()
    assert final < -0.8, final


def test_small_config_builds_through_registry():
    from task2_regression.models import build_model

    cfg = _config("cat_wavenet_small")
    assert cfg["targets"] == ["envelope", "mel", "mel80", "mag"] and cfg["target"] == "mel"
    assert cfg["loss"] == {"pearson": 1.0, "l1": 0.2, "kl": 1.0}
    assert cfg["train"]["mixup"] == 2 and cfg["data"]["normalize"] == "window"
    model = build_model(cfg["model"], {t: ALL_TARGETS[t] for t in cfg["targets"]})
    assert isinstance(model, CATWaveNet)
    assert list(model.targets) == cfg["targets"]
    assert len(model.stages) == 4 and len(model.attention) == 3
    assert model.attention_chunk == cfg["model"]["attention_chunk"]


@pytest.mark.parametrize("name,ablated", [
    ("ablation1_wavenet_only", {"targets": ["mel"]}),
    ("ablation2_no_last_two", {"targets": ["envelope", "mel"]}),
    ("ablation3_no_mixup", {"train.mixup": 0}),
])
def test_ablation_configs_differ_from_proposed_only_in_the_ablated_piece(name, ablated):
    proposed, ablation = _config("cat_wavenet_small"), _config(name)

    def flat(cfg: dict, prefix: str = "") -> dict:
        out = {}
        for key, value in cfg.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    p, a = flat(proposed), flat(ablation)
    assert p.keys() == a.keys()
    differing = {key: a[key] for key in p if p[key] != a[key]}
    assert differing == ablated
