"""Task 1 data: imposter tables, the windows dataset's invariants, and the tiny split_data writer the Task 1 tests share.

The invariants of ../shared/reference/task1_match_mismatch.md section 2: every EEG window is presented
with its matched segment at each of the K positions; every imposter is the matched segment of some
window of the same recording; imposters do not overlap the matched segment.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from task1_match_mismatch.data import (ArrayRecording, MatchMismatchWindows, draw_imposters, grid_gap,
                                       min_windows)
from util.errors import EEGKitError

FS = 64
LAG = 5  # frames: the tiny dataset's EEG follows its stimulus by 5 frames (78 ms)


# --------------------------------------------------------------------------- the shared tiny dataset
def _smooth_envelope(rng, n: int) -> np.ndarray:
    """A positive, speech-like envelope (n,): low-passed noise (~4 Hz) rectified plus a floor."""
    noise = rng.standard_normal(n + 64)
    kernel = np.hanning(16)
    env = np.convolve(noise, kernel / kernel.sum(), mode="same")[:n]
    return np.abs(env) + 0.05


def write_split_data(root: Path, subjects=("sub-001", "sub-002", "sub-003"), stimuli=("story_a", "story_b"),
                     seconds=(60, 20, 30), snr: float = 1.0, seed: int = 0) -> Path:
    """A tiny split_data folder: every (subject, story) EEG is 64 channels of the story's envelope, 5 frames
    later, times a per-subject spatial pattern, plus Gaussian noise (``snr``: pattern power / noise power).

    ``seconds``: lengths of the train, val and test parts (consecutive pieces of one recording).
    Envelope (T, 1) and mel (T, 10: the envelope times band gains, plus a little noise) are written too.
    """
    rng = np.random.default_rng(seed)
    folder = root / "derivatives" / "split_data"
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(seconds) * FS
    envelopes = {name: _smooth_envelope(rng, total + LAG) for name in stimuli}
    for subject in subjects:
        pattern = rng.standard_normal(64)  # (64,)
        for name in stimuli:
            env = envelopes[name]
            driven = env[:total]  # the stimulus at t - LAG drives the EEG at t
            eeg = np.outer(np.concatenate([np.zeros(LAG), driven[:-LAG]]), pattern)  # (T, 64)
            eeg = eeg / eeg.std() * np.sqrt(snr) + rng.standard_normal(eeg.shape)
            envelope = env[:total, None]  # (T, 1)
            mel = envelope * np.linspace(1.0, 0.4, 10)[None, :] + 0.01 * rng.standard_normal((total, 10))  # (T, 10)
            start = 0
            for split, length in zip(("train", "val", "test"), seconds):
                part = slice(start, start + length * FS)
                for feature, array in (("eeg", eeg), ("envelope", envelope), ("mel", mel)):
                    np.save(folder / f"{split}_-_{subject}_-_{name}_-_{feature}.npy", array[part].astype(np.float32))
                start += length * FS
    return root


@pytest.fixture(scope="module")
def tiny_split_data(tmp_path_factory) -> Path:
    return write_split_data(tmp_path_factory.mktemp("task1_data"))


# --------------------------------------------------------------------------- imposter tables
@pytest.mark.parametrize("n_windows, gap, n_imposters", [(5, 1, 4), (13, 5, 4), (14, 5, 4), (18, 5, 8), (9, 1, 8),
                                                         (40, 3, 2), (300, 5, 8)])
def test_imposter_table_is_n_permutations_without_overlap(n_windows, gap, n_imposters):
    table = draw_imposters(n_windows, gap, n_imposters, np.random.default_rng(0))
    assert table.shape == (n_windows, n_imposters)
    for column in table.T:  # every window is an imposter exactly once per column: n_imposters times in all
        assert sorted(column) == list(range(n_windows))
    rows = np.arange(n_windows)[:, None]
    assert (np.abs(rows - table) >= gap).all()  # no imposter overlaps its window
    assert all(len(set(row)) == n_imposters for row in table)  # distinct imposters per window


def test_imposter_table_needs_enough_windows():
    assert min_windows(320, 64, 4) == 2 * 5 + 4 - 1 == 13
    assert grid_gap(320, 320) == 1 and grid_gap(192, 64) == 3 and grid_gap(100, 64) == 2
    with pytest.raises(ValueError, match="too few"):
        draw_imposters(12, 5, 4, np.random.default_rng(0))


# --------------------------------------------------------------------------- the dataset
def _ramp_recordings(lengths, subject_of=lambda i: f"sub-{i:03d}"):
    """Recordings whose stimulus value at frame t is 1000 * recording + t (the window start is readable)."""
    recs = []
    for i, n in enumerate(lengths):
        ramp = (1000.0 * i + np.arange(n, dtype=np.float64))[:, None]  # (n, 1)
        recs.append(ArrayRecording(subject_of(i), f"story{i}", {"eeg": np.tile(ramp, (1, 64)), "envelope": ramp},
                                   per_window_zscore=False))
    return recs


def test_every_window_at_every_position_imposters_are_matched_windows_of_the_same_recording():
    window, hop, n_imposters = 20, 5, 4
    recs = _ramp_recordings([200, 137, 90])
    dataset = MatchMismatchWindows(recs, "envelope", window, hop, n_imposters, seed=3)
    k = n_imposters + 1
    assert dataset.n_candidates == k and len(dataset) == dataset.total_windows * k
    seen = {}
    for index in range(len(dataset)):
        info, item = dataset.trial(index), dataset[index]
        rec = info["recording"]
        starts = info["candidate_starts"]
        assert item["stimuli"].shape == (k, window, 1) and item["eeg"].shape == (window, 64)
        # the tensors are the windows named: stimulus value = 1000 * recording + frame
        assert [float(s[0, 0]) for s in item["stimuli"]] == [1000.0 * rec + s for s in starts]
        assert float(item["eeg"][0, 0]) == 1000.0 * rec + info["eeg_start"]
        assert starts[info["label"]] == info["eeg_start"] and item["label"] == info["label"]
        n_windows = (recs[rec].n_samples - window) // hop + 1
        matched_starts = {w * hop for w in range(n_windows)}
        for position, start in enumerate(starts):
            if position == info["label"]:
                continue
            assert start in matched_starts  # every imposter is the matched segment of a window of this recording
            assert abs(start - info["eeg_start"]) >= window  # and does not overlap the matched one
        seen.setdefault((rec, info["eeg_start"]), []).append(info["label"])
    assert all(sorted(positions) == list(range(k)) for positions in seen.values())  # each window at each position
    assert len(seen) == dataset.total_windows


def test_imposters_balanced_and_redrawn_per_epoch():
    recs = _ramp_recordings([400])
    dataset = MatchMismatchWindows(recs, "envelope", 20, 5, 3, seed=0, all_positions=False)
    first = dataset.imposters(0).copy()
    counts = np.bincount(first.reshape(-1), minlength=dataset.total_windows)
    assert (counts == 3).all()  # every window is an imposter exactly n_imposters times
    dataset.set_epoch(1)
    assert not np.array_equal(dataset.imposters(0), first)
    dataset.set_epoch(0)
    assert np.array_equal(dataset.imposters(0), first)  # reproducible from (seed, epoch, recording)


def test_evaluation_trials_one_per_window_positions_seeded():
    recs = _ramp_recordings([2000])
    dataset = MatchMismatchWindows(recs, "envelope", 20, 20, 4, seed=5, all_positions=False)
    assert len(dataset) == dataset.total_windows == 100
    labels = [dataset.trial(i)["label"] for i in range(len(dataset))]
    again = MatchMismatchWindows(recs, "envelope", 20, 20, 4, seed=5, all_positions=False)
    assert labels == [again.trial(i)["label"] for i in range(len(again))]
    assert np.bincount(labels, minlength=5).min() >= 10  # every position used (100 draws of 5)


def test_a_stimulus_only_score_sits_at_chance():
    """A score that reads only the stimuli (here: the latest start wins, i.e. a time trend of the story)
    is at chance, because every window is an imposter as often as any other."""
    recs = _ramp_recordings([6000, 6000, 6000])
    dataset = MatchMismatchWindows(recs, "envelope", 20, 20, 4, seed=1, all_positions=False)
    right = sum(int(np.argmax(dataset.trial(i)["candidate_starts"]) == dataset.trial(i)["label"])
                for i in range(len(dataset)))
    n = len(dataset)
    assert n == 900
    assert abs(right / n - 0.2) < 0.05, right / n  # chance 1/5; a cyclic design would give up to 1 - 2 gap / N


def test_short_recordings_skipped_with_a_warning_and_none_left_is_one_error():
    recs = _ramp_recordings([200, 30])
    with pytest.warns(UserWarning, match="skipping 1 recording"):
        dataset = MatchMismatchWindows(recs, "envelope", 20, 5, 4, where="somewhere")
    assert dataset.usable == [0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(EEGKitError, match="somewhere: no recording is long enough"):
            MatchMismatchWindows(_ramp_recordings([60]), "envelope", 20, 5, 8, where="somewhere")


def test_load_split_z_scores_each_recording_with_its_train_statistics(tiny_split_data):
    from task1_match_mismatch.data import load_split

    cfg = {"data": {"feature": "envelope", "subjects": [], "holdout_subjects": []}}
    train = load_split(cfg, tiny_split_data, "train")
    test = load_split(cfg, tiny_split_data, "test")
    assert len(train) == len(test) == 6 and {r.subject for r in test} == {"sub-001", "sub-002", "sub-003"}
    whole = train[0].array("envelope")  # (T, 1)
    assert abs(float(whole.mean())) < 1e-4 and abs(float(whole.std()) - 1) < 1e-3
    raw = np.load(tiny_split_data / "derivatives" / "split_data" / "train_-_sub-001_-_story_a_-_envelope.npy")
    mean, std = raw.mean(), raw.std()
    expected = (np.load(tiny_split_data / "derivatives" / "split_data" / "test_-_sub-001_-_story_a_-_envelope.npy")
                - mean) / std
    np.testing.assert_allclose(test[0].array("envelope"), expected, rtol=1e-4, atol=1e-4)
