"""Tests for the Task 2 baseline models: registry, LinearConv, RidgeDecoder, VLAAI, DPRNN."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from task2_regression.models import build_model
from util.training import count_parameters
from task2_regression.models.dprnn import DPRNN
from task2_regression.models.linear import LinearConv, RidgeDecoder
from task2_regression.models.vlaai import VLAAI

CONFIGS = Path(__file__).resolve().parents[1] / "task2_regression" / "configs"
SMALL_CFGS = {
    "linear": {"type": "linear"},
    "ridge": {"type": "ridge"},
    "vlaai": {"type": "vlaai", "filters": [8, 8, 8, 4, 4], "kernels": 4, "context_kernel": 4},
    "dprnn": {"type": "dprnn", "feature_dim": 8, "hidden_size": 8, "n_blocks": 1, "chunk_size": 16},
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(SMALL_CFGS))
@pytest.mark.parametrize("targets", [{"mel": 10}, {"envelope": 1}, {"envelope": 1, "mel": 10}])
def test_output_shapes_and_dtypes(name, targets):
    torch.manual_seed(0)
    model = build_model(SMALL_CFGS[name], targets)
    eeg = torch.randn(3, 100, 64)  # (batch, time, 64)
    out = model(eeg)
    assert set(out) == set(targets)
    expected_time = {"linear": 100 - 15, "ridge": 100 - 25}.get(name, 100)
    for target, bands in targets.items():
        assert out[target].shape == (3, expected_time, bands)
        assert out[target].dtype == torch.float32


def test_registry_rejects_bad_type_and_kwargs():
    from util.errors import EEGKitError

    with pytest.raises(EEGKitError, match="model.type"):  # one line for the CLIs, no traceback
        build_model({"type": "transformer"}, {"mel": 10})
    with pytest.raises(EEGKitError, match="unknown key model.n_tapz"):
        build_model({"type": "linear", "n_tapz": 3}, {"mel": 10})


@pytest.mark.parametrize("config", ["linear", "ridge", "vlaai", "vlaai_small", "dprnn", "dprnn_small"])
def test_configs_build(config):
    cfg = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
    assert cfg["target"] == "mel" and cfg["model"]["type"] in {"linear", "ridge", "vlaai", "dprnn"}
    for section in ("data", "train", "loss"):
        assert isinstance(cfg[section], dict)
    model = build_model(cfg["model"], {"mel": 10})
    assert isinstance(model, torch.nn.Module)


def test_linear_conv_valid_length_and_alignment():
    model = LinearConv({"mel": 10})
    conv = model.convs["mel"]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[2, 5, 7] = 1.0  # band 2 reads EEG channel 5 at lag 7 frames
    eeg = torch.zeros(1, 64, 64)  # (batch, time, 64)
    eeg[0, 40, 5] = 1.0  # impulse at frame 40
    mel = model(eeg)["mel"]  # (1, 49, 10)
    assert mel.shape == (1, 64 - 15, 10)
    nonzero = torch.nonzero(mel[0])
    # output frame t uses EEG t + lag: the impulse at 40 lands in output frame 40 - 7
    assert nonzero.tolist() == [[33, 2]]


def _numpy_ridge(eeg_list, target_list, n_taps, alpha):
    rows, ys = [], []
    for eeg, target in zip(eeg_list, target_list):
        time_out = eeg.shape[0] - n_taps + 1
        rows.append(np.concatenate([eeg[lag : lag + time_out] for lag in range(n_taps)], axis=1))
        ys.append(target[:time_out])
    x, y = np.concatenate(rows).astype(np.float64), np.concatenate(ys).astype(np.float64)
    mean_x, mean_y = x.mean(0), y.mean(0)
    xc, yc = x - mean_x, y - mean_y
    cxx = xc.T @ xc
    ridge = alpha * np.trace(cxx) / cxx.shape[0]
    weights = np.linalg.solve(cxx + ridge * np.eye(cxx.shape[0]), xc.T @ yc)
    return weights, mean_y - mean_x @ weights


def test_ridge_streaming_equals_one_shot_numpy():
    rng = np.random.default_rng(0)
    eeg_list = [rng.standard_normal((n, 64)).astype(np.float32) + 0.3 for n in (400, 333, 520)]
    mel_list = [rng.standard_normal((len(e), 10)).astype(np.float32) * 2 + 1 for e in eeg_list]
    model = RidgeDecoder({"mel": 10}, n_taps=26)
    model.partial_fit(eeg_list[0], {"mel": mel_list[0]}, chunk_frames=100)  # chunked single recording
    model.partial_fit(eeg_list[1], mel_list[1])  # bare array for a single target
    model.partial_fit(eeg_list[2][None], {"mel": mel_list[2][None]}, chunk_frames=77)  # batched layout
    model.solve(alpha=0.1)
    weights, bias = _numpy_ridge(eeg_list, mel_list, 26, 0.1)
    np.testing.assert_allclose(model.weight_mel.numpy(), weights, atol=1e-6)
    np.testing.assert_allclose(model.bias_mel.numpy(), bias, atol=1e-6)
    # torch prediction equals the numpy linear prediction
    pred = model(torch.from_numpy(eeg_list[1])[None])["mel"][0].double().numpy()
    design = np.concatenate([eeg_list[1][lag : lag + 333 - 25] for lag in range(26)], axis=1)
    np.testing.assert_allclose(pred, design @ weights + bias, atol=1e-4)


def test_ridge_recovers_known_filter_selects_alpha_and_round_trips():
    rng = np.random.default_rng(1)
    n_channels, n_taps = 6, 5
    true_w = rng.standard_normal((n_taps * n_channels, 2))
    true_b = np.array([0.5, -1.0])
    # strongly correlated channels (condition number ~30) so heavy shrinkage distorts the filter
    mixing = rng.standard_normal((n_channels, n_channels)) @ np.diag(np.logspace(0, -1.5, n_channels))

    def make(n):
        eeg = rng.standard_normal((n, n_channels)) @ mixing.T
        design = np.concatenate([eeg[lag : lag + n - n_taps + 1] for lag in range(n_taps)], axis=1)
        envelope = np.zeros((n, 2))
        envelope[: n - n_taps + 1] = design @ true_w + true_b + 0.05 * rng.standard_normal((n - n_taps + 1, 2))
        return eeg, envelope

    model = RidgeDecoder({"target": 2}, n_channels=n_channels, n_taps=n_taps)
    for _ in range(4):
        model.partial_fit(*make(1000))
    scores = model.select_alpha([1e-6, 1e-2, 10.0, 1000.0], [make(500) for _ in range(2)])
    assert max(scores, key=scores.get) == float(model.alpha) == 1e-6
    assert scores[1e-6] > 0.99 and scores[1000.0] < scores[1e-6] - 0.02
    np.testing.assert_allclose(model.weight_target.numpy(), true_w, atol=0.05)
    np.testing.assert_allclose(model.bias_target.numpy(), true_b, atol=0.01)
    # weights are buffers: a fresh model loads them from the state dict and predicts identically
    clone = RidgeDecoder({"target": 2}, n_channels=n_channels, n_taps=n_taps)
    clone.load_state_dict(model.state_dict())
    eeg = torch.randn(2, 50, n_channels)
    torch.testing.assert_close(clone(eeg)["target"], model(eeg)["target"])
    assert bool(clone.fitted) and clone.closed_form


def test_ridge_solve_without_data_fails():
    with pytest.raises(RuntimeError, match="partial_fit"):
        RidgeDecoder({"mel": 10}).solve(1.0)


def test_vlaai_shares_extractor_and_context():
    model = VLAAI({"mel": 10}, filters=[8, 8, 8, 4, 4], kernels=4, context_kernel=4)
    n_extractor = count_parameters(model.extractor)
    n_context = count_parameters(model.output_context)
    n_dense = sum(count_parameters(d) for d in model.dense)
    n_heads = count_parameters(model.heads)
    assert n_dense == 4 * (4 * 64 + 64)
    assert n_heads == 64 * 10 + 10
    assert count_parameters(model) == n_extractor + n_context + n_dense + n_heads
    calls = {"extractor": [], "context": []}
    model.extractor.register_forward_hook(lambda m, i, o: calls["extractor"].append(id(m)))
    model.output_context.register_forward_hook(lambda m, i, o: calls["context"].append(id(m)))
    model(torch.randn(1, 32, 64))
    assert calls["extractor"] == [id(model.extractor)] * 4  # the same module object, once per block
    assert calls["context"] == [id(model.output_context)] * 4
    shared = VLAAI({"mel": 10}, filters=[8, 8, 8, 4, 4], kernels=4, context_kernel=4, share_dense=True)
    assert count_parameters(shared) == count_parameters(model) - 3 * (4 * 64 + 64)


def test_vlaai_padding_direction():
    """causal: output t depends on EEG <= t only; anticausal: on EEG >= t only. Length is kept."""
    torch.manual_seed(0)
    eeg = torch.randn(1, 60, 64)
    changed = eeg.clone()
    changed[0, 40:] += 1.0  # change the future from frame 40 on
    earlier = eeg.clone()
    earlier[0, :20] += 1.0  # change the past up to frame 19
    for padding in ("causal", "anticausal"):
        model = VLAAI({"mel": 10}, filters=[8, 8, 8, 4, 4], kernels=4, context_kernel=4, padding=padding).eval()
        out = model(eeg)["mel"]
        assert out.shape == (1, 60, 10)
        if padding == "causal":
            out_changed = model(changed)["mel"]
            torch.testing.assert_close(out[0, :40], out_changed[0, :40])
            assert not torch.allclose(out[0, 40:], out_changed[0, 40:])
        else:
            out_changed = model(earlier)["mel"]
            torch.testing.assert_close(out[0, 20:], out_changed[0, 20:])
            assert not torch.allclose(out[0, :20], out_changed[0, :20])
    with pytest.raises(ValueError, match="padding"):
        VLAAI({"mel": 10}, padding="same")


@pytest.mark.parametrize("time", [320, 1920, 333])
def test_dprnn_any_length(time):
    torch.manual_seed(0)
    model = DPRNN({"mel": 10, "envelope": 1}, feature_dim=8, hidden_size=8, n_blocks=2, chunk_size=32)
    out = model(torch.randn(2, time, 64))
    assert out["mel"].shape == (2, time, 10) and out["envelope"].shape == (2, time, 1)
    assert torch.isfinite(out["mel"]).all()


@pytest.mark.parametrize("time", [5, 64, 333])
def test_dprnn_chunking_overlap_add_inverts(time):
    """Every frame is covered by exactly two half-overlapping chunks: OLA(chunks) == 2 * input."""
    model = DPRNN({"mel": 10}, feature_dim=4, hidden_size=4, n_blocks=1, chunk_size=16)
    seq = torch.randn(2, 4, time)  # (batch, features, time)
    chunks, padded = model._chunk(seq)
    assert chunks.shape[2:] == (16, 4)
    torch.testing.assert_close(model._overlap_add(chunks, padded, time), 2 * seq)


def test_tiny_vlaai_overfits_one_batch():
    from util.losses import neg_pearson_loss

    torch.manual_seed(0)
    model = build_model({"type": "vlaai", "filters": [16, 16, 16, 8, 8], "kernels": 8, "context_kernel": 8},
                        {"mel": 10})
    eeg = torch.randn(2, 96, 64)  # (batch, time, 64)
    mel = torch.randn(2, 96, 10)  # (batch, time, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = neg_pearson_loss(model(eeg)["mel"], mel).item()
    assert abs(first) < 0.1  # untrained: about zero correlation
    losses = []
    for _ in range(150):
        loss = neg_pearson_loss(model(eeg)["mel"], mel)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if loss.item() < -0.9:
            break
    assert losses[-1] < -0.9, f"did not overfit: final loss {losses[-1]:.3f} after {len(losses)} steps"
