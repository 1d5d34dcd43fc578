"""Tests for util.windowing: fixed and random windows over split_data recordings."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from task2_regression.data import load_recordings
from util.windowing import FixedWindows, RandomWindowPerRecording, iter_whole_recordings, seconds_to_samples


def make_split_dir(root, lengths, seed=0):
    """One train recording per (subject, length): eeg (n,64) and mel (n,10) random."""
    rng = np.random.default_rng(seed)
    split_dir = root / "split_data"
    split_dir.mkdir()
    for index, n in enumerate(lengths):
        subject = f"sub-{index % 2 + 1:03d}"
        stimulus = f"audiobook_{index}_1"
        np.save(split_dir / f"train_-_{subject}_-_{stimulus}_-_eeg.npy", rng.normal(size=(n, 64)))
        np.save(split_dir / f"train_-_{subject}_-_{stimulus}_-_mel.npy", rng.random((n, 10)).astype(np.float32))
    return split_dir


@pytest.fixture
def recordings(tmp_path):
    return load_recordings(make_split_dir(tmp_path, [100, 64, 20, 75]), "train")


def test_fixed_windows_count_content_and_skip(recordings):
    with pytest.warns(UserWarning, match="skipping"):
        dataset = FixedWindows(recordings, window=32, hop=16, features=("eeg", "mel"))
    n_samples = [r.n_samples for r in recordings]
    expected = sum((n - 32) // 16 + 1 for n in n_samples if n >= 32)
    assert len(dataset) == expected == 5 + 3 + 3
    assert dataset.subjects == ["sub-001", "sub-002"]
    item = dataset[-1]
    rec = recordings[item["recording"]]
    assert item["eeg"].dtype == torch.float32 and item["eeg"].shape == (32, 64)
    assert item["mel"].shape == (32, 10)
    last_start = (rec.n_samples - 32) // 16 * 16
    np.testing.assert_array_equal(item["eeg"].numpy(), rec.window("eeg", last_start, 32))
    assert item["subject"] == dataset.subjects.index(rec.subject)
    batch = next(iter(DataLoader(dataset, batch_size=4, shuffle=False)))
    assert batch["eeg"].shape == (4, 32, 64) and batch["subject"].shape == (4,)


def test_random_window_per_recording_is_reproducible(recordings):
    with pytest.warns(UserWarning):
        dataset = RandomWindowPerRecording(recordings, window=30, features=("eeg",), seed=3)
    assert len(dataset) == 3
    dataset.set_epoch(0)
    starts0 = [dataset.start_of(i) for i in range(len(dataset))]
    first = dataset[0]["eeg"].clone()
    dataset.set_epoch(1)
    starts1 = [dataset.start_of(i) for i in range(len(dataset))]
    dataset.set_epoch(0)
    assert [dataset.start_of(i) for i in range(len(dataset))] == starts0
    torch.testing.assert_close(dataset[0]["eeg"], first)
    assert starts0 != starts1
    many = {RandomWindowPerRecording(recordings[:1], 30, ("eeg",), seed=s).start_of(0) for s in range(40)}
    assert min(many) >= 0 and max(many) <= recordings[0].n_samples - 30 and len(many) > 10


def test_iter_whole_recordings_and_seconds(recordings):
    assert seconds_to_samples(5.0) == 320 and seconds_to_samples(0.5, fs=128) == 64
    for rec, arrays in iter_whole_recordings(recordings[:2], features=("eeg", "mel")):
        assert arrays["eeg"].shape == (rec.n_samples, 64) and arrays["mel"].shape == (rec.n_samples, 10)
    with pytest.raises(ValueError):
        FixedWindows(recordings, window=0, hop=1)
