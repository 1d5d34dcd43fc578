"""Discovery, validation and lazy, memory-light loading of the challenge's ``split_data`` (Tasks 1 and 2).

Layout (see ``../shared/reference/task2_challenge.md`` section 1)::

    <dataset>/derivatives/split_data/{split}_-_{subject}_-_{stimulus}_-_{feature}.npy

``split`` is train/val/test, ``feature`` eeg/envelope/mel (stimulus names may
contain single underscores, e.g. ``audiobook_2_2``). Files are grouped by their
first three ``_-_`` parts into *recordings* ``(split, subject, stimulus)``.
Both challenge tasks read the same files: ``task2_regression.data`` (which adds the
features computed from the stimulus audio, mel80/mag, through the ``derived_paths``
hook of `load_recordings`) and ``task1_match_mismatch.data``.

Memory model (RAM must not grow with dataset size):
- Only ``.npy`` headers are parsed up front (shape, dtype, data offset).
- Statistics and the checks read each file in fixed-size chunks with
  ``os.pread``; nothing stays mapped afterwards. Every feature (EEG and targets, every
  split) is refused with one line naming the file when it holds NaN/Inf (first bad row
  and column named) or when all its columns are constant; mel must be (T, 10) and
  envelope (T,) or (T, 1).
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
- ``"window_unbiased"``: the same with the unbiased (n - 1) std, as the published
  CAT-WaveNet code's ``torch.std`` (``zscore_time(x, unbiased=True)``).
- ``"none"``: raw values cast to float32.
``raw_features`` (e.g. Task 2's 16-kHz stimulus audio rows) are served as stored whatever
``normalize`` says: no statistics, no per-recording NaN/Inf pass (their producer checks them).

Subjects (`training_subjects`, `used_subjects`, `choose_holdout`, `apply_holdout`): a run config's
``data.subjects`` (train/val only on these) and ``data.holdout_subjects`` (kept out of train and val,
``--holdout-subjects``), checked against the subjects of the data.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from util.errors import EEGKitError
from util.features import BANDS, FS_TASK2
from util.npy import NpyFile, read_npy_header

N_EEG_CHANNELS = 64
SPLITS = ("train", "val", "test")
SEP = "_-_"
NORMALIZE_MODES = ("recording", "window", "window_unbiased", "none")
_EPS = 1e-8


def check_feature_header(npy: NpyFile, feature: str, n_channels: int = N_EEG_CHANNELS) -> None:
    """Validate shapes: eeg must be (T, n_channels) (64 in SparrKULee); mel (T, 10), envelope (T,) or (T, 1)."""
    if feature == "eeg":
        if len(npy.shape) != 2 or npy.shape[1] != n_channels:
            hint = ""
            if len(npy.shape) == 2 and npy.shape[0] == n_channels:
                hint = f" (looks channels-first; split_data EEG must be time-first (T, {n_channels}))"
            raise EEGKitError(
                f"{npy.path}: EEG must have {n_channels} channels as (time, {n_channels}), found shape {npy.shape}{hint}")
    bands = BANDS.get(feature)
    if feature != "eeg" and bands is not None and (npy.n_cols != bands or (bands > 1 and len(npy.shape) != 2)):
        hint = " (looks transposed: time must come first)" if npy.shape[0] == bands and len(npy.shape) == 2 else ""
        raise EEGKitError(f"{npy.path}: {feature} must be (time, {bands}), found shape {npy.shape}{hint}")
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
    raw: tuple = ()  # features served as stored, never normalised (load_recordings' raw_features)

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
        if name in self.raw:
            return x
        if self.normalize == "recording":
            mean, std = self.stats[name]
            return ((x - mean) / std).astype(np.float32, copy=False)
        if self.normalize in ("window", "window_unbiased"):
            return zscore_time(x, unbiased=self.normalize == "window_unbiased")
        return x

    def window(self, name: str, start: int, length: int) -> np.ndarray:
        """Normalised float32 ``(length, C)`` window of feature ``name``."""
        return self._normalise(name, self.raw_window(name, start, length))

    def array(self, name: str) -> np.ndarray:
        """The whole normalised feature as float32 ``(n_samples, C)`` (loads it into memory)."""
        return self.window(name, 0, self.n_samples)


def zscore_time(x: np.ndarray, unbiased: bool = False) -> np.ndarray:
    """Z-score ``(time, C)`` over time per channel; constant channels become 0.

    ``unbiased``: divide by the n - 1 std (``torch.std``'s, the published CAT-WaveNet's) instead of the n one.
    """
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True, ddof=1 if unbiased and x.shape[0] > 1 else 0)
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
    """One chunked pass: mean/std per column; with ``check_finite`` also refuses NaN/Inf (naming the
    file and the first bad row and column) and a recording part whose every column is constant
    (all-zero EEG, a constant target): nothing can be learned or scored from it."""
    from util.inputs import check_finite as refuse_nonfinite

    npy = source.npy
    total = np.zeros(npy.n_cols)
    total_sq = np.zeros(npy.n_cols)
    low = np.full(npy.n_cols, np.inf)
    high = np.full(npy.n_cols, -np.inf)
    start = source.row_offset
    for chunk in npy.iter_chunks(start, start + n_rows):
        if check_finite:
            refuse_nonfinite(chunk, str(npy.path), row_offset=start)
            low = np.minimum(low, chunk.min(axis=0))
            high = np.maximum(high, chunk.max(axis=0))
        total += chunk.sum(axis=0)
        total_sq += np.square(chunk).sum(axis=0)
        start += len(chunk)
    if check_finite and n_rows > 1 and np.all(high == low):
        rows = f"rows {source.row_offset}..{source.row_offset + n_rows - 1}"
        raise EEGKitError(f"{npy.path}: constant over {rows} (every one of its {npy.n_cols} columns is flat, "
                          f"e.g. all {low[0]:g}); nothing can be learned or scored from it")
    mean = total / n_rows
    var = np.maximum(total_sq / n_rows - np.square(mean), 0.0)
    std = np.sqrt(var)
    std[std < 1e-12] = 1.0  # constant channel: leave it centred, do not blow it up
    return mean.astype(np.float32), std.astype(np.float32)


def check_finite_source(source: FeatureSource, n_rows: int) -> None:
    """Refuse NaN/Inf and an all-flat part in rows ``[0, n_rows)`` of a source (see `_chunked_stats`)."""
    chunked_stats(source, n_rows, check_finite=True)


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
                   split_offsets=None, n_channels: int = N_EEG_CHANNELS, derived_features: tuple = ()) -> dict:
    """FeatureSource per feature for one recording key; errors name the missing file."""
    split, subject, stimulus = key
    files = groups[key]
    sources = {}
    for feature in features:
        if feature in derived_features:
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


def load_recordings(split_dir, split: str, features=("eeg", "mel"), normalize: str = "recording",
                    length_tolerance: int = FS_TASK2, check_finite: bool = True, subjects=None,
                    progress: bool = False, groups: dict | None = None, n_channels: int = N_EEG_CHANNELS,
                    derived_features: tuple = (), derived_paths=None, raw_features: tuple = ()) -> list:
    """Recordings of one split, validated, cut to a common length, with normalisation statistics.

    ``subjects`` optionally restricts to those subject names; ``groups`` is `discover`'s result when
    the caller already has it (so the folder is listed once). ``n_channels``: the EEG channel count
    every file must have (64 in SparrKULee). RAM use is independent of dataset size.

    ``derived_features``: feature names that are not split_data files but whole-stimulus ``.npy``
    files (e.g. Task 2's mel80/mag, computed from the stimulus audio); ``derived_paths(stimuli,
    wanted) -> {stimulus: {feature: Path}}`` supplies those files, and each recording reads its
    split's part of them (`split_offsets_of`). ``raw_features``: features served as stored (see the
    module docstring), e.g. Task 2's 16-kHz stimulus audio rows.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if normalize not in NORMALIZE_MODES:
        raise ValueError(f"normalize must be one of {NORMALIZE_MODES}, got {normalize!r}")
    features, derived_features = tuple(features), tuple(derived_features)
    split_dir = resolve_split_dir(split_dir)
    groups = discover(split_dir) if groups is None else groups
    keys = [k for k in groups if k[0] == split and (subjects is None or k[1] in set(subjects))]
    if not keys:
        raise EEGKitError(f"{split_dir}: no {split!r} recordings found")

    stimulus_paths = None
    split_offsets = None
    if any(f in derived_features for f in features):
        wanted = tuple(f for f in features if f in derived_features)
        stimuli = sorted({k[2] for k in keys})
        stimulus_paths = derived_paths(stimuli, wanted) if derived_paths is not None else None

        def split_offsets(key):
            return split_offsets_of(groups, key[1], key[2])[key[0]]

    from tqdm import tqdm

    recordings = []
    for key in tqdm(keys, desc=f"loading {split} recordings", disable=not progress):
        sources = _split_sources(groups, key, features, stimulus_paths, split_offsets, n_channels, derived_features)
        n_samples = common_length(sources, length_tolerance)
        rec = Recording(split=key[0], subject=key[1], stimulus=key[2], n_samples=n_samples, sources=sources,
                        normalize=normalize, raw=tuple(raw_features))
        if normalize == "recording":
            rec.stats = _train_stats(groups, key, features, stimulus_paths, split_offsets, length_tolerance,
                                     check_finite, rec, n_channels, derived_features)
        stats_checked = normalize == "recording" and split == "train"
        if check_finite and not stats_checked:
            for name, source in sources.items():
                if name not in rec.raw:
                    check_finite_source(source, n_samples)
        recordings.append(rec)
    return recordings


def _train_stats(groups, key, features, stimulus_paths, split_offsets, length_tolerance, check_finite, rec,
                 n_channels: int = N_EEG_CHANNELS, derived_features: tuple = ()):
    """Per-feature (mean, std) over the train part of ``key``'s recording (its own part as fallback)."""
    train_key = ("train", key[1], key[2])
    if train_key == key:
        sources, n_rows = rec.sources, rec.n_samples
    elif train_key in groups:
        sources = _split_sources(groups, train_key, features, stimulus_paths, split_offsets, n_channels,
                                 derived_features)
        n_rows = common_length(sources, length_tolerance)
    else:
        warnings.warn(f"{rec.path(features[0])}: no train part for ({key[1]}, {key[2]}); "
                      f"normalising with its own statistics")
        sources, n_rows = rec.sources, rec.n_samples
    return {name: chunked_stats(src, n_rows, check_finite) for name, src in sources.items() if name not in rec.raw}


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


# --------------------------------------------------------------------------- subjects of a run
def training_subjects(groups: dict) -> list[str]:
    """Sorted subjects that have a train part in a `discover` result."""
    return sorted({key[1] for key in groups if key[0] == "train"})


def used_subjects(cfg: dict, groups: dict) -> list[str]:
    """The subjects a run trains and validates on: ``data.subjects`` (or all) minus ``data.holdout_subjects``."""
    chosen = cfg["data"]["subjects"] or training_subjects(groups)
    return [name for name in chosen if name not in set(cfg["data"]["holdout_subjects"])]


def check_subjects(cfg: dict, groups: dict, data_dir) -> None:
    """``data.subjects`` / ``data.holdout_subjects``: lists of training subjects of the data, disjoint."""
    data = cfg["data"]
    known = training_subjects(groups)
    for key in ("subjects", "holdout_subjects"):
        names = data[key]
        if not all(isinstance(name, str) for name in names):
            raise EEGKitError(f"config: data.{key} must be a list of subject names, got {names!r}")
        if len(set(names)) != len(names):
            raise EEGKitError(f"config: data.{key} lists a subject twice: {names}")
        missing = [name for name in names if name not in known]
        if missing:
            raise EEGKitError(f"config: data.{key}: {', '.join(missing)} not among the training subjects of "
                              f"{data_dir} ({', '.join(known)})")
    both = sorted(set(data["subjects"]) & set(data["holdout_subjects"]))
    if both:
        raise EEGKitError(f"config: {', '.join(both)} in both data.subjects and data.holdout_subjects")
    if not used_subjects(cfg, groups):
        raise EEGKitError(f"config: data.holdout_subjects {data['holdout_subjects']} leaves no subject to train on "
                          f"({len(known)} in {data_dir})")


def choose_holdout(spec: str, subjects, seed: int) -> list[str]:
    """``--holdout-subjects``: 'sub-002,sub-005' (those) or 'N' (N subjects drawn with ``seed``), sorted."""
    text = str(spec).strip()
    if text.isdigit():
        count = int(text)
        if not 0 < count < len(subjects):
            raise EEGKitError(f"--holdout-subjects {spec}: need 1 to {len(subjects) - 1} of the "
                              f"{len(subjects)} training subjects")
        rng = np.random.default_rng(int(seed))
        return sorted(str(name) for name in rng.choice(sorted(subjects), size=count, replace=False))
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise EEGKitError(f"--holdout-subjects {spec!r}: expected a count (e.g. 2) or subject names "
                          f"(e.g. sub-002,sub-005)")
    missing = [name for name in names if name not in subjects]
    if missing:
        raise EEGKitError(f"--holdout-subjects: {', '.join(missing)} not among the training subjects "
                          f"({', '.join(subjects)})")
    return sorted(set(names))


def apply_holdout(cfg: dict, holdout: str | None, groups: dict, data_dir) -> dict:
    """Put ``--holdout-subjects`` (names or a count drawn with ``train.seed``) into ``data.holdout_subjects``."""
    if holdout is None:
        return cfg
    chosen = choose_holdout(holdout, training_subjects(groups), int(cfg["train"]["seed"]))
    already = list(cfg["data"]["holdout_subjects"])
    if already and sorted(already) != chosen:
        raise EEGKitError(f"--holdout-subjects {holdout}: gives {chosen}, but the config already holds "
                          f"data.holdout_subjects {already}; give one of them")
    cfg["data"]["holdout_subjects"] = chosen
    check_subjects(cfg, groups, data_dir)
    return cfg
