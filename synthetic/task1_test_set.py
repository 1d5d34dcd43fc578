"""The synthetic Task 1 (match-mismatch) test set, cut from the held-out test subjects of ``synthetic.task2``.

``python -m synthetic task2`` calls `write_test_set` after its Task 2 test set, with the same test
subjects' EEG and their stories' envelope and mel, and writes the layout of
`../shared/reference/task1_match_mismatch.md` section 4::

    out_dir/test_set/TASK1_match_mismatch/sub-YYY_mapping.json
        {segment_id: {"eeg": eeg_id, "stimulus": [id0, id1, id2, id3, id4]}}
    out_dir/test_set/TASK1_match_mismatch/preprocessed_eeg/sub-YYY_eeg.npz   eeg_id -> (320, 64)
    out_dir/test_set/TASK1_match_mismatch/stimulus/envelope_chunks_test.npz  stimulus_id -> (320, 1)
    out_dir/test_set/TASK1_match_mismatch/stimulus/mel_chunks_test.npz       stimulus_id -> (320, 10)
    out_dir/test_set/labels_task1/sub-YYY.json   {segment_id: index of the matched stimulus}  (held out)

Segments: each test subject's recording is cut into non-overlapping 5-s windows (320 frames at
64 Hz; the tail shorter than 5 s is dropped); every window is one segment: its EEG (float32, not
normalised, as in the Task 2 test set) and five stimulus segments, the matched one (the window's
own envelope/mel) and four imposters, the envelope/mel of four other windows of the same story,
drawn at random without repetition. So every imposter is also the matched segment of another EEG
segment (a model cannot win by knowing which stimulus windows are ever matched). The matched
position is balanced over a subject's segments (position k % 5 for the k-th, then shuffled) and
random for each segment. Ids are opaque: segment ids ``sub-YYY_<k>`` in a shuffled order, eeg ids
``eeg_<8 hex>``, and a fresh ``stim_<8 hex>`` id for every (segment, position), so an id does not
tell how often its content appears. Both stimulus files hold every id (the same segment as
envelope and as mel).

Not written: ``raw_eeg/`` and ``MWFilter_eeg/`` (the 1024-Hz variants of the real test set); the
simulation has no 1024-Hz EEG, and the kit's Task 1 predict reads ``preprocessed_eeg/`` only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from util.atomic import atomic_savez, atomic_write_json
from util.errors import EEGKitError

__all__ = ["write_test_set", "SEGMENT_FRAMES", "N_CANDIDATES", "FEATURES", "TEST_DIR", "LABEL_DIR",
           "stimulus_file_name"]

SEGMENT_FRAMES = 5 * 64  # 320 frames: 5 s at 64 Hz
N_CANDIDATES = 5  # matched + 4 imposters
FEATURES = ("envelope", "mel")
TEST_DIR = Path("test_set") / "TASK1_match_mismatch"
LABEL_DIR = Path("test_set") / "labels_task1"


def stimulus_file_name(feature: str) -> str:
    """``envelope_chunks_test.npz`` / ``mel_chunks_test.npz`` (section 4: the feature name and ``chunks``)."""
    return f"{feature}_chunks_test.npz"


def _fresh_id(prefix: str, rng: np.random.Generator, taken: set) -> str:
    while True:
        new = f"{prefix}_{int(rng.integers(16 ** 8)):08x}"
        if new not in taken:
            taken.add(new)
            return new


def write_test_set(out_dir, subjects, seed: int = 0) -> dict:
    """Write the Task 1 test set of ``subjects`` under ``out_dir``; returns a summary for the metadata file.

    ``subjects``: a list of ``(subject_id, story, eeg (T, 64), envelope (T, 1), mel (T, 10))``, the
    three arrays time-aligned at 64 Hz. Each recording needs at least 5 whole 5-s windows (25 s).
    """
    out = Path(out_dir)
    test_dir, label_dir = out / TEST_DIR, out / LABEL_DIR
    stimulus_ids: set = set()
    chunks = {feature: {} for feature in FEATURES}  # stimulus_id -> (320, bands)
    summary = {}
    for j, (sid, story, eeg, envelope, mel) in enumerate(subjects):
        rng = np.random.default_rng([seed, 3000 + j])
        n_windows = min(len(eeg), len(envelope), len(mel)) // SEGMENT_FRAMES
        if n_windows < N_CANDIDATES:
            raise EEGKitError(f"{sid}: {n_windows} whole 5-s windows, need at least {N_CANDIDATES} for the "
                              "Task 1 test set")
        order = rng.permutation(n_windows)  # segment k -> window order[k]
        matched_at = rng.permutation(np.arange(n_windows) % N_CANDIDATES)  # balanced positions, shuffled
        eeg_ids: set = set()
        mapping, eeg_arrays, labels = {}, {}, {}
        for k in range(n_windows):
            window = int(order[k])
            others = np.delete(np.arange(n_windows), window)
            imposters = rng.choice(others, size=N_CANDIDATES - 1, replace=False)
            windows = list(imposters)
            windows.insert(int(matched_at[k]), window)  # (5,) window of each candidate
            segment_id = f"{sid}_{k}"
            eeg_id = _fresh_id("eeg", rng, eeg_ids)
            ids = []
            for w in windows:
                stimulus_id = _fresh_id("stim", rng, stimulus_ids)
                rows = slice(int(w) * SEGMENT_FRAMES, (int(w) + 1) * SEGMENT_FRAMES)
                chunks["envelope"][stimulus_id] = envelope[rows].astype(np.float32)  # (320, 1)
                chunks["mel"][stimulus_id] = mel[rows].astype(np.float32)  # (320, 10)
                ids.append(stimulus_id)
            mapping[segment_id] = {"eeg": eeg_id, "stimulus": ids}
            own_rows = slice(window * SEGMENT_FRAMES, (window + 1) * SEGMENT_FRAMES)
            eeg_arrays[eeg_id] = eeg[own_rows].astype(np.float32)  # (320, 64)
            labels[segment_id] = int(matched_at[k])
        atomic_savez(test_dir / "preprocessed_eeg" / f"{sid}_eeg.npz", **eeg_arrays)
        atomic_write_json(test_dir / f"{sid}_mapping.json", mapping, indent=1)
        atomic_write_json(label_dir / f"{sid}.json", labels, indent=1)
        summary[sid] = {"story": story, "segments": n_windows}
    for feature in FEATURES:
        atomic_savez(test_dir / "stimulus" / stimulus_file_name(feature), **chunks[feature])
    return {"segment_s": SEGMENT_FRAMES / 64, "candidates": N_CANDIDATES, "subjects": summary,
            "stimulus_files": [stimulus_file_name(f) for f in FEATURES]}
