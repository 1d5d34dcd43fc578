"""Task 1 (match-mismatch) data: EEG windows of split_data recordings, each with K stimulus candidates.

Facts: `../shared/reference/task1_match_mismatch.md` section 2. The files are Task 2's
``split_data`` (`util.split_data`); every recording ``(split, subject, stimulus)`` is z-scored per
channel/band with its train part's statistics (``normalize="recording"``, as Task 2).

Windows and candidates (`MatchMismatchWindows`):
- Each recording is cut into windows of ``window`` frames at starts 0, hop, 2 hop, ... (training:
  ``data.window_s`` 5 s, ``data.hop_s`` 1 s). Window i's EEG is the trial's EEG; its stimulus
  window is the matched candidate.
- The ``n_imposters`` (``data.n_imposters``, 4) imposters of window i are the stimulus windows of
  other windows **of the same recording**, never overlapping window i (their starts differ by at
  least one window length). So every imposter is the matched segment of some window, and a model
  cannot learn which stimulus windows are ever matched.
- Imposters come from ``n_imposters`` random permutations of the recording's windows
  (`draw_imposters`): each window is the imposter of exactly ``n_imposters`` windows and the matched
  segment of one, so no stimulus window is more often an imposter than another (a stimulus-only
  score sits at chance on average, whatever it measures). The permutations are redrawn every epoch
  (``set_epoch``) from ``(seed, epoch, recording)``.
- ``all_positions=True`` (training and validation): every window is presented ``K = n_imposters + 1``
  times, with the matched candidate at each position 0..K-1 in turn (label = that position), so a
  model cannot learn a position. ``all_positions=False`` (evaluation): every window is one trial,
  its matched candidate at a position drawn from ``(seed, recording, window)``.

An item is ``{"eeg": (window, 64), "stimuli": (K, window, bands), "label": int, "subject": int,
"recording": int, "window": int}`` (float32 tensors, time first); ``trial(index)`` gives the same
trial's names and starts (for reports and tests).

Recordings too short for a window and its imposters (``min_windows``) are skipped with a warning
naming them; when none is left, one EEGKitError line names the folder and the lengths (and ``hint``:
the caller's settings to change).
`ArrayRecording` serves in-memory arrays with the same ``window()`` interface (held-out subjects:
whole recordings, each window z-scored on its own, as on the test set).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from util.errors import EEGKitError
from util.features import FS_TASK2
from util.split_data import load_recordings, used_subjects, zscore_time

FEATURES = ("envelope", "mel")  # the stimulus features of split_data (data.feature)
REPAIR_SWEEPS = 100  # swap passes that make a random permutation valid before the cyclic fallback


# --------------------------------------------------------------------------- recordings
def load_split(cfg: dict, data_dir, split: str, groups: dict | None = None, subjects=None) -> list:
    """The split's recordings (EEG + ``data.feature``), z-scored with each recording's train statistics.

    ``subjects``: which subjects (default: the run's, ``data.subjects`` minus ``data.holdout_subjects``).
    """
    from util.split_data import discover, resolve_split_dir

    groups = groups if groups is not None else discover(resolve_split_dir(data_dir))
    chosen = used_subjects(cfg, groups) if subjects is None else list(subjects)
    return load_recordings(data_dir, split, features=("eeg", cfg["data"]["feature"]), normalize="recording",
                           groups=groups, subjects=chosen)


@dataclass
class ArrayRecording:
    """An in-memory recording with `util.split_data.Recording`'s ``window`` interface.

    ``arrays``: ``{feature: float32 (T, C)}``; ``per_window_zscore``: every window is z-scored over
    time on its own (unseen subjects, as `task1_match_mismatch.predict` does on the test set).
    """

    subject: str
    stimulus: str
    arrays: dict
    per_window_zscore: bool = True
    split: str = "whole"

    @property
    def n_samples(self) -> int:
        return min(len(a) for a in self.arrays.values())

    @property
    def key(self) -> tuple:
        return (self.split, self.subject, self.stimulus)

    def window(self, name: str, start: int, length: int) -> np.ndarray:
        x = np.asarray(self.arrays[name][start:start + length], dtype=np.float32)  # (length, C)
        if len(x) != length:
            raise IndexError(f"window {start}..{start + length} outside recording of {self.n_samples} samples")
        return zscore_time(x) if self.per_window_zscore else x


# --------------------------------------------------------------------------- imposters
def grid_gap(window: int, hop: int) -> int:
    """Grid steps between two windows that do not overlap: ceil(window / hop)."""
    return int(math.ceil(window / hop))


def min_windows(window: int, hop: int, n_imposters: int) -> int:
    """Fewest windows a recording needs so that every window has ``n_imposters`` non-overlapping ones."""
    return 2 * grid_gap(window, hop) + int(n_imposters) - 1


def _bad_rows(perm: np.ndarray, earlier: np.ndarray, gap: int) -> np.ndarray:
    """Rows i whose candidate perm[i] overlaps window i or repeats one of ``earlier[i]`` (N, j)."""
    rows = np.arange(len(perm))
    bad = np.abs(rows - perm) < gap
    if earlier.shape[1]:
        bad |= (earlier == perm[:, None]).any(axis=1)
    return np.flatnonzero(bad)


def draw_imposters(n_windows: int, gap: int, n_imposters: int, rng: np.random.Generator) -> np.ndarray:
    """``(n_windows, n_imposters)`` window indices: column j is a permutation of the windows.

    Row i holds distinct windows at least ``gap`` grid steps from i (no overlap with window i).
    Each column starts as a random permutation and is repaired by swaps. If that fails (very short
    recordings), every column is a cyclic shift ``(i + d) % n_windows`` with distinct random
    ``gap <= d <= n_windows - gap``, valid by construction. Needs ``n_windows >= 2 gap + n_imposters - 1``
    (`min_windows`).
    """
    if n_windows < 2 * gap + n_imposters - 1:
        raise ValueError(f"{n_windows} windows are too few for {n_imposters} non-overlapping imposters "
                         f"(need {2 * gap + n_imposters - 1})")
    table = np.empty((n_windows, n_imposters), dtype=np.int64)
    for j in range(n_imposters):
        perm = rng.permutation(n_windows)
        for _ in range(REPAIR_SWEEPS):
            bad = _bad_rows(perm, table[:, :j], gap)
            if not len(bad):
                break
            for i in bad:  # swap with a random row when both rows become valid
                for k in rng.integers(0, n_windows, size=8):
                    a, b = perm[k], perm[i]
                    if abs(i - a) >= gap and a not in table[i, :j] and abs(k - b) >= gap and b not in table[k, :j]:
                        perm[i], perm[k] = a, b
                        break
        if len(_bad_rows(perm, table[:, :j], gap)):
            shifts = rng.choice(np.arange(gap, n_windows - gap + 1), size=n_imposters, replace=False)
            return (np.arange(n_windows)[:, None] + shifts[None, :]) % n_windows
        table[:, j] = perm
    return table


# --------------------------------------------------------------------------- the dataset
class MatchMismatchWindows(Dataset):
    """EEG windows with K = n_imposters + 1 stimulus candidates (see the module docstring)."""

    def __init__(self, recordings, feature: str, window: int, hop: int, n_imposters: int, seed: int = 0,
                 all_positions: bool = True, where: str | Path = "data", hint: str = ""):
        if feature not in FEATURES:
            raise ValueError(f"feature must be one of {FEATURES}, got {feature!r}")
        if window < 1 or hop < 1 or n_imposters < 1:
            raise ValueError(f"window, hop and n_imposters must be >= 1, got {window}, {hop}, {n_imposters}")
        self.recordings = list(recordings)
        self.feature, self.window, self.hop = feature, int(window), int(hop)
        self.n_imposters, self.n_candidates = int(n_imposters), int(n_imposters) + 1
        self.seed, self.all_positions, self.epoch = int(seed), bool(all_positions), 0
        self.gap = grid_gap(self.window, self.hop)
        needed = min_windows(self.window, self.hop, self.n_imposters)
        self.subjects = sorted({rec.subject for rec in self.recordings})
        self._subject_id = {name: i for i, name in enumerate(self.subjects)}
        self.usable, self.n_windows, skipped = [], [], []
        for index, rec in enumerate(self.recordings):
            count = (rec.n_samples - self.window) // self.hop + 1 if rec.n_samples >= self.window else 0
            if count >= needed:
                self.usable.append(index)
                self.n_windows.append(count)
            else:
                skipped.append(f"{rec.subject}/{rec.stimulus} ({rec.n_samples / FS_TASK2:.1f} s)")
        need_s = ((needed - 1) * self.hop + self.window) / FS_TASK2
        if not self.usable:
            raise EEGKitError(
                f"{where}: no recording is long enough for {self.window / FS_TASK2:g}-s windows every "
                f"{self.hop / FS_TASK2:g} s with {self.n_imposters} non-overlapping imposters (needs {need_s:g} s; "
                f"recordings: {', '.join(skipped[:4])}{' ...' if len(skipped) > 4 else ''}){hint}")
        if skipped:
            warnings.warn(f"{where}: skipping {len(skipped)} recording(s) shorter than {need_s:g} s (too few "
                          f"windows for {self.n_imposters} non-overlapping imposters): {', '.join(skipped[:6])}"
                          f"{' ...' if len(skipped) > 6 else ''}")
        self._offsets = np.concatenate([[0], np.cumsum(self.n_windows)]).astype(np.int64)
        self._tables: dict[int, np.ndarray] = {}

    # ------------------------------------------------------------------ bookkeeping
    def set_epoch(self, epoch: int) -> None:
        """Redraw the imposters (training: a new draw every epoch)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._tables.clear()

    def imposters(self, slot: int) -> np.ndarray:
        """``(n_windows, n_imposters)`` imposter windows of usable recording ``slot`` for this epoch."""
        if slot not in self._tables:
            rng = np.random.default_rng([self.seed, self.epoch, self.usable[slot]])
            self._tables[slot] = draw_imposters(self.n_windows[slot], self.gap, self.n_imposters, rng)
        return self._tables[slot]

    @property
    def total_windows(self) -> int:
        return int(self._offsets[-1])

    def __len__(self) -> int:
        return self.total_windows * (self.n_candidates if self.all_positions else 1)

    def _locate(self, index: int) -> tuple[int, int, int]:
        """``(slot, window, position)`` of item ``index``."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} outside 0..{len(self) - 1}")
        if self.all_positions:
            flat, position = divmod(index, self.n_candidates)
        else:
            flat, position = index, None
        slot = int(np.searchsorted(self._offsets, flat, side="right") - 1)
        window = flat - int(self._offsets[slot])
        if position is None:
            rng = np.random.default_rng([self.seed, self.usable[slot], window])
            position = int(rng.integers(self.n_candidates))
        return slot, window, position

    def trial(self, index: int) -> dict:
        """Names and frame starts of item ``index``: subject, stimulus, eeg_start, candidate_starts, label."""
        slot, window, position = self._locate(index)
        rec = self.recordings[self.usable[slot]]
        imposters = [int(w) for w in self.imposters(slot)[window]]
        order = imposters[:position] + [window] + imposters[position:]  # window indices, matched at position
        return {"subject": rec.subject, "stimulus": rec.stimulus, "recording": self.usable[slot],
                "window": window, "eeg_start": window * self.hop,
                "candidate_starts": [w * self.hop for w in order], "label": position,
                "id": f"{rec.subject}_-_{rec.stimulus}_-_{window * self.hop}"}

    def __getitem__(self, index: int) -> dict:
        info = self.trial(index)
        rec = self.recordings[info["recording"]]
        eeg = rec.window("eeg", info["eeg_start"], self.window)  # (window, 64)
        stimuli = np.stack([rec.window(self.feature, start, self.window)
                            for start in info["candidate_starts"]])  # (K, window, bands)
        return {"eeg": torch.from_numpy(np.ascontiguousarray(eeg, dtype=np.float32)),
                "stimuli": torch.from_numpy(np.ascontiguousarray(stimuli, dtype=np.float32)),
                "label": info["label"], "subject": self._subject_id[rec.subject],
                "recording": info["recording"], "window": info["window"]}
