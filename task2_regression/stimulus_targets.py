"""Mel80 / Mag targets (CAT-WaveNet stages 3-4) from the stimulus audio, cached per stimulus.

split_data holds no audio, so these targets are computed from the stimulus
audio files ``{stimulus}.wav`` / ``.npz`` / ``.npz.gz`` found (recursively) under
an audio folder, with ``util.features.mel80`` / ``util.features.magnitude``
(64 Hz, time first), and cached as::

    <cache_dir>/{stimulus}_-_mel80.npy      # (T_stimulus, 80) float32
    <cache_dir>/{stimulus}_-_mag.npy        # (T_stimulus, 257) float32

A cache file is reused when it is newer than its audio file and its header is
whole (a truncated or damaged cache file is rebuilt); it is written atomically. The default cache folder is ``<dataset>/derivatives/stimulus_targets``
(a sibling of ``split_data``).

The split_data 80/10/10 cut is inside each recording in time, so the part of
the stimulus feature that belongs to a (split, subject, stimulus) recording
starts at: train 0, val len(train eeg), test len(train eeg) + len(val eeg)
(``task2_regression.data.split_offsets_of``). ``task2_regression.data.load_recordings`` uses them and
then cuts everything to a common length.
"""
from __future__ import annotations

import logging
from pathlib import Path

from util.errors import EEGKitError
from util.npy import read_npy_header

AUDIO_SUFFIXES = (".npz.gz", ".wav", ".npz")
TARGET_NAMES = ("mel80", "mag")
CACHE_SEP = "_-_"  # cache files are named like split_data files: {stimulus}_-_{target}.npy
log = logging.getLogger(__name__)


def _stimulus_name(path: Path):
    for suffix in AUDIO_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def find_stimulus_audio(audio_dir) -> dict:
    """``{stimulus: audio Path}`` for every audio file under ``audio_dir`` (recursive; first hit wins)."""
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise EEGKitError(f"{audio_dir}: stimulus audio folder not found")
    found = {}
    for path in sorted(audio_dir.rglob("*")):
        name = _stimulus_name(path)
        if name and path.is_file():
            found.setdefault(name, path)
    return found


def _stimuli_of(source) -> set:
    """Stimulus names from Recording objects or plain names."""
    return {getattr(item, "stimulus", item) for item in source}


def missing_audio(source, audio_dir) -> list:
    """Sorted stimulus names without an audio file (all of them if ``audio_dir`` is None or absent)."""
    stimuli = _stimuli_of(source)
    if audio_dir is None or not Path(audio_dir).is_dir():
        return sorted(stimuli)
    available = find_stimulus_audio(audio_dir)
    return sorted(s for s in stimuli if s not in available)


def audio_available(source, audio_dir) -> bool:
    """True when every stimulus of ``source`` (recordings or names) has audio."""
    return not missing_audio(source, audio_dir)


def default_cache_dir(split_dir) -> Path:
    return Path(split_dir).resolve().parent / "stimulus_targets"


def cache_path(cache_dir, stimulus: str, name: str) -> Path:
    return Path(cache_dir) / f"{stimulus}{CACHE_SEP}{name}.npy"


def compute_targets(audio_path: Path, names=TARGET_NAMES) -> dict:
    """``{name: float32 (T, C)}`` for one stimulus audio file."""
    from util import features

    audio, fs = features.load_audio(audio_path)
    functions = {"mel80": features.mel80, "mag": features.magnitude}
    return {name: functions[name](audio, fs) for name in names}


def _cache_ok(path: Path, name: str, audio_path: Path) -> bool:
    """A cache file is reused only when it is newer than its audio and a whole (T, C) float array.

    A truncated or damaged cache file (an interrupted copy, a full disk) is rebuilt, not read.
    """
    from util.features import BANDS

    if not path.is_file() or path.stat().st_mtime < audio_path.stat().st_mtime:
        return False
    try:
        npy = read_npy_header(path)
    except EEGKitError as error:
        log.warning("rebuilding damaged cache file (%s)", error)
        return False
    if len(npy.shape) != 2 or npy.n_cols != BANDS[name] or npy.n_rows == 0 or npy.dtype.kind != "f":
        log.warning("rebuilding cache file %s of shape %s", path, npy.shape)
        return False
    return True


def ensure_stimulus_targets(stimuli, audio_dir, cache_dir, names=TARGET_NAMES, progress: bool = False) -> dict:
    """Compute (or reuse) cached targets; returns ``{stimulus: {name: cache Path}}``."""
    import numpy as np
    from tqdm import tqdm

    from util.atomic import atomic_save_npy

    if audio_dir is None:
        raise EEGKitError(f"{cache_dir}: no stimulus audio folder given, cannot compute {list(names)}")
    audio_files = find_stimulus_audio(audio_dir)
    result = {}
    for stimulus in tqdm(sorted(stimuli), desc="stimulus targets", disable=not progress):
        if stimulus not in audio_files:
            raise EEGKitError(f"{audio_dir}: no audio file for stimulus {stimulus!r} "
                              f"(expected {stimulus}.wav, .npz or .npz.gz)")
        audio_path = audio_files[stimulus]
        paths = {name: cache_path(cache_dir, stimulus, name) for name in names}
        stale = [name for name, path in paths.items() if not _cache_ok(path, name, audio_path)]
        if stale:
            log.info("computing %s for %s from %s", stale, stimulus, audio_path)
            for name, array in compute_targets(audio_path, stale).items():
                atomic_save_npy(paths[name], np.asarray(array, dtype=np.float32))
        for path in paths.values():
            read_npy_header(path)  # a corrupt cache file is reported with its name
        result[stimulus] = paths
    return result
