"""Tests for the NeuroSpex model (speaker_extraction/models)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from speaker_extraction.models import build_model
from util.training import count_parameters

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "speaker_extraction" / "configs"
FS_AUDIO, FS_EEG = 8000, 128

SMALL = {"type": "neurospex", "N": 64, "L": 16, "B": 64, "H": 128, "P": 3, "X": 3, "R": 2,
         "eeg_channels": 64, "eeg_dim": 64, "adc_blocks": 2, "eeg_heads": 1, "attn_heads": 2}
TINY = {"type": "neurospex", "N": 32, "L": 16, "B": 32, "H": 64, "P": 3, "X": 2, "R": 1,
        "eeg_channels": 8, "eeg_dim": 16, "adc_blocks": 1, "eeg_heads": 1, "attn_heads": 2}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def single_cpu_thread():
    """These models are small: intra-op threading only adds overhead (and oversubscribes
    the shared 2-core machine), so run each test on one thread and restore afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def si_sdr(estimate: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Zero-mean SI-SDR in dB per batch item; (batch, samples) -> (batch,)."""
    estimate = estimate - estimate.mean(dim=1, keepdim=True)
    reference = reference - reference.mean(dim=1, keepdim=True)
    alpha = (estimate * reference).sum(1, keepdim=True) / (reference.pow(2).sum(1, keepdim=True) + 1e-8)
    target = alpha * reference
    return 10 * torch.log10(target.pow(2).sum(1) / ((estimate - target).pow(2).sum(1) + 1e-8) + 1e-8)


def test_si_sdr_helper_matches_reference_check_value():
    reference = torch.tensor([[3.0, -0.5, 2.0, 7.0]])
    estimate = torch.tensor([[2.5, 0.0, 2.0, 8.0]])
    assert si_sdr(estimate, reference).item() == pytest.approx(15.0918, abs=1e-3)


@pytest.mark.parametrize("n_samples", [16000, 32000, 64000, 32001, 16003, 7])
def test_output_length_equals_mixture_length(n_samples):
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    eeg_time = max(1, round(n_samples * FS_EEG / FS_AUDIO))
    mixture = torch.randn(1, n_samples)
    with torch.no_grad():
        estimate = model(mixture, torch.randn(1, eeg_time, 64))
    assert estimate.shape == (1, n_samples)
    assert estimate.dtype == torch.float32
    assert torch.isfinite(estimate).all()


@pytest.mark.parametrize("adc_blocks", [0, 1, 2, 6])
def test_adc_depths_build_run_and_backprop(adc_blocks):
    torch.manual_seed(0)
    model = build_model({**SMALL, "adc_blocks": adc_blocks})
    assert len(model.eeg_encoder.blocks) == adc_blocks
    eeg = torch.randn(2, 128, 64)  # 1 s
    estimate = model(torch.randn(2, 8000), eeg)
    assert estimate.shape == (2, 8000)
    estimate.pow(2).mean().backward()
    assert model.eeg_encoder.pre_conv.weight.grad is not None
    assert model.eeg_encoder.pre_conv.weight.grad.abs().sum() > 0


def test_eeg_encoder_is_length_agnostic_and_per_step():
    """2-, 4- and 8-s EEG all encode; the final per-step channel LayerNorm leaves every
    time step with zero mean over channels (a norm over time would not)."""
    torch.manual_seed(0)
    encoder = build_model(SMALL).eeg_encoder.eval()
    for seconds in (2, 4, 8):
        with torch.no_grad():
            embedding = encoder(torch.randn(3, seconds * FS_EEG, 64))
        assert embedding.shape == (3, seconds * FS_EEG, 64)
        assert embedding.mean(dim=2).abs().max() < 1e-4  # LayerNorm over channels of each step


def test_batch_items_are_independent():
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    mixture, eeg = torch.randn(2, 8000), torch.randn(2, 128, 64)
    with torch.no_grad():
        together = model(mixture, eeg)
        alone = model(mixture[:1], eeg[:1])
    torch.testing.assert_close(together[:1], alone, rtol=1e-4, atol=1e-5)


def test_output_depends_on_eeg():
    torch.manual_seed(0)
    model = build_model(SMALL).eval()
    mixture = torch.randn(1, 8000)
    with torch.no_grad():
        first = model(mixture, torch.randn(1, 128, 64))
        second = model(mixture, torch.randn(1, 128, 64))
    assert (first - second).abs().max() > 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_every_available_device(device):
    torch.manual_seed(0)
    model = build_model(SMALL).to(device).eval()
    with torch.no_grad():
        estimate = model(torch.randn(2, 12345, device=device), torch.randn(2, 198, 64, device=device))
    assert estimate.shape == (2, 12345)
    assert estimate.device.type == device


def test_no_hard_coded_device_in_model_sources():
    sources = sorted((REPO / "speaker_extraction" / "models").glob("*.py"))
    assert len(sources) >= 2
    for path in sources:
        text = path.read_text()
        assert ".cuda(" not in text, f"{path} hard-codes a device"
        assert "device=\"cuda\"" not in text and "device='cuda'" not in text, path


def test_paper_size_parameter_count():
    """Reference: about 5.06 M with the released defaults (4 AdC blocks).

    Ours with 4 AdC blocks is 5,056,612: the per-step LayerNorm(64) after the AdC depthwise
    conv has 128 affine parameters where the released LayerNorm over 512 time samples has
    1,024 (+3,584 for 4 blocks); the decoder Linear has no bias (Conv-TasNet convention).
    Each extra AdC block adds 17,537 parameters.
    """
    paper = yaml.safe_load((CONFIG_DIR / "neurospex.yaml").read_text())["model"]
    assert paper["adc_blocks"] == 6
    four_blocks = count_parameters(build_model({**paper, "adc_blocks": 4}))
    assert abs(four_blocks - 5.06e6) / 5.06e6 < 0.10
    assert four_blocks == 5_056_612
    assert count_parameters(build_model(paper)) == four_blocks + 2 * 17_537


@pytest.mark.parametrize("name", ["neurospex", "neurospex_small", "ablation_adc0", "ablation_adc1",
                                  "ablation_adc2", "ablation_adc4", "ablation_adc6"])
def test_configs_follow_the_run_schema_and_build(name):
    cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    assert set(cfg) == {"model", "data", "train"}
    for key in ("window_s", "hop_s", "band", "channels", "split", "include_repetitions"):
        assert key in cfg["data"], key
    assert cfg["data"]["split"]["protocol"] == "trial"
    for key in ("epochs", "batch_size", "lr", "patience", "grad_clip", "seed"):
        assert key in cfg["train"], key
    from speaker_extraction.train import resolve_config

    resolved = resolve_config(cfg)  # the one schema of speaker_extraction.data / train.py: no aliases
    assert resolved["data"]["band"] == cfg["data"]["band"] and resolved["data"]["split"]["val_trials"] == 1
    model = build_model(cfg["model"])
    if name.startswith("ablation_adc"):
        assert len(model.eeg_encoder.blocks) == int(name[-1])
        small = yaml.safe_load((CONFIG_DIR / "neurospex_small.yaml").read_text())
        assert {k: v for k, v in cfg["model"].items() if k != "adc_blocks"} == \
            {k: v for k, v in small["model"].items() if k != "adc_blocks"}
        assert cfg["data"] == small["data"] and cfg["train"] == small["train"]


def test_bad_configs_are_rejected():
    from util.errors import EEGKitError

    with pytest.raises(EEGKitError, match="unknown speaker-extraction model type"):  # one line, no traceback
        build_model({"type": "conv_tasnet"})
    with pytest.raises(EEGKitError, match="unknown key model.bogus"):
        build_model({**SMALL, "bogus": 1})
    with pytest.raises(EEGKitError, match="even"):
        build_model({**SMALL, "L": 15})
    model = build_model(SMALL)
    with pytest.raises(ValueError, match="eeg must be"):
        model(torch.randn(1, 8000), torch.randn(1, 128, 32))


def _synthetic_batch(batch: int, seconds: float, n_channels: int, seed: int):
    """Two amplitude-modulated tones ('talkers'); the EEG carries the target's envelope."""
    generator = torch.Generator().manual_seed(seed)
    n_samples, n_eeg = int(seconds * FS_AUDIO), int(seconds * FS_EEG)
    time_audio = torch.arange(n_samples) / FS_AUDIO
    time_eeg = torch.arange(n_eeg) / FS_EEG

    def envelope(times, phase, rate):
        return 0.6 + 0.4 * torch.sin(2 * math.pi * rate * times + phase)

    mixtures, targets, eegs = [], [], []
    for index in range(batch):
        phases = torch.rand(2, generator=generator) * 2 * math.pi
        rates = 2.0 + 3.0 * torch.rand(2, generator=generator)
        talkers = [envelope(time_audio, phases[k], rates[k]) *
                   torch.sin(2 * math.pi * (220.0 if k == 0 else 560.0) * time_audio) for k in range(2)]
        attended = index % 2  # alternate which talker is attended
        target_envelope = envelope(time_eeg, phases[attended], rates[attended])  # (n_eeg,)
        mixing = torch.randn(n_channels, generator=generator)
        eeg = target_envelope[:, None] * mixing[None, :] + 0.1 * torch.randn(n_eeg, n_channels, generator=generator)
        mixtures.append(talkers[0] + talkers[1])
        targets.append(talkers[attended])
        eegs.append(eeg)
    return torch.stack(mixtures), torch.stack(targets), torch.stack(eegs).float()


def test_tiny_model_overfits_a_small_batch():
    torch.manual_seed(0)
    mixture, target, eeg = _synthetic_batch(batch=4, seconds=0.5, n_channels=TINY["eeg_channels"], seed=0)
    model = build_model(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    baseline = si_sdr(mixture, target).mean().item()  # ~0 dB: equal-power talkers
    with torch.no_grad():
        before = si_sdr(model(mixture, eeg), target).mean().item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = -si_sdr(model(mixture, eeg), target).mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = si_sdr(model(mixture, eeg), target).mean().item()
    assert after - before > 10.0, (before, after)
    assert after - baseline > 5.0, (baseline, after)  # SI-SDR improvement over the mixture
