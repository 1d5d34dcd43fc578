"""Torch Datasets that cut Task 2 recordings (``task2_regression.data.Recording``) into windows.

Every item is a dict of float32 tensors, time first::

    {"eeg": (window, 64), <target>: (window, C), ..., "subject": int, "recording": int}

``subject`` indexes ``dataset.subjects`` (sorted subject names of the recordings
given); ``recording`` indexes the ``recordings`` list given.

- ``FixedWindows(recordings, window, hop, features)``: every window at starts
  0, hop, 2*hop, ... that fits entirely inside the recording (the tail shorter
  than a window is dropped).
- ``RandomWindowPerRecording(recordings, window, features, seed)``: one window
  per recording per epoch at a random start; the start depends only on
  (seed, epoch, recording index), so ``set_epoch(e)`` makes epochs reproducible
  and independent of the DataLoader worker layout.

Recordings shorter than one window are skipped with a warning naming them (not
padded: padding would feed the Pearson loss constant stretches); a subject whose
every recording is shorter than one window is refused (EEGKitError naming the
subject, the window and each recording's length) instead of silently vanishing.
``iter_whole_recordings`` yields whole recordings for evaluation.
Window and hop are in samples; ``seconds_to_samples(window_s, fs)`` converts.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from util.errors import EEGKitError
from util.features import FS_TASK2


def seconds_to_samples(seconds: float, fs: int = FS_TASK2, name: str = "window") -> int:
    """``round(seconds * fs)``; a NaN/Inf/negative duration is one EEGKitError line naming ``name``."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        raise EEGKitError(f"{name} {seconds!r}: not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise EEGKitError(f"{name} {seconds}: must be a finite, non-negative number of seconds")
    return int(round(value * fs))


def _where(recordings, subject: str) -> str:
    """The EEG file of one of ``subject``'s recordings (for messages), or the subject name."""
    for rec in recordings:
        if rec.subject == subject:
            try:
                return str(rec.path("eeg"))
            except (KeyError, AttributeError):
                return str(subject)
    return str(subject)


class _RecordingWindows(Dataset):
    """Shared bookkeeping: usable recordings, subject ids and item assembly."""

    def __init__(self, recordings, window: int, features):
        if window <= 0:
            raise ValueError(f"window must be a positive number of samples, got {window}")
        self.recordings = list(recordings)
        self.window = int(window)
        self.features = tuple(features)
        self.subjects = sorted({rec.subject for rec in self.recordings})
        self._subject_id = {name: i for i, name in enumerate(self.subjects)}
        self.usable = []  # indices into self.recordings long enough for one window
        too_short: dict = {}  # subject -> [recording text] of recordings shorter than a window
        for index, rec in enumerate(self.recordings):
            missing = [f for f in self.features if f not in rec.sources]
            if missing:
                raise KeyError(f"recording {rec.key} lacks features {missing}")
            if rec.n_samples < self.window:
                too_short.setdefault(rec.subject, []).append(
                    f"{rec.split}/{rec.stimulus} {rec.n_samples} samples ({rec.n_samples / FS_TASK2:g} s)")
            else:
                self.usable.append(index)
        usable_subjects = {self.recordings[i].subject for i in self.usable}
        for subject, texts in too_short.items():
            if subject not in usable_subjects:  # the whole subject would vanish without a word
                raise EEGKitError(
                    f"{_where(self.recordings, subject)}: every recording of {subject} is shorter than the window of "
                    f"{self.window} samples ({self.window / FS_TASK2:g} s): {'; '.join(texts)}")
            warnings.warn(f"{subject}: skipping recordings shorter than the window of {self.window} samples: "
                          f"{'; '.join(texts)}")

    def _item(self, rec_index: int, start: int) -> dict:
        rec = self.recordings[rec_index]
        item = {name: torch.from_numpy(rec.window(name, start, self.window)) for name in self.features}
        item["subject"] = self._subject_id[rec.subject]
        item["recording"] = rec_index
        return item


class FixedWindows(_RecordingWindows):
    """All windows of ``window`` samples at a fixed ``hop`` over every recording."""

    def __init__(self, recordings, window: int, hop: int, features=("eeg", "mel")):
        super().__init__(recordings, window, features)
        if hop <= 0:
            raise ValueError(f"hop must be a positive number of samples, got {hop}")
        self.hop = int(hop)
        rec_index, starts = [], []
        for index in self.usable:
            n_windows = (self.recordings[index].n_samples - self.window) // self.hop + 1
            rec_index.append(np.full(n_windows, index, dtype=np.int64))
            starts.append(np.arange(n_windows, dtype=np.int64) * self.hop)
        # compact int arrays, not per-window Python objects: memory stays small for big datasets
        self._rec_index = np.concatenate(rec_index) if rec_index else np.zeros(0, dtype=np.int64)
        self._starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._starts)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        return self._item(int(self._rec_index[index]), int(self._starts[index]))


class RandomWindowPerRecording(_RecordingWindows):
    """One window per usable recording per epoch, at a start drawn from (seed, epoch, recording)."""

    def __init__(self, recordings, window: int, features=("eeg", "mel"), seed: int = 0):
        super().__init__(recordings, window, features)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def start_of(self, index: int) -> int:
        rec_index = self.usable[index]
        max_start = self.recordings[rec_index].n_samples - self.window
        rng = np.random.default_rng([self.seed, self.epoch, rec_index])
        return int(rng.integers(0, max_start + 1))

    def __len__(self) -> int:
        return len(self.usable)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        return self._item(self.usable[index], self.start_of(index))


def iter_whole_recordings(recordings, features=("eeg", "mel")):
    """Yield ``(recording, {feature: float32 (n_samples, C) array})`` one recording at a time."""
    for rec in recordings:
        yield rec, {name: rec.array(name) for name in features}
