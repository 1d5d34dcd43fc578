"""A Task 2 training batch from the window loader to the loss: mixup, audio-derived targets, z-score.

`make_batch_transform(cfg, device)` returns ``transform(batch, generator) -> batch`` used by
``task2_regression.train.make_step``; `loaded_features(cfg)` names the features the training windows
must carry. Config keys (``task2_regression/configs/defaults.yaml``):

- ``train.mixup`` (0, 1, 2 passes) and ``train.mixup_mode``: ``keep`` = `util.mixup.cross_subject_mixup`
  (the kit's: pairs of different subjects mixed both ways, batch size kept) or ``halve`` =
  `util.mixup.halving_mixup` (the published CAT-WaveNet's: first half x second half, the batch halves
  on every pass). The same ``lam`` mixes the EEG, every loaded target and the audio.
- ``data.audio_targets``: ``cached`` = mel80/mag are per-stimulus cached targets, mixed like any other;
  ``mixed`` = the windows carry their 16-kHz stimulus audio (feature ``audio``, ``(time, 250)`` rows)
  instead, and mel80/mag are computed AFTER mixing from the mixed audio
  (`task2_regression.stimulus_targets.spectral_targets`), then z-scored per window.
- ``data.normalize: window_unbiased``: after mixing, the EEG and every target are z-scored per window
  over time with the unbiased std (``torch.std``), as published. (``window`` and ``recording`` leave
  the mixed batch as it is, the kit's behaviour.)

Shapes: eeg ``(batch, time, 64)``, targets ``(batch, time, bands)``, audio ``(batch, time, 250)``; with
``halve`` the output batch is ``batch // 2**passes``.
"""
from __future__ import annotations

from typing import Callable

import torch

from task2_regression import stimulus_targets
from util.errors import EEGKitError

AUDIO = stimulus_targets.AUDIO_FEATURE
AUDIO_TARGETS = stimulus_targets.TARGET_NAMES  # mel80, mag
_EPS = 1e-8


def audio_mode(cfg: dict) -> bool:
    """True when mel80/mag are trained and computed from the mixed window audio (``data.audio_targets: mixed``)."""
    return cfg["data"]["audio_targets"] == "mixed" and any(t in AUDIO_TARGETS for t in cfg["targets"])


def check_config(cfg: dict) -> None:
    """Refuse combinations this transform cannot honour (one config line each)."""
    if cfg["data"]["audio_targets"] == "mixed" and cfg["data"]["normalize"] not in ("window", "window_unbiased"):
        raise EEGKitError(f"config: data.audio_targets=mixed computes mel80/mag per window, so it needs "
                          f"data.normalize window or window_unbiased (got {cfg['data']['normalize']!r})")


def loaded_features(cfg: dict) -> tuple:
    """The features a training window carries: eeg, the targets, and ``audio`` in place of mel80/mag in audio mode."""
    targets = list(cfg["targets"])
    if not audio_mode(cfg):
        return ("eeg", *targets)
    return ("eeg", *[t for t in targets if t not in AUDIO_TARGETS], AUDIO)


def zscore_windows(x: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Z-score ``(batch, time, C)`` over time per window and channel (``torch.std``; constant -> 0)."""
    mean = x.mean(dim=1, keepdim=True)
    std = x.std(dim=1, keepdim=True, unbiased=unbiased and x.shape[1] > 1)
    return (x - mean) / std.clamp_min(_EPS)


def make_batch_transform(cfg: dict, device) -> Callable:
    """``transform(batch, generator) -> {"eeg", target: ...}`` on ``device`` (module docstring).

    ``batch``: the collated windows ``{feature: (batch, time, C), "subject": (batch,), ...}`` of
    `loaded_features`; ``generator`` draws the mixup pairs and lambdas (None: the global stream).
    """
    from util.mixup import cross_subject_mixup, halving_mixup

    check_config(cfg)
    targets = list(cfg["targets"])
    features = list(loaded_features(cfg))
    computed = [t for t in targets if t in AUDIO_TARGETS] if audio_mode(cfg) else []
    passes, mode = int(cfg["train"]["mixup"]), cfg["train"]["mixup_mode"]
    normalize = cfg["data"]["normalize"]
    unbiased = normalize == "window_unbiased"

    def transform(batch: dict, generator: torch.Generator | None = None) -> dict:
        if passes:
            mix = halving_mixup if mode == "halve" else cross_subject_mixup
            batch = mix(batch, features, times=passes, generator=generator)
        out = {key: batch[key].to(device, torch.float32) for key in features}
        if computed:
            audio = out.pop(AUDIO)  # (batch, time, 250)
            spectra = stimulus_targets.spectral_targets(audio.reshape(audio.shape[0], -1), computed)
            for name in computed:  # raw power spectra: z-scored per window like the loaded targets
                out[name] = spectra[name] if unbiased else zscore_windows(spectra[name], False)  # (batch, time, bands)
        if unbiased:  # the published recipe: EEG and every target z-scored per window after mixing
            out = {key: zscore_windows(value, True) for key, value in out.items()}
        return out

    return transform
