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

The stimulus audio itself, for the published recipe (``data.audio_targets: mixed``: mel80/mag computed
from the MIXED audio of each training batch), is the feature ``audio``: the audio resampled to
16 kHz, cut to whole 64-Hz frames and stored as rows of 250 samples, so that frame i of every
64-Hz feature and row i of ``audio`` cover the same time and the split offsets, windows and
common lengths of ``task2_regression.data`` apply to it unchanged::

    <cache_dir>/{stimulus}_-_audio.npy      # (T_stimulus, 250) float32, 16 kHz

`spectral_targets` computes mel80/mag in torch from a batch of such windows (flattened to
``(batch, frames * 250)``): each window zero-padded by 250 samples on each side, n_fft 512, a
periodic 400-sample Hann window centred in the 512-sample frame (56 zeros each side), hop 250, no
centring, one-sided; ``mag`` = power (257 bins), ``mel80`` = ``mag`` through
``util.features.mel_filterbank`` (80 HTK-scale filters 0-8 kHz, Slaney area norm), i.e. the same
definition as ``util.features.mel80`` / ``magnitude``, one output frame per input frame.
"""
from __future__ import annotations

import logging
from pathlib import Path

from util.errors import EEGKitError
from util.npy import read_npy_header

AUDIO_SUFFIXES = (".npz.gz", ".wav", ".npz")
TARGET_NAMES = ("mel80", "mag")
AUDIO_FEATURE = "audio"  # the 16-kHz stimulus audio as rows of AUDIO_HOP samples (one row per 64-Hz frame)
AUDIO_FS = 16000
AUDIO_HOP = 250  # 16 kHz / 64 Hz
N_FFT, WIN_LENGTH = 512, 400
STIMULUS_FEATURES = TARGET_NAMES + (AUDIO_FEATURE,)  # the features computed from the stimulus audio
WIDTHS = {"mel80": 80, "mag": 257, AUDIO_FEATURE: AUDIO_HOP}  # columns of each cached feature
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
    functions = {"mel80": features.mel80, "mag": features.magnitude, AUDIO_FEATURE: audio_rows}
    return {name: functions[name](audio, fs) for name in names}


def audio_rows(audio, fs: float):
    """The audio resampled to 16 kHz as ``(frames, 250)`` float32 rows (the tail short of a frame dropped)."""
    import numpy as np

    from util import features

    audio16 = features.resample(np.asarray(audio, dtype=np.float64).reshape(-1), fs, AUDIO_FS)
    frames = audio16.size // AUDIO_HOP
    return audio16[: frames * AUDIO_HOP].reshape(frames, AUDIO_HOP).astype(np.float32)


_SPECTRAL_CONSTANTS: dict = {}


def _spectral_constants(device, dtype):
    """(window (512,), mel80 filterbank (80, 257)) as tensors on ``device``, built once each."""
    import torch

    from util.features import mel_filterbank

    key = (str(device), dtype)
    if key not in _SPECTRAL_CONSTANTS:
        window = torch.zeros(N_FFT, dtype=torch.float64)
        offset = (N_FFT - WIN_LENGTH) // 2  # 56: the Hann window sits in the middle of the frame
        window[offset:offset + WIN_LENGTH] = torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float64)
        fbank = torch.from_numpy(mel_filterbank(AUDIO_FS, N_FFT, 80, 0.0, 8000.0, scale="htk", norm="slaney"))
        _SPECTRAL_CONSTANTS[key] = (window.to(device, dtype), fbank.to(device, dtype))
    return _SPECTRAL_CONSTANTS[key]


def spectral_targets(audio, names=TARGET_NAMES) -> dict:
    """``{name: (batch, frames, bands)}`` for ``mel80``/``mag`` from 16-kHz audio ``(batch, frames * 250)``.

    Each window is zero-padded by 250 samples on each side and framed without centring (module
    docstring), so ``frames * 250`` samples give ``frames`` output frames, frame i centred on sample
    ``250 i``: e.g. 30 s = 480000 samples -> 1920 frames. Computed in the audio's dtype and device.
    """
    import torch

    unknown = [name for name in names if name not in TARGET_NAMES]
    if unknown:
        raise ValueError(f"spectral_targets: unknown targets {unknown} (known: {list(TARGET_NAMES)})")
    if audio.dim() != 2 or audio.shape[1] % AUDIO_HOP:
        raise ValueError(f"spectral_targets: expected audio (batch, frames * {AUDIO_HOP}), got {tuple(audio.shape)}")
    window, fbank = _spectral_constants(audio.device, audio.dtype)
    padded = torch.nn.functional.pad(audio, (AUDIO_HOP, AUDIO_HOP))  # (batch, samples + 500)
    frames = padded.unfold(-1, N_FFT, AUDIO_HOP)  # (batch, frames, 512)
    spectrum = torch.fft.rfft(frames * window, dim=-1)  # (batch, frames, 257)
    power = spectrum.real.square() + spectrum.imag.square()  # (batch, frames, 257)
    out = {}
    for name in names:
        out[name] = power if name == "mag" else power @ fbank.T  # (batch, frames, 257 | 80)
    return out


def _cache_ok(path: Path, name: str, audio_path: Path) -> bool:
    """A cache file is reused only when it is newer than its audio and a whole (T, C) float array.

    A truncated or damaged cache file (an interrupted copy, a full disk) is rebuilt, not read.
    """
    if not path.is_file() or path.stat().st_mtime < audio_path.stat().st_mtime:
        return False
    try:
        npy = read_npy_header(path)
    except EEGKitError as error:
        log.warning("rebuilding damaged cache file (%s)", error)
        return False
    if len(npy.shape) != 2 or npy.n_cols != WIDTHS[name] or npy.n_rows == 0 or npy.dtype.kind != "f":
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
