"""Discovery, validation and lazy, memory-light loading of Task 2 ``split_data``.

Layout (see ``../shared/reference/task2_challenge.md`` section 1)::

    <dataset>/derivatives/split_data/{split}_-_{subject}_-_{stimulus}_-_{feature}.npy

``split`` is train/val/test, ``feature`` eeg/envelope/mel (stimulus names may
contain single underscores, e.g. ``audiobook_2_2``). Files are grouped by their
first three ``_-_`` parts into *recordings* ``(split, subject, stimulus)``.

Memory model (RAM must not grow with dataset size):
- Only ``.npy`` headers are parsed up front (shape, dtype, data offset).
- Statistics and the NaN/Inf check read each file in fixed-size chunks with
  ``os.pread``; nothing stays mapped afterwards.
- Windows are read with ``os.pread`` of exactly the bytes needed (a window is a
  contiguous row range of a C-ordered ``.npy``). Fortran-ordered files fall
  back to a short-lived ``np.load(mmap_mode='r')`` mapping that is dropped
  right after the copy. Page-cache pages are not part of the process RSS.

Cut to a common length: every feature of a recording is cut to the shortest of
them (small differences are normal); a difference above ``length_tolerance``
samples (default 64 = 1 s at 64 Hz) is an error naming both files.

Normalisation (``normalize=``):
- ``"recording"`` (default): z-score per recording ``(subject, stimulus)`` and per
  channel/band with the mean/std of that recording's TRAIN part, applied lazily
  to train, val and test windows alike, for EEG and targets. If the train part
  of a recording is absent, its own statistics are used (a warning says so).
- ``"window"``: z-score every window over time, per channel (the CAT-WaveNet
  paper's choice); ``Recording.array`` then z-scores the whole recording.
- ``"none"``: raw values cast to float32.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from task2_regression import stimulus_targets
from util.errors import EEGKitError
from util.features import FS_TASK2
from util.npy import NpyFile, read_npy_header

N_EEG_CHANNELS = 64
SPLITS = ("train", "val", "test")
SEP = "_-_"
NORMALIZE_MODES = ("recording", "window", "none")
STIMULUS_FEATURES = stimulus_targets.TARGET_NAMES  # computed from the stimulus audio
_EPS = 1e-8


def check_feature_header(npy: NpyFile, feature: str, n_channels: int = N_EEG_CHANNELS) -> None:
    """Validate shapes: eeg must be (T, n_channels) (64 in SparrKULee); targets (T,) or (T, C)."""
    if feature == "eeg":
        if len(npy.shape) != 2 or npy.shape[1] != n_channels:
            hint = ""
            if len(npy.shape) == 2 and npy.shape[0] == n_channels:
                hint = f" (looks channels-first; split_data EEG must be time-first (T, {n_channels}))"
            raise EEGKitError(
                f"{npy.path}: EEG must have {n_channels} channels as (time, {n_channels}), found shape {npy.shape}{hint}")
    if npy.n_rows == 0:
        raise EEGKitError(f"{npy.path}: empty array (0 time samples)")


# --------------------------------------------------------------------------- discovery
def parse_name(path: Path):
    """``(split, subject, stimulus, feature)`` from a split_data file name, or None."""
    name = Path(path).name
    if not name.endswith(".npy"):
        return None
    parts = name[: -len(".npy")].split(SEP)
    if len(parts) != 4 or parts[0] not in SPLITS or not all(parts):
        return None
    return tuple(parts)


def discover(split_dir) -> dict:
    """Group split_data files: ``{(split, subject, stimulus): {feature: Path}}`` (sorted keys)."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise EEGKitError(f"{split_dir}: split_data folder not found")
    groups: dict = {}
    for path in sorted(split_dir.glob("*.npy")):
        parsed = parse_name(path)
        if parsed is None:
            continue
        split, subject, stimulus, feature = parsed
        groups.setdefault((split, subject, stimulus), {})[feature] = path
    if not groups:
        raise EEGKitError(
            f"{split_dir}: no split_data files found (expected {{split}}_-_{{subject}}_-_{{stimulus}}_-_{{feature}}.npy)")
    return dict(sorted(groups.items()))


def stimuli_of(groups: dict) -> list:
    """Sorted stimulus names of a `discover` result."""
    return sorted({key[2] for key in groups})


def split_offsets_of(groups: dict, subject: str, stimulus: str) -> dict:
    """``{split: (start, length)}`` of each split inside the stimulus, from the eeg file lengths."""
    lengths = {}
    for split in SPLITS:
        files = groups.get((split, subject, stimulus), {})
        if "eeg" in files:
            lengths[split] = read_npy_header(files["eeg"]).n_rows
    offsets, start = {}, 0
    for split in SPLITS:
        if split not in lengths:
            later = [s for s in SPLITS[SPLITS.index(split) + 1:] if s in lengths]
            if later:
                raise EEGKitError(f"{subject}/{stimulus}: no {split} eeg file, so the start of the "
                                  f"{later[0]} part inside the stimulus is unknown")
            continue
        offsets[split] = (start, lengths[split])
        start += lengths[split]
    return offsets


def resolve_split_dir(path) -> Path:
    """Accept the dataset root, its ``derivatives`` folder or ``split_data`` itself."""
    path = Path(path)
    for candidate in (path / "derivatives" / "split_data", path / "split_data", path):
        if candidate.is_dir() and any(candidate.glob(f"*{SEP}*.npy")):
            return candidate
    return path


# --------------------------------------------------------------------------- recordings
@dataclass
class FeatureSource:
    """Rows ``[row_offset, row_offset + n)`` of one ``.npy`` file serve a feature."""

    npy: NpyFile
    row_offset: int = 0
    max_rows: int | None = None  # a stimulus feature serves at most its split's length

    @property
    def available_rows(self) -> int:
        rows = self.npy.n_rows - self.row_offset
        return rows if self.max_rows is None else min(rows, self.max_rows)


@dataclass
class Recording:
    """One (split, subject, stimulus) recording; windows are read and normalised lazily."""

    split: str
    subject: str
    stimulus: str
    n_samples: int
    sources: dict  # feature -> FeatureSource
    normalize: str = "recording"
    stats: dict = field(default_factory=dict)  # feature -> (mean (C,), std (C,)) float32

    @property
    def features(self) -> tuple:
        return tuple(self.sources)

    @property
    def key(self) -> tuple:
        return (self.split, self.subject, self.stimulus)

    def n_channels(self, name: str) -> int:
        return self._source(name).npy.n_cols

    def path(self, name: str) -> Path:
        return self._source(name).npy.path

    def _source(self, name: str) -> FeatureSource:
        if name not in self.sources:
            raise KeyError(f"recording {self.key} has no feature {name!r} (has {list(self.sources)})")
        return self.sources[name]

    def raw_window(self, name: str, start: int, length: int) -> np.ndarray:
        """Un-normalised float32 ``(length, C)``."""
        if start < 0 or start + length > self.n_samples:
            raise IndexError(f"window {start}..{start + length} outside recording of {self.n_samples} samples")
        source = self._source(name)
        return source.npy.read_rows(source.row_offset + start, length)

    def _normalise(self, name: str, x: np.ndarray) -> np.ndarray:
        if self.normalize == "recording":
            mean, std = self.stats[name]
            return ((x - mean) / std).astype(np.float32, copy=False)
        if self.normalize == "window":
            return zscore_time(x)
        return x

    def window(self, name: str, start: int, length: int) -> np.ndarray:
        """Normalised float32 ``(length, C)`` window of feature ``name``."""
        return self._normalise(name, self.raw_window(name, start, length))

    def array(self, name: str) -> np.ndarray:
        """The whole normalised feature as float32 ``(n_samples, C)`` (loads it into memory)."""
        return self.window(name, 0, self.n_samples)


def zscore_time(x: np.ndarray) -> np.ndarray:
    """Z-score ``(time, C)`` over time per channel; constant channels become 0."""
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True)
    return ((x - mean) / np.maximum(std, _EPS)).astype(np.float32, copy=False)


_STATS_CACHE: dict = {}  # (path, size, mtime_ns, offset, rows, check) -> (mean, std): a few floats per recording


def chunked_stats(source: FeatureSource, n_rows: int, check_finite: bool) -> tuple:
    """Mean/std per column of rows ``[0, n_rows)`` of a source, in chunks (float64 accumulation).

    Results are memoised per file version, so loading val/test after train does not re-read train.
    """
    stat = os.stat(source.npy.path)
    key = (str(source.npy.path), stat.st_size, stat.st_mtime_ns, source.row_offset, n_rows, check_finite)
    if key not in _STATS_CACHE:
        _STATS_CACHE[key] = _chunked_stats(source, n_rows, check_finite)
    return _STATS_CACHE[key]


def _chunked_stats(source: FeatureSource, n_rows: int, check_finite: bool) -> tuple:
    npy = source.npy
    total = np.zeros(npy.n_cols)
    total_sq = np.zeros(npy.n_cols)
    start = source.row_offset
    for chunk in npy.iter_chunks(start, start + n_rows):
        if check_finite and not np.isfinite(chunk).all():
            bad_row = start + int(np.argwhere(~np.isfinite(chunk))[0][0])
            raise EEGKitError(f"{npy.path}: contains NaN/Inf (first at row {bad_row})")
        total += chunk.sum(axis=0)
        total_sq += np.square(chunk).sum(axis=0)
        start += len(chunk)
    mean = total / n_rows
    var = np.maximum(total_sq / n_rows - np.square(mean), 0.0)
    std = np.sqrt(var)
    std[std < 1e-12] = 1.0  # constant channel: leave it centred, do not blow it up
    return mean.astype(np.float32), std.astype(np.float32)


def check_finite_source(source: FeatureSource, n_rows: int) -> None:
    npy = source.npy
    start = source.row_offset
    for chunk in npy.iter_chunks(start, start + n_rows):
        if not np.isfinite(chunk).all():
            bad_row = start + int(np.argwhere(~np.isfinite(chunk))[0][0])
            raise EEGKitError(f"{npy.path}: contains NaN/Inf (first at row {bad_row})")
        start += len(chunk)


def common_length(sources: dict, length_tolerance: int) -> int:
    """Shortest available length over features; EEGKitError naming both files if they differ too much."""
    lengths = {name: src.available_rows for name, src in sources.items()}
    shortest = min(lengths, key=lengths.get)
    longest = max(lengths, key=lengths.get)
    if lengths[longest] - lengths[shortest] > length_tolerance:
        raise EEGKitError(
            f"{sources[longest].npy.path}: length {lengths[longest]} differs from {lengths[shortest]} of "
            f"{sources[shortest].npy.path} by more than {length_tolerance} samples")
    if lengths[shortest] <= 0:
        raise EEGKitError(f"{sources[shortest].npy.path}: no samples left for this recording")
    return lengths[shortest]


def _split_sources(groups: dict, key: tuple, features: tuple, stimulus_paths: dict | None,
                   split_offsets=None, n_channels: int = N_EEG_CHANNELS) -> dict:
    """FeatureSource per feature for one recording key; errors name the missing file."""
    split, subject, stimulus = key
    files = groups[key]
    sources = {}
    for feature in features:
        if feature in STIMULUS_FEATURES:
            if stimulus_paths is None or feature not in stimulus_paths.get(stimulus, {}):
                raise EEGKitError(f"{files.get('eeg', next(iter(files.values())))}: no stimulus audio for "
                                  f"{stimulus!r} to compute {feature}")
            npy = read_npy_header(stimulus_paths[stimulus][feature])
            start, split_length = split_offsets(key)
            sources[feature] = FeatureSource(npy, start, split_length)
            if sources[feature].available_rows <= 0:
                raise EEGKitError(f"{npy.path}: stimulus feature has {npy.n_rows} frames, the {split} part "
                                  f"starts at {start}")
            continue
        if feature not in files:
            anchor = files.get("eeg", next(iter(files.values())))
            missing = anchor.with_name(f"{split}{SEP}{subject}{SEP}{stimulus}{SEP}{feature}.npy")
            raise EEGKitError(f"{missing}: file not found (recording has {sorted(files)})")
        npy = read_npy_header(files[feature])
        check_feature_header(npy, feature, n_channels)
        sources[feature] = FeatureSource(npy, 0)
    return sources


def load_recordings(split_dir, split: str, features=("eeg", "mel"), stimulus_audio_dir=None, cache_dir=None,
                    normalize: str = "recording", length_tolerance: int = FS_TASK2, check_finite: bool = True,
                    subjects=None, progress: bool = False, groups: dict | None = None,
                    n_channels: int = N_EEG_CHANNELS) -> list:
    """Recordings of one split, validated, cut to a common length, with normalisation statistics.

    ``features`` may include ``mel80``/``mag``: they are computed from the stimulus audio under
    ``stimulus_audio_dir`` and cached in ``cache_dir`` (see ``task2_regression.stimulus_targets``).
    ``subjects`` optionally restricts to those subject names; ``groups`` is `discover`'s result when
    the caller already has it (so the folder is listed once). ``n_channels``: the EEG channel count
    every file must have (64 in SparrKULee). RAM use is independent of dataset size.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    features = tuple(features)
    split_dir = resolve_split_dir(split_dir)
    groups = discover(split_dir) if groups is None else groups
    keys = [k for k in groups if k[0] == split and (subjects is None or k[1] in set(subjects))]
    if not keys:
        raise EEGKitError(f"{split_dir}: no {split!r} recordings found")

    stimulus_paths = None
    split_offsets = None
    if any(f in STIMULUS_FEATURES for f in features):
        wanted = tuple(f for f in features if f in STIMULUS_FEATURES)
        stimuli = sorted({k[2] for k in keys})
        stimulus_paths = stimulus_targets.ensure_stimulus_targets(
            stimuli, stimulus_audio_dir, cache_dir or stimulus_targets.default_cache_dir(split_dir), wanted)

        def split_offsets(key):
            return split_offsets_of(groups, key[1], key[2])[key[0]]

    from tqdm import tqdm

    recordings = []
    for key in tqdm(keys, desc=f"loading {split} recordings", disable=not progress):
        sources = _split_sources(groups, key, features, stimulus_paths, split_offsets, n_channels)
        n_samples = common_length(sources, length_tolerance)
        rec = Recording(split=key[0], subject=key[1], stimulus=key[2], n_samples=n_samples, sources=sources,
                        normalize=normalize)
        if normalize == "recording":
            rec.stats = _train_stats(groups, key, features, stimulus_paths, split_offsets, length_tolerance,
                                     check_finite, rec, n_channels)
        stats_checked_eeg = normalize == "recording" and split == "train"
        if check_finite and "eeg" in sources and not stats_checked_eeg:
            check_finite_source(sources["eeg"], n_samples)
        recordings.append(rec)
    return recordings


def _train_stats(groups, key, features, stimulus_paths, split_offsets, length_tolerance, check_finite, rec,
                 n_channels: int = N_EEG_CHANNELS):
    """Per-feature (mean, std) over the train part of ``key``'s recording (its own part as fallback)."""
    train_key = ("train", key[1], key[2])
    if train_key == key:
        sources, n_rows = rec.sources, rec.n_samples
    elif train_key in groups:
        sources = _split_sources(groups, train_key, features, stimulus_paths, split_offsets, n_channels)
        n_rows = common_length(sources, length_tolerance)
    else:
        warnings.warn(f"{rec.path(features[0])}: no train part for ({key[1]}, {key[2]}); "
                      f"normalising with its own statistics")
        sources, n_rows = rec.sources, rec.n_samples
    return {name: chunked_stats(src, n_rows, check_finite and name == "eeg") for name, src in sources.items()}


def summarize(recordings) -> dict:
    """Counts used by CLIs/logs: recordings, subjects, stimuli, hours of EEG."""
    n_samples = sum(r.n_samples for r in recordings)
    return {"recordings": len(recordings), "subjects": len({r.subject for r in recordings}),
            "stimuli": len({r.stimulus for r in recordings}), "hours": n_samples / FS_TASK2 / 3600.0}


def whole_recordings(split_dir, subjects, features=("eeg", "mel"), n_channels: int = N_EEG_CHANNELS,
                     groups: dict | None = None) -> list:
    """Raw (unnormalised) whole recordings of ``subjects``: their train, val and test parts joined in time.

    Returns ``[(subject, stimulus, {feature: float32 (T, C)})]`` sorted by (subject, stimulus). The
    parts are contiguous pieces of one recording (80/10/10 in time), so joining them gives the whole
    recording; each part is first cut to the common length of its features. Used to score subjects
    a run never saw (``data.holdout_subjects``); loads those subjects' data into memory.
    """
    split_dir = resolve_split_dir(split_dir)
    groups = discover(split_dir) if groups is None else groups
    wanted = set(subjects)
    pieces: dict = {}
    for split in SPLITS:
        if not any(key[0] == split and key[1] in wanted for key in groups):
            continue
        for rec in load_recordings(split_dir, split, features=features, normalize="none", subjects=sorted(wanted),
                                   groups=groups, n_channels=n_channels):
            pieces.setdefault((rec.subject, rec.stimulus), []).append(
                {name: rec.array(name) for name in features})  # each (n_samples, C)
    if not pieces:
        raise EEGKitError(f"{split_dir}: no recordings of {', '.join(sorted(wanted))}")
    missing = sorted(wanted - {key[0] for key in pieces})
    if missing:
        raise EEGKitError(f"{split_dir}: no recordings of {', '.join(missing)}")
    return [(subject, stimulus, {name: np.concatenate([p[name] for p in parts]) for name in features})
            for (subject, stimulus), parts in sorted(pieces.items())]
