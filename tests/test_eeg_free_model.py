"""A model that ignores its EEG scores well on a target that repeats across segments; the controls flag it.

The target of every segment is the same 5-s pattern plus a little noise (as when every test segment
carries the same stimulus). The model outputs a fixed pattern learned from training segments (their
mean) whatever the EEG. Its score is far above 0, its noise-EEG control is the same score, the
circular-shift null (shifts of >= 2 s, not multiples of the segment) is near 0, so the report must
warn "the score contains an EEG-independent part" and print it. A decoder that reads its target from
the EEG on the same data must not be warned about.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.controls import EEG_INDEPENDENT_WARNING
from task2_regression.evaluate import format_within, score_with_controls

FS = 64
SEGMENT = 5 * FS
BANDS = 10


class FixedPattern(torch.nn.Module):
    """Outputs its learned (segment, bands) pattern for every input: eeg (batch, time, 64) is ignored."""

    def __init__(self, pattern: np.ndarray):
        super().__init__()
        self.pattern = torch.nn.Parameter(torch.as_tensor(pattern, dtype=torch.float32))

    def forward(self, eeg):
        return {"mel": self.pattern[None, : eeg.shape[1]].expand(eeg.shape[0], -1, -1)}


class ReadsEEG(torch.nn.Module):
    """A genuine decoder: the target sits in the first 10 EEG channels."""

    def forward(self, eeg):
        return {"mel": eeg[..., :BANDS]}


def _groups(rng, eeg_carries_target: bool):
    pattern = rng.standard_normal((SEGMENT, BANDS))  # the one repeated stimulus
    groups = []
    for subject in ("sub-001", "sub-002"):
        for stimulus in ("story_a", "story_b"):
            n = 6
            labels = pattern[None] + 0.3 * rng.standard_normal((n, SEGMENT, BANDS))  # (n, segment, bands)
            eeg = rng.standard_normal((n, SEGMENT, 64)).astype(np.float32)
            if eeg_carries_target:
                eeg[..., :BANDS] = labels + 0.5 * rng.standard_normal(labels.shape)
            groups.append({"subject": subject, "stimulus": stimulus,
                           "ids": [f"{subject}_{stimulus}_{k}" for k in range(n)], "eeg": eeg,
                           "labels": labels.astype(np.float32)})
    return pattern, groups


def test_eeg_free_fixed_pattern_scores_high_and_is_flagged():
    rng = np.random.default_rng(0)
    pattern, groups = _groups(rng, eeg_carries_target=False)
    training_segments = pattern[None] + 0.3 * rng.standard_normal((20, SEGMENT, BANDS))
    model = FixedPattern(training_segments.mean(axis=0)).eval()  # "learned": the mean training target
    with torch.no_grad():
        report = score_with_controls(model, "mel", groups, FS, n_shifts=100, seed=0)
    assert report["score"] > 0.9  # well above 0 with no EEG at all
    noise = report["controls"]["noise_eeg"]["score"]
    assert noise == pytest.approx(report["score"], abs=1e-6)  # the whole score survives noise EEG
    assert report["score_above_noise"] == pytest.approx(0.0, abs=1e-6)
    shift = report["controls"]["circular_shift"]
    assert shift["p95"] < 0.2 and noise > shift["p95"]
    assert any(w.startswith(EEG_INDEPENDENT_WARNING) for w in report["warnings"])
    for subject, block in report["per_subject_controls"].items():
        assert any(w.startswith(EEG_INDEPENDENT_WARNING) for w in block["warnings"]), subject
    assert f"WARNING: {EEG_INDEPENDENT_WARNING}" in format_within(report)


def test_a_decoder_that_reads_the_eeg_is_not_flagged():
    rng = np.random.default_rng(1)
    _, groups = _groups(rng, eeg_carries_target=True)
    with torch.no_grad():
        report = score_with_controls(ReadsEEG().eval(), "mel", groups, FS, n_shifts=100, seed=0)
    assert report["score"] > 0.8
    assert abs(report["controls"]["noise_eeg"]["score"]) < 0.05
    assert report["score_above_noise"] > 0.8
    assert not any(w.startswith(EEG_INDEPENDENT_WARNING) for w in report["warnings"])
    assert report["significance"]["significant"] == ["sub-001", "sub-002"]  # Holm over 2: 2/101 < 0.05
    # mismatched EEG: the other story's EEG carries the same repeated pattern, so it scores too
    assert report["controls"]["mismatched_eeg"]["score"] > 0.5


class _Windows:
    """A validation set of (segment, 64) EEG windows and their repeating targets."""

    def __init__(self, groups):
        self.items = [{"eeg": torch.from_numpy(eeg), "mel": torch.from_numpy(label)}
                      for g in groups for eeg, label in zip(g["eeg"], g["labels"])]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def test_validation_logs_the_noise_control_and_above_noise_does_not_reward_the_fixed_pattern():
    from task2_regression.train import SELECT_ON, validation_scores
    from util.distributed import DistInfo

    rng = np.random.default_rng(2)
    pattern, groups = _groups(rng, eeg_carries_target=False)
    info = DistInfo(0, 1, 0, torch.device("cpu"))
    fixed = validation_scores(FixedPattern(pattern).eval(), _Windows(groups), "mel", info, seed=0)
    assert fixed["val_pearson"] > 0.9 and fixed["val_noise_eeg"] == pytest.approx(fixed["val_pearson"], abs=1e-6)
    assert abs(fixed["val_above_noise"]) < 1e-6  # selection on above_noise gives it nothing
    _, groups = _groups(np.random.default_rng(3), eeg_carries_target=True)
    real = validation_scores(ReadsEEG().eval(), _Windows(groups), "mel", info, seed=0)
    assert real["val_above_noise"] > fixed["val_above_noise"] + 0.5
    assert SELECT_ON == {"score": "val_pearson", "above_noise": "val_above_noise"}


def test_select_on_is_validated(tmp_path):
    from task2_regression.train import resolve_config
    from util.errors import EEGKitError

    config = {"target": "mel", "model": {"type": "linear"}, "train": {"select_on": "val"}}
    with pytest.raises(EEGKitError, match="train.select_on must be one of"):
        resolve_config(config, tmp_path, say=lambda m: None)
    config["train"]["select_on"] = "above_noise"
    assert resolve_config(config, tmp_path, say=lambda m: None)["train"]["select_on"] == "above_noise"
