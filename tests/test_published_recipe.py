"""The published CAT-WaveNet training recipe (``../shared/reference/published_models.md`` 1.7).

- the loss on the authors' golden tensors (every term and the total to 1e-6);
- the double, halving mixup: shapes halve twice, every output is the stated convex combination,
  mel80/mag are computed from the MIXED audio, then everything is z-scored with the unbiased std;
- Mel80/Mag (numpy cached path and the torch batch path) against an independent computation from
  the definition with ``torch.stft`` and a filterbank built here by hand;
- the training-window audio rows line up with the stimulus mel80 frames;
- Adam's eps reaches the optimizer through ``train.adam_eps``; checkpoint averaging is key by key
  (``weight_g``/``weight_v`` separately) and the averaged file works with predict's loader.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "reference" / "golden"
OUTPUTS = {"envelope": 1, "mel": 10, "mel80": 80, "mag": 257}


# --------------------------------------------------------------------------- the loss
def test_published_loss_equals_the_golden_terms():
    path = GOLDEN / "mtwave_loss.npz"
    if not path.is_file():
        pytest.skip(f"golden file not present at {path}")
    from task2_regression.loss import MultiTargetLoss

    with np.load(path, allow_pickle=False) as data:
        golden = {key: data[key] for key in data.files}
    pred = {name: torch.from_numpy(golden[f"pred_{name}"]) for name in OUTPUTS}  # (2, 1920, bands)
    target = {name: torch.from_numpy(golden[f"target_{name}"]) for name in OUTPUTS}
    loss_fn = MultiTargetLoss.from_config({"pearson": 1.0, "l1": float(golden["l1_weight"]), "kl": 1.0,
                                           "variant": "published"})
    total, terms = loss_fn(pred, target)
    negative_pearson = sum(terms[f"np_{name}"] for name in OUTPUTS)
    l1 = sum(terms[f"l1_{name}"] for name in OUTPUTS)
    assert abs(negative_pearson - float(golden["negative_pearson"])) < 1e-6
    assert abs(l1 - float(golden["l1"])) < 1e-6
    assert abs(terms["kl_mel"] - float(golden["kl"])) < 1e-6
    assert abs(float(total) - float(golden["total"])) < 1e-6
    # the kit's variant is another function: its KL is per frame (10x here), its Pearson eps clamps
    _, kit_terms = MultiTargetLoss(1.0, 0.2, 1.0)(pred, target)
    assert kit_terms["kl_mel"] == pytest.approx(10 * terms["kl_mel"], rel=1e-5)
    # and the reversed KL direction would miss the golden value by far more than 1e-6
    from util.losses import kl_mel_loss

    reversed_kl = float(kl_mel_loss(target["mel"], pred["mel"], reduction="element"))
    assert abs(reversed_kl - float(golden["kl"])) > 1e-4


def test_published_pearson_eps_is_added_not_clamped():
    from util.metrics import pearson_torch

    x = torch.tensor([[[1.0], [2.0], [3.0]]])  # (1, 3, 1): sums of squares 2 and 2
    r_add = pearson_torch(x, x, eps=1e-6, eps_mode="add")
    assert float(r_add) == pytest.approx(2.0 / (2.0 + 1e-6), rel=1e-7)
    assert float(pearson_torch(x, x)) == pytest.approx(1.0, rel=1e-7)
    with pytest.raises(ValueError):
        pearson_torch(x, x, eps_mode="other")


# --------------------------------------------------------------------------- the double mixup
def _batch(n: int = 8, frames: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"eeg": torch.randn(n, frames, 64, generator=g) * 3 + 1,
            "envelope": torch.randn(n, frames, 1, generator=g),
            "mel": torch.rand(n, frames, 10, generator=g),
            "audio": torch.randn(n, frames, 250, generator=g) * 0.1,
            "subject": torch.arange(n) % 3, "recording": torch.arange(n)}


def test_halving_mixup_halves_twice_with_the_stated_convex_combination():
    from util.mixup import halving_mixup

    batch = _batch()
    keys = ("eeg", "envelope", "mel", "audio")
    out, infos = halving_mixup(batch, keys, times=2, generator=torch.Generator().manual_seed(1), return_info=True)
    assert [info["half"] for info in infos] == [4, 2]
    assert out["eeg"].shape == (2, 64, 64) and out["audio"].shape == (2, 64, 250) and out["mel"].shape == (2, 64, 10)
    lam1, lam2 = infos[0]["lam"].double(), infos[1]["lam"].double()
    assert ((lam1 >= 0) & (lam1 <= 1)).all() and ((lam2 >= 0) & (lam2 <= 1)).all()
    for key in keys:
        x = batch[key].double()
        first = lam1.view(-1, 1, 1) * x[:4] + (1 - lam1.view(-1, 1, 1)) * x[4:]  # pass 1: (4, ...)
        second = lam2.view(-1, 1, 1) * first[:2] + (1 - lam2.view(-1, 1, 1)) * first[2:]  # pass 2: (2, ...)
        torch.testing.assert_close(out[key].double(), second, rtol=1e-6, atol=1e-6)
        # each output window is a mix of 4 with weights summing to 1, the same for every key
    weights = torch.stack([lam2 * lam1[:2], lam2 * (1 - lam1[:2]), (1 - lam2) * lam1[2:], (1 - lam2) * (1 - lam1[2:])])
    torch.testing.assert_close(weights.sum(0), torch.ones(2, dtype=torch.float64))
    assert out["subject"].tolist() == batch["subject"][:2].tolist()  # unmixed rows follow the first half
    # an odd batch drops its last window; a batch of one passes through
    odd = halving_mixup({k: v[:5] for k, v in batch.items()}, keys, generator=torch.Generator().manual_seed(0))
    assert odd["eeg"].shape[0] == 2
    single = halving_mixup({k: v[:1] for k, v in batch.items()}, keys, times=2)
    torch.testing.assert_close(single["eeg"], batch["eeg"][:1])


def _recipe_cfg(**over) -> dict:
    cfg = {"targets": ["envelope", "mel", "mel80", "mag"],
           "data": {"audio_targets": "mixed", "normalize": "window_unbiased"},
           "train": {"mixup": 2, "mixup_mode": "halve"}}
    for key, value in over.items():
        section, name = key.split("__")
        cfg[section][name] = value
    return cfg


def test_batch_transform_computes_audio_targets_after_mixing_then_unbiased_zscore():
    from task2_regression import mixing, stimulus_targets
    from util.mixup import halving_mixup

    cfg = _recipe_cfg()
    assert mixing.loaded_features(cfg) == ("eeg", "envelope", "mel", "audio")
    batch = _batch()
    out = mixing.make_batch_transform(cfg, torch.device("cpu"))(batch, torch.Generator().manual_seed(5))
    assert set(out) == {"eeg", "envelope", "mel", "mel80", "mag"}
    for name, value in out.items():
        assert value.shape[:2] == (2, 64), name
        torch.testing.assert_close(value.mean(dim=1), torch.zeros_like(value.mean(dim=1)), atol=1e-5, rtol=0)
        torch.testing.assert_close(value.std(dim=1, unbiased=True), torch.ones_like(value[:, 0]), atol=1e-4, rtol=0)
        assert not torch.allclose(value.std(dim=1, unbiased=False), torch.ones_like(value[:, 0]), atol=1e-4, rtol=0)
    # the same lambdas by hand: the audio mixed first, its spectra computed after mixing, then z-scored
    mixed = halving_mixup(batch, ("eeg", "envelope", "mel", "audio"), times=2, generator=torch.Generator().manual_seed(5))
    spectra = stimulus_targets.spectral_targets(mixed["audio"].reshape(2, -1))
    for name in ("mel80", "mag"):
        torch.testing.assert_close(out[name], mixing.zscore_windows(spectra[name]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["eeg"], mixing.zscore_windows(mixed["eeg"]), atol=1e-5, rtol=1e-5)
    # mixing the per-window spectra instead (what the cached path does) is a different target
    per_window = stimulus_targets.spectral_targets(batch["audio"].reshape(8, -1))
    mixed_spectra = halving_mixup({"mag": per_window["mag"], "subject": batch["subject"]}, ("mag",), times=2,
                                  generator=torch.Generator().manual_seed(5))["mag"]
    assert (mixing.zscore_windows(mixed_spectra) - out["mag"]).abs().max() > 0.1


def test_batch_transform_kit_defaults_keep_the_batch_and_refuse_mixed_audio_with_recording_stats():
    from task2_regression import mixing
    from util.errors import EEGKitError

    cfg = {"targets": ["envelope", "mel"], "data": {"audio_targets": "cached", "normalize": "recording"},
           "train": {"mixup": 2, "mixup_mode": "keep"}}
    batch = _batch()
    out = mixing.make_batch_transform(cfg, torch.device("cpu"))(batch, torch.Generator().manual_seed(0))
    assert out["eeg"].shape == (8, 64, 64) and set(out) == {"eeg", "envelope", "mel"}
    assert mixing.loaded_features({**cfg, "targets": ["mel", "mel80"]}) == ("eeg", "mel", "mel80")
    with pytest.raises(EEGKitError, match="data.audio_targets=mixed"):
        mixing.check_config(_recipe_cfg(data__normalize="recording"))


# --------------------------------------------------------------------------- Mel80 / Mag by definition
def _htk_mel(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _hand_filterbank() -> torch.Tensor:
    """80 triangles on the HTK mel scale 0-8000 Hz over 257 bins at k * 16000 / 512 Hz, area 2 / (f_hi - f_lo)."""
    top = _htk_mel(8000.0)
    edges = [700.0 * (10 ** (top * i / 81 / 2595.0) - 1.0) for i in range(82)]
    bank = torch.zeros(80, 257, dtype=torch.float64)
    for m in range(80):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        for k in range(257):
            f = k * 16000.0 / 512
            if lo < f < hi:
                bank[m, k] = (f - lo) / (centre - lo) if f <= centre else (hi - f) / (hi - centre)
        bank[m] *= 2.0 / (hi - lo)
    return bank


def _stft_power(audio: torch.Tensor) -> torch.Tensor:
    """(samples,) float64 16-kHz audio -> (frames, 257) power, by torch.stft from the definition."""
    padded = torch.nn.functional.pad(audio, (250, 250))
    spec = torch.stft(padded, n_fft=512, hop_length=250, win_length=400,
                      window=torch.hann_window(400, periodic=True, dtype=torch.float64),
                      center=False, onesided=True, return_complex=True)  # (257, frames)
    return spec.abs().square().T


def test_mel80_and_mag_match_torch_stft_and_a_hand_built_filterbank():
    from task2_regression.stimulus_targets import spectral_targets
    from util import features

    g = torch.Generator().manual_seed(0)
    seconds = 30
    t = torch.arange(seconds * 16000, dtype=torch.float64) / 16000
    audio = 0.3 * torch.randn(seconds * 16000, generator=g, dtype=torch.float64) + torch.sin(2 * math.pi * 440 * t)
    power = _stft_power(audio)  # (frames, 257)
    assert power.shape == (1920, 257)  # 30 s at 16 kHz -> exactly the 1920 frames of a 30-s 64-Hz EEG window
    mel = power @ _hand_filterbank().T  # (1920, 80)
    # the kit's numpy path (cached targets)
    mag_np = torch.from_numpy(features.magnitude(audio.numpy(), 16000).astype(np.float64))
    mel_np = torch.from_numpy(features.mel80(audio.numpy(), 16000).astype(np.float64))
    assert mag_np.shape == (1920, 257) and mel_np.shape == (1920, 80)
    torch.testing.assert_close(mag_np, power, rtol=1e-5, atol=1e-6 * float(power.max()))
    torch.testing.assert_close(mel_np, mel, rtol=1e-5, atol=1e-6 * float(mel.max()))
    # the torch batch path (targets of mixed audio), in float64 and float32
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-5)):
        out = spectral_targets(audio.to(dtype)[None], ("mel80", "mag"))
        assert out["mag"].shape == (1, 1920, 257) and out["mel80"].shape == (1, 1920, 80)
        torch.testing.assert_close(out["mag"][0].double(), power, rtol=tol, atol=tol * float(power.max()))
        torch.testing.assert_close(out["mel80"][0].double(), mel, rtol=tol, atol=tol * float(mel.max()))
    # the filterbank really is HTK + area-normalised: every triangle's area (in Hz) is ~1 where it is resolved
    bank = _hand_filterbank()
    assert float(bank[40].sum() * 16000 / 512) == pytest.approx(1.0, rel=0.05)
    with pytest.raises(ValueError):
        spectral_targets(audio[None, :1001], ("mag",))  # not a whole number of 250-sample frames


# --------------------------------------------------------------------------- data path
def test_window_audio_rows_line_up_with_the_stimulus_mel80(task2_dataset, tmp_path):
    from task2_regression import stimulus_targets
    from task2_regression.data import discover, load_recordings, resolve_split_dir, split_offsets_of
    from util import features

    split_dir = resolve_split_dir(task2_dataset)
    groups = discover(split_dir)
    audio_dir = task2_dataset / "stimuli"
    recs = load_recordings(task2_dataset, "val", features=("eeg", "mel", "mel80", "audio"), stimulus_audio_dir=audio_dir,
                           cache_dir=tmp_path / "cache", normalize="window_unbiased", groups=groups)
    rec = recs[0]
    assert rec.n_channels("audio") == 250
    start, length = 10, 128
    rows = rec.window("audio", start, length)  # (128, 250), raw
    path = stimulus_targets.find_stimulus_audio(audio_dir)[rec.stimulus]
    audio, fs = features.load_audio(path)
    audio16 = features.resample(audio.astype(np.float64), fs, 16000)
    offset = split_offsets_of(groups, rec.subject, rec.stimulus)["val"][0]
    first = (offset + start) * 250
    np.testing.assert_allclose(rows.reshape(-1), audio16[first:first + length * 250], rtol=1e-5, atol=1e-6)
    # the window's own mel80 equals the stimulus mel80 frames away from the window's zero-padded edges
    window_mel = stimulus_targets.spectral_targets(torch.from_numpy(rows.reshape(1, -1)).double(), ("mel80",))["mel80"][0]
    stimulus_mel = rec.raw_window("mel80", start, length)  # (128, 80): the cached per-stimulus target
    np.testing.assert_allclose(window_mel[2:-2].numpy(), stimulus_mel[2:-2], rtol=1e-3,
                               atol=1e-4 * float(stimulus_mel.max()))
    # the EEG is z-scored per window with the n - 1 std; the audio is never normalised
    eeg = rec.window("eeg", start, length)
    np.testing.assert_allclose(eeg.std(axis=0, ddof=1), 1.0, rtol=1e-4)
    assert abs(float(rows.std()) - 1.0) > 0.1


# --------------------------------------------------------------------------- optimiser and averaging
def test_make_adam_passes_eps():
    from util.trainer import make_adam

    params = [torch.nn.Parameter(torch.zeros(3))]
    assert make_adam(params, 5e-4, (0.9, 0.98), eps=1e-9).param_groups[0]["eps"] == 1e-9
    assert make_adam(params, 5e-4, (0.9, 0.98)).param_groups[0]["eps"] == 1e-8


def test_average_checkpoints_is_key_by_key_with_weight_g_and_weight_v_apart(tmp_path):
    from util.training import average_checkpoints, save_checkpoint

    torch.manual_seed(0)
    states = []
    for k in range(3):
        conv = torch.nn.utils.weight_norm(torch.nn.Conv1d(3, 4, 3))
        with torch.no_grad():
            for p in conv.parameters():
                p.copy_(torch.randn_like(p))
        save_checkpoint(tmp_path / f"epoch_{k:04d}.pt", conv, {"model": {"type": "x"}}, task="task2")
        states.append({key: value.clone() for key, value in conv.state_dict().items()})
    average = average_checkpoints(sorted(tmp_path.glob("epoch_*.pt")))
    assert set(average) == {"bias", "weight_g", "weight_v"}
    for key in average:
        torch.testing.assert_close(average[key], sum(s[key] for s in states) / 3, rtol=1e-6, atol=1e-6)
    # g and v averaged apart: not the average of the effective weights
    effective = [s["weight_g"] * s["weight_v"] / s["weight_v"].norm(dim=(1, 2), keepdim=True) for s in states]
    folded = average["weight_g"] * average["weight_v"] / average["weight_v"].norm(dim=(1, 2), keepdim=True)
    assert (folded - sum(effective) / 3).abs().max() > 1e-3


TINY_RECIPE = [
    "model.layers=2", "model.dilation_cycle=2", "model.residual_channels=4", "model.skip_channels=4",
    "model.last_stage_channels=4", "model.attention_dim=4", "model.attention_heads=1", "model.attention_depth=1",
    "model.attention_chunk=64",
    "data.window_s=2.0", "data.sampling=random", "data.normalize=window_unbiased", "data.audio_targets=mixed",
    "data.batch_size=8", "data.val_window_s=2.0",
    "train.epochs=2", "train.mixup=2", "train.mixup_mode=halve", "train.adam_eps=1e-9", "train.lr=5e-4",
    "train.betas=[0.9, 0.98]", "train.checkpoint_every=1", "train.average_checkpoints=true", "train.patience=5",
    "loss.variant=published", "loss.pearson=1.0", "loss.l1=0.2", "loss.kl=1.0",
]


def test_tiny_published_recipe_run_trains_averages_and_predicts(task2_dataset, tmp_path):
    """The whole recipe through train.train on the tiny synthetic set: eps in the optimizer, mel80/mag
    from the mixed audio in the loss, averaged.pt = key-by-key mean of the periodic checkpoints, loadable
    by predict's loader and giving finite outputs."""
    import csv

    from task2_regression.predict import load_run_models
    from task2_regression.train import train
    from util import config as config_util
    from util.training import load_checkpoint

    config = config_util.load_config(REPO / "task2_regression" / "configs" / "cat_wavenet_small.yaml", TINY_RECIPE)
    run = tmp_path / "run"
    train(config, task2_dataset, run, cache_dir=tmp_path / "cache", say=lambda message: None)
    assert sorted(p.name for p in (tmp_path / "cache").glob("*_-_audio.npy"))  # the 16-kHz rows were cached
    last = load_checkpoint(run / "last.pt")
    assert last["config"]["train"]["adam_eps"] == 1e-9
    assert {group["eps"] for group in last["optimizer"]["param_groups"]} == {1e-9}
    assert {tuple(group["betas"]) for group in last["optimizer"]["param_groups"]} == {(0.9, 0.98)}
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert len(rows) == 2 and all(math.isfinite(float(row["loss_np_mag"])) for row in rows)
    assert all(float(row["loss_kl_mel"]) >= 0 for row in rows)
    paths = sorted((run / "checkpoints").glob("epoch_*.pt"))
    assert [p.name for p in paths] == ["epoch_0000.pt", "epoch_0001.pt"]
    averaged = load_checkpoint(run / "averaged.pt")
    weights = [load_checkpoint(p)["model"] for p in paths]
    assert set(averaged["model"]) == set(weights[0])
    for key, value in averaged["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (weights[0][key] + weights[1][key]) / 2, rtol=1e-6, atol=1e-7)
    model, cfg = load_run_models(run, "averaged")
    with torch.no_grad():
        out = model(torch.randn(1, 128, 64))
    assert set(out) == {"envelope", "mel", "mel80", "mag"} and all(torch.isfinite(v).all() for v in out.values())


# --------------------------------------------------------------------------- config keys
@pytest.mark.parametrize("overrides, words", [
    (["loss.variant=paper"], "loss.variant"),
    (["train.mixup_mode=both"], "train.mixup_mode"),
    (["data.audio_targets=live"], "data.audio_targets"),
    (["train.adam_eps=0"], "train.adam_eps"),
    (["data.normalize=recording", "data.audio_targets=mixed"], "data.audio_targets=mixed"),
])
def test_recipe_keys_are_checked_in_one_line_with_nothing_written(task2_dataset, tmp_path, capsys, overrides, words):
    from task2_regression import train
    from util.errors import run_cli

    out = tmp_path / "run"
    argv = ["--config", str(REPO / "task2_regression" / "configs" / "cat_wavenet_published_small.yaml"),
            "--data", str(task2_dataset), "--out", str(out), *overrides]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(train.main, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert not out.exists()


def test_published_configs_encode_the_recipe_and_the_kit_defaults_stay():
    from task2_regression.train import DEFAULTS_PATH, SCHEMA_PATH
    from util import config as config_util

    def resolved(name):
        return config_util.resolve(config_util.load_config(REPO / "task2_regression" / "configs" / name),
                                   config_util.load_defaults(DEFAULTS_PATH), config_util.load_schema(SCHEMA_PATH))

    paper = resolved("cat_wavenet_published.yaml")
    assert paper["data"]["normalize"] == "window_unbiased" and paper["data"]["audio_targets"] == "mixed"
    assert paper["data"]["batch_size"] == 24 and paper["data"]["sampling"] == "random" and paper["data"]["window_s"] == 30
    train_cfg = paper["train"]
    assert (train_cfg["lr"], list(train_cfg["betas"]), train_cfg["adam_eps"]) == (5e-4, [0.9, 0.98], 1e-9)
    assert (train_cfg["lr_step_epochs"], train_cfg["lr_gamma"], train_cfg["epochs"]) == (50, 0.9, 3000)
    assert (train_cfg["mixup"], train_cfg["mixup_mode"]) == (2, "halve")
    assert train_cfg["checkpoint_every"] == 40 and train_cfg["average_checkpoints"] is True
    assert paper["loss"] == {"pearson": 1.0, "l1": 0.2, "kl": 1.0, "variant": "published"}
    small = resolved("cat_wavenet_published_small.yaml")
    for section, key in (("data", "normalize"), ("data", "audio_targets"), ("train", "mixup_mode"),
                         ("train", "adam_eps"), ("train", "average_checkpoints"), ("loss", "variant")):
        assert small[section][key] == paper[section][key], key
    kit = config_util.load_defaults(DEFAULTS_PATH)
    assert (kit["data"]["normalize"], kit["data"]["audio_targets"], kit["train"]["mixup_mode"], kit["train"]["adam_eps"],
            kit["loss"]["variant"], kit["train"]["average_checkpoints"]) == ("recording", "cached", "keep", 1e-8, "kit", False)


def test_predict_zscores_test_segments_as_the_run_trained():
    """A window_unbiased run gets its test segments z-scored with the n - 1 std (the published torch.std)."""
    import numpy as np

    from task2_regression.predict import predict_segments

    seen = []

    class Spy(torch.nn.Module):
        def forward(self, eeg):  # (batch, time, 64)
            seen.append(eeg.clone())
            return {"mel": eeg[..., :10]}

    segment = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32) * 3 + 1
    for unbiased in (False, True):
        predict_segments(Spy(), "mel", [segment], unbiased=unbiased)
        std = seen[-1][0].double().std(dim=0, unbiased=unbiased)  # (64,)
        torch.testing.assert_close(std, torch.ones_like(std), atol=1e-5, rtol=0)
    assert not torch.allclose(seen[0], seen[1])  # the two scalings differ (by sqrt(40 / 39))
