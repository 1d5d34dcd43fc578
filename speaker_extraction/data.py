"""KU Leuven AAD dataset loader for EEG-guided speaker extraction (NeuroSpex).

Input: a dataset folder as distributed -- ``S1.mat`` ... ``S16.mat`` (see
``speaker_extraction.kul_format``) and ``stimuli/part{p}_track{t}_{dry|hrtf}.wav``
(44.1 kHz). Output: aligned 4-s windows of

- ``mixture`` ``(32000,)``: 0-dB sum (equal RMS) of ``target`` and ``interferer``,
- ``target`` ``(32000,)``: the attended track's *dry* wav at 8 kHz,
- ``interferer`` ``(32000,)``: the other track of the same part (dry, 8 kHz),
- ``eeg`` ``(512, C)``: 128 Hz EEG, band-passed (default 1-32 Hz, Butterworth
  order 4, zero phase ``sosfiltfilt``), z-scored per trial and channel,

plus ``subject``, ``trial`` (the TrialID) and ``window`` (index in the trial).

Processing facts
- Audio is resampled to 8 kHz with ``resample_poly`` and cut to the EEG length:
  ``n_audio = n_eeg * fs_audio / fs_eeg`` (62.5 samples per EEG sample).
  Audio shorter than the EEG is an error naming both files.
- Target/interferer files come from the trial's ``stimuli`` cell (left, right):
  the one whose track number equals ``attended_track`` is the target; any
  ``_hrtf`` is replaced by ``_dry``. Files whose names do not parse fall back to
  ``part{part}_track{t}_dry.wav``.
- 0 dB: with ``mix_scope: trial`` (default) both talkers are scaled to RMS
  ``level_rms`` over the whole cut trial, so windows are exact slices of the
  whole-trial arrays; ``mix_scope: window`` rescales each window to equal RMS.
- EEG normalisation (``normalize: trial``): per trial, per channel, subtract
  the mean and divide by the standard deviation of that band-passed trial. It
  uses only the trial's own EEG (available at test time, no labels), so it is
  the same for train and test; ``normalize: none`` keeps microvolts.
- By default only non-repetition trials (``repetition == 0``) are used
  (``include_repetitions: true`` adds the repetitions).

Splits (never random windows inside a trial, which leaks trial identity):
- ``trial`` protocol: per subject, the selected trials are shuffled with
  ``numpy.random.default_rng([seed, subject])``; the first ``test_trials`` go
  to test, the next ``val_trials`` to val, the rest to train. ``split_table``
  prints the assignment.
- ``loso`` protocol: every trial of ``test_subject`` is test; the other
  subjects give ``val_trials`` trials each (same seeded rule) to val, the rest
  to train.

Memory: a subject's ``.mat`` is read only when its cache is missing or stale;
then every trial's filtered EEG is saved as ``.npy`` (atomic) and later
memory-mapped; stimuli are cached as 8-kHz ``.npy`` and memory-mapped. Open
memory maps are kept in a small LRU over subjects (``subject_cache``).

Public API: ``load_data_config``, ``data_defaults``, ``KULCorpus``,
``TrialRecord``, ``KULWindows`` (torch Dataset), ``split_by_trial``,
``split_leave_one_subject_out``, ``make_split``, ``split_table``,
``build_datasets``, ``bandpass_eeg``, ``zscore_per_channel``.
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.signal
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from speaker_extraction.kul_format import BIOSEMI64, N_CHANNELS, read_subject_mat
from util.atomic import atomic_save_npy, atomic_write_json
from util.config import apply_overrides, load_config, load_defaults
from util.errors import EEGKitError
from util.features import load_audio

__all__ = [
    "data_defaults", "load_data_config", "TrialRecord", "KULCorpus", "KULWindows", "split_by_trial",
    "split_leave_one_subject_out", "make_split", "split_table", "build_datasets", "bandpass_eeg",
    "zscore_per_channel",
]

CACHE_VERSION = 1

DEFAULTS_PATH = Path(__file__).resolve().parent / "configs" / "defaults.yaml"


def data_defaults() -> dict:
    """The ``data:`` defaults of ``configs/defaults.yaml`` (the one place they live)."""
    return load_defaults(DEFAULTS_PATH)["data"]


def load_data_config(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict:
    """The data defaults updated with a YAML file (optional) and ``key=value`` overrides."""
    config = data_defaults()
    if path is not None:
        loaded = load_config(path)
        loaded = loaded.get("data", loaded)
        _merge(config, loaded)
    return apply_overrides(config, overrides)


def _merge(base: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# ---------------------------------------------------------------------------
# Signal helpers
def _band_sos(fs: float, band: Sequence[float], order: int) -> np.ndarray:
    """The Butterworth design of `bandpass_eeg` (a high-pass when the upper edge is at or above Nyquist)."""
    low, high = float(band[0]), float(band[1])
    if high >= fs / 2.0:
        return scipy.signal.butter(order, low, btype="highpass", fs=fs, output="sos")
    return scipy.signal.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


MAX_FILTER_MEMORY_S = 60.0  # the band-pass's slowest pole may ring for at most this long (a near-singular design)


def check_band(band: Sequence[float] | None, fs: float, order: int) -> None:
    """Refuse a ``data.band`` the filter design cannot honour: the lower edge at or above Nyquist, or a band
    so narrow or so low that the slowest pole's time constant exceeds ``MAX_FILTER_MEMORY_S`` (the design
    is near singular: ``sosfiltfilt`` fails or returns an all-but-zero signal). One config line."""
    if band is None:
        return
    low, high = float(band[0]), float(band[1])
    if low >= fs / 2.0:
        raise EEGKitError(f"config: data.band {list(band)}: the lower edge must be below the Nyquist frequency "
                          f"{fs / 2.0:g} Hz of data.fs_eeg {fs:g}")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            poles = scipy.signal.sos2zpk(_band_sos(fs, band, int(order)))[1]
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
            raise EEGKitError(f"config: data.band {list(band)}: no Butterworth design of order "
                              f"{order} at {fs:g} Hz ({error})") from None
    margin = 1.0 - float(np.max(np.abs(poles))) if len(poles) else 1.0
    if not np.isfinite(margin) or margin * fs * MAX_FILTER_MEMORY_S < 1.0:
        raise EEGKitError(f"config: data.band {list(band)} Hz is too narrow or too low for an order-{order} "
                          f"Butterworth at data.fs_eeg {fs:g} Hz (it rings for over {MAX_FILTER_MEMORY_S:g} s: a "
                          f"near-singular design); widen the band or lower data.filter_order")


def bandpass_eeg(eeg: np.ndarray, fs: float, band: Sequence[float] | None, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth band-pass over time; ``eeg`` ``(time, channels)`` -> float32 (`check_band` first)."""
    eeg = np.asarray(eeg, dtype=np.float64)  # (time, C)
    if band is None:
        return eeg.astype(np.float32)
    check_band(band, fs, order)
    return scipy.signal.sosfiltfilt(_band_sos(fs, band, order), eeg, axis=0).astype(np.float32)


def zscore_per_channel(eeg: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Per-channel z-score over time of ``(time, channels)`` -> float32 (the trial normalisation)."""
    eeg = np.asarray(eeg, dtype=np.float64)
    return ((eeg - eeg.mean(axis=0)) / (eeg.std(axis=0) + eps)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


_STIM_RE = re.compile(r"^(?P<prefix>.*?)part(?P<part>\d+)_track(?P<track>\d+)_(?P<kind>dry|hrtf)(?P<suffix>.*)$",
                      re.IGNORECASE)


def _dry_pair(stimuli: tuple[str, str], part: int, attended_track: int) -> tuple[str, str]:
    """(target wav name, interferer wav name), both dry versions."""
    parsed = {}
    for name in stimuli:
        base = Path(str(name).replace("\\", "/")).name
        match = _STIM_RE.match(base)
        if match:
            dry = f"{match['prefix']}part{match['part']}_track{match['track']}_dry{match['suffix']}"
            if not dry.lower().endswith(".wav"):
                dry += ".wav"
            parsed[int(match["track"])] = dry
    other = 3 - attended_track
    if attended_track in parsed and other in parsed:
        return parsed[attended_track], parsed[other]
    return f"part{part}_track{attended_track}_dry.wav", f"part{part}_track{other}_dry.wav"


# ---------------------------------------------------------------------------
@dataclass
class TrialRecord:
    """Metadata of one trial plus where its cached arrays live."""

    subject: int                 # 1 for S1.mat
    trial: int                   # TrialID
    attended_track: int
    attended_ear: str
    part: int
    repetition: int
    condition: str
    experiment: int
    stimuli: tuple[str, str]     # (left, right) as stored
    target_wav: str              # dry wav name of the attended track
    interferer_wav: str          # dry wav name of the other track
    n_eeg: int                   # EEG samples (128 Hz)
    eeg_file: str                # cached filtered EEG .npy, (n_eeg, 64) float32
    mean: list                   # per-channel mean of the filtered trial
    std: list                    # per-channel std of the filtered trial
    n_audio: int = 0             # audio samples at fs_audio (= n_eeg * fs_audio / fs_eeg)
    target_gain: float = 1.0     # trial-scope gains to level_rms
    interferer_gain: float = 1.0

    @property
    def key(self) -> tuple[int, int]:
        return (self.subject, self.trial)


class KULCorpus:
    """Lazy, cached access to a KUL dataset folder (or a synthetic one in the same format).

    ``subjects`` restricts which ``S*.mat`` files are used (numbers, e.g. [1, 2]).
    ``cache_dir`` defaults to ``<root>/.eegkit_cache``.
    """

    def __init__(self, root: str | Path, config: dict | None = None, cache_dir: str | Path | None = None,
                 stimuli_dir: str | Path | None = None, subjects: Sequence[int] | None = None,
                 progress: bool = True):
        self.root = Path(root)
        self.config = load_data_config() if config is None else _with_defaults(config)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / ".eegkit_cache"
        self.stimuli_dir = Path(stimuli_dir) if stimuli_dir is not None else self.root / "stimuli"
        self.progress = progress
        cfg = self.config
        self.fs_eeg, self.fs_audio = int(cfg["fs_eeg"]), int(cfg["fs_audio"])
        ratio = Fraction(self.fs_audio, self.fs_eeg)
        self.window_eeg = int(round(cfg["window_s"] * self.fs_eeg))
        self.hop_eeg = int(round(cfg["hop_s"] * self.fs_eeg))
        if self.window_eeg <= 0 or self.hop_eeg <= 0:
            raise EEGKitError(f"{self.root}: window_s and hop_s must be positive")
        for name, n in (("window_s", self.window_eeg), ("hop_s", self.hop_eeg)):
            if (n * ratio).denominator != 1:
                raise EEGKitError(f"{self.root}: {name}={cfg[name]} does not give whole audio samples at "
                                  f"{self.fs_audio} Hz for EEG at {self.fs_eeg} Hz")
        self.window_audio = int(self.window_eeg * ratio)
        self._ratio = ratio
        self.channel_index = self._resolve_channels(cfg["channels"])
        if cfg["normalize"] not in ("trial", "none"):
            raise EEGKitError(f"{self.root}: normalize must be 'trial' or 'none', got {cfg['normalize']!r}")
        if cfg["mix_scope"] not in ("trial", "window"):
            raise EEGKitError(f"{self.root}: mix_scope must be 'trial' or 'window', got {cfg['mix_scope']!r}")

        if not self.root.is_dir():
            raise EEGKitError(f"{self.root}: dataset folder not found")
        files = {}
        for path in sorted(self.root.glob("S*.mat")):
            match = re.fullmatch(r"S(\d+)\.mat", path.name)
            if match:
                number = int(match[1])
                if number in files:  # S1.mat and S01.mat: one would silently shadow the other
                    raise EEGKitError(f"{path}: subject {number} is also {files[number].name}; "
                                      f"keep one file per subject")
                files[number] = path
        if not files:
            raise EEGKitError(f"{self.root}: no subject files S1.mat, S2.mat, ... found")
        if subjects is not None:
            missing = [s for s in subjects if s not in files]
            if missing:
                raise EEGKitError(f"{self.root}: subject file(s) {', '.join(f'S{s}.mat' for s in missing)} not found")
            files = {s: files[s] for s in subjects}
        self.subject_files = dict(sorted(files.items()))

        self._records: dict[tuple[int, int], TrialRecord] = {}
        self._prepare()
        self._eeg_maps: OrderedDict[int, dict[int, np.ndarray]] = OrderedDict()
        self._audio_maps: dict[str, np.ndarray] = {}

    # -- configuration helpers ------------------------------------------------
    def _resolve_channels(self, channels) -> np.ndarray:
        if channels is None:
            return np.arange(N_CHANNELS)
        index = []
        for channel in channels:
            if isinstance(channel, (int, np.integer)):
                if not 0 <= int(channel) < N_CHANNELS:
                    raise EEGKitError(f"{self.root}: channel index {channel} out of range 0..{N_CHANNELS - 1}")
                index.append(int(channel))
            else:
                lookup = {name.lower(): k for k, name in enumerate(BIOSEMI64)}
                if str(channel).lower() not in lookup:
                    raise EEGKitError(f"{self.root}: unknown channel {channel!r} (BioSemi-64 10-20 names)")
                index.append(lookup[str(channel).lower()])
        if not index:
            raise EEGKitError(f"{self.root}: channels list is empty")
        return np.asarray(index)

    @property
    def n_channels(self) -> int:
        return len(self.channel_index)

    def _band_tag(self) -> str:
        band = self.config["band"]
        band_text = "raw" if band is None else f"{float(band[0]):g}-{float(band[1]):g}Hz"
        return f"eeg_{band_text}_o{int(self.config['filter_order'])}"

    # -- preparation (cache) -------------------------------------------------
    def _prepare(self) -> None:
        subjects = list(self.subject_files)
        bar = tqdm(subjects, desc="KUL subjects", disable=not self.progress or len(subjects) < 2, leave=False)
        for subject in bar:
            for record in self._prepare_subject(subject):
                if record.key in self._records:
                    raise EEGKitError(f"{self.subject_files[subject]}: duplicate TrialID {record.trial}")
                self._records[record.key] = record
        self._prepare_audio()

    def _prepare_subject(self, subject: int) -> list[TrialRecord]:
        mat_path = self.subject_files[subject]
        stat = mat_path.stat()
        folder = self.cache_dir / self._band_tag() / f"S{subject}"
        meta_path = folder / "meta.json"
        source = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "version": CACHE_VERSION,
                  "band": self.config["band"], "order": int(self.config["filter_order"])}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                if meta.get("source") == source and all(_cached_array_ok(folder / r["eeg_file"], (r["n_eeg"], N_CHANNELS))
                                                        for r in meta["trials"]):
                    return [TrialRecord(**{**r, "stimuli": tuple(r["stimuli"])}) for r in meta["trials"]]
            except (ValueError, KeyError, TypeError, RecursionError):
                pass  # stale or corrupt cache (also a truncated trial file): rebuild below
        records = []
        for raw in read_subject_mat(mat_path):
            if abs(raw.fs - self.fs_eeg) > 1e-6:
                raise EEGKitError(f"{mat_path}: trial {raw.trial_id}: EEG sampled at {raw.fs:g} Hz, "
                                  f"expected {self.fs_eeg} Hz")
            eeg = bandpass_eeg(raw.eeg, self.fs_eeg, self.config["band"], int(self.config["filter_order"]))  # (T, 64)
            name = f"trial{raw.trial_id:03d}.npy"
            atomic_save_npy(folder / name, eeg)
            target_wav, interferer_wav = _dry_pair(raw.stimuli, raw.part, raw.attended_track)
            records.append(TrialRecord(
                subject=subject, trial=raw.trial_id, attended_track=raw.attended_track,
                attended_ear=raw.attended_ear, part=raw.part, repetition=raw.repetition,
                condition=raw.condition, experiment=raw.experiment, stimuli=raw.stimuli,
                target_wav=target_wav, interferer_wav=interferer_wav, n_eeg=int(eeg.shape[0]), eeg_file=name,
                mean=eeg.mean(axis=0, dtype=np.float64).tolist(), std=eeg.std(axis=0, dtype=np.float64).tolist()))
        atomic_write_json(meta_path, {"source": source, "trials": [asdict(r) for r in records]})
        return records

    def _audio_cache_path(self, wav_name: str) -> Path:
        return self.cache_dir / f"audio_{self.fs_audio}" / (Path(wav_name).stem + ".npy")

    def _ensure_audio(self, wav_name: str, needed_by: TrialRecord) -> Path:
        """Resample ``stimuli/wav_name`` to fs_audio once and cache it; returns the .npy path."""
        wav_path = self.stimuli_dir / wav_name
        mat_path = self.subject_files[needed_by.subject]
        if not wav_path.exists():  # a FIFO or a device: load_audio's one line (util.inputs.open_regular)
            raise EEGKitError(f"{wav_path}: stimulus file not found (needed by {mat_path.name} trial {needed_by.trial})")
        cache_path = self._audio_cache_path(wav_name)
        side = cache_path.with_suffix(".json")
        stat = wav_path.stat()
        source = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "version": CACHE_VERSION}
        if cache_path.is_file() and side.is_file():
            try:
                if json.loads(side.read_text()) == source and _cached_array_ok(cache_path, None):
                    return cache_path
            except (ValueError, RecursionError):
                pass  # stale or corrupt cache: rebuild below
        audio, fs = load_audio(wav_path, np.float64)  # (samples,)
        ratio = Fraction(self.fs_audio, fs)
        if ratio != 1:
            audio = scipy.signal.resample_poly(audio, ratio.numerator, ratio.denominator)
        atomic_save_npy(cache_path, audio.astype(np.float32))
        atomic_write_json(side, source)
        return cache_path

    def _prepare_audio(self) -> None:
        records = self.records()
        for record in tqdm(records, desc="KUL stimuli", disable=not self.progress or len(records) < 4, leave=False):
            record.n_audio = int(record.n_eeg * self._ratio)
            levels = []
            for wav_name in (record.target_wav, record.interferer_wav):
                path = self._ensure_audio(wav_name, record)
                audio = np.load(path, mmap_mode="r")
                if len(audio) < record.n_audio:
                    mat_name = self.subject_files[record.subject].name
                    raise EEGKitError(
                        f"{self.stimuli_dir / wav_name}: stimulus ({len(audio) / self.fs_audio:.2f} s) is shorter than "
                        f"the EEG of {mat_name} trial {record.trial} ({record.n_eeg / self.fs_eeg:.2f} s)")
                levels.append(_rms(np.asarray(audio[: record.n_audio])))
            level = float(self.config["level_rms"])
            record.target_gain = level / max(levels[0], 1e-12)
            record.interferer_gain = level / max(levels[1], 1e-12)

    # -- queries ---------------------------------------------------------------
    def records(self, subjects: Sequence[int] | None = None) -> list[TrialRecord]:
        """Selected trials (repetitions only if ``include_repetitions``), sorted by (subject, trial)."""
        include_rep = bool(self.config["include_repetitions"])
        out = [r for r in self._records.values()
               if (include_rep or r.repetition == 0) and (subjects is None or r.subject in subjects)]
        return sorted(out, key=lambda r: r.key)

    @property
    def subjects(self) -> list[int]:
        return list(self.subject_files)

    def record(self, subject: int, trial: int) -> TrialRecord:
        try:
            return self._records[(int(subject), int(trial))]
        except KeyError:
            raise EEGKitError(f"{self.root}: no trial {trial} for subject S{subject}") from None

    def n_windows(self, record: TrialRecord) -> int:
        if record.n_eeg < self.window_eeg:
            return 0
        return (record.n_eeg - self.window_eeg) // self.hop_eeg + 1

    # -- array access ----------------------------------------------------------
    def _eeg_map(self, record: TrialRecord) -> np.ndarray:
        maps = self._eeg_maps.get(record.subject)
        if maps is None:
            maps = {}
            self._eeg_maps[record.subject] = maps
            while len(self._eeg_maps) > max(1, int(self.config["subject_cache"])):
                self._eeg_maps.popitem(last=False)
        else:
            self._eeg_maps.move_to_end(record.subject)
        if record.trial not in maps:
            path = self.cache_dir / self._band_tag() / f"S{record.subject}" / record.eeg_file
            maps[record.trial] = np.load(path, mmap_mode="r")
        return maps[record.trial]

    def _audio_map(self, wav_name: str) -> np.ndarray:
        if wav_name not in self._audio_maps:
            self._audio_maps[wav_name] = np.load(self._audio_cache_path(wav_name), mmap_mode="r")
        return self._audio_maps[wav_name]

    def eeg(self, record: TrialRecord, start: int = 0, length: int | None = None) -> np.ndarray:
        """EEG ``(length, C)`` float32 from EEG sample ``start``: filtered, channel subset, normalised."""
        length = record.n_eeg - start if length is None else length
        eeg = np.asarray(self._eeg_map(record)[start:start + length], dtype=np.float32)  # (length, 64)
        if self.config["normalize"] == "trial":
            mean = np.asarray(record.mean, dtype=np.float32)
            std = np.asarray(record.std, dtype=np.float32)
            eeg = (eeg - mean) / (std + 1e-8)
        return np.ascontiguousarray(eeg[:, self.channel_index])

    def audio(self, record: TrialRecord, start: int = 0, length: int | None = None) -> dict[str, np.ndarray]:
        """``{"mixture", "target", "interferer"}`` float32 ``(length,)`` from audio sample ``start``."""
        length = record.n_audio - start if length is None else length
        if start < 0 or start + length > record.n_audio:
            raise EEGKitError(f"{self.root}: S{record.subject} trial {record.trial}: audio range "
                              f"[{start}, {start + length}) outside 0..{record.n_audio}")
        target = np.asarray(self._audio_map(record.target_wav)[start:start + length], dtype=np.float32)
        interferer = np.asarray(self._audio_map(record.interferer_wav)[start:start + length], dtype=np.float32)
        if self.config["mix_scope"] == "window":
            level = float(self.config["level_rms"])
            target = target * np.float32(level / max(_rms(target), 1e-8))
            interferer = interferer * np.float32(level / max(_rms(interferer), 1e-8))
        else:
            target = target * np.float32(record.target_gain)
            interferer = interferer * np.float32(record.interferer_gain)
        return {"mixture": target + interferer, "target": target, "interferer": interferer}

    def trial_arrays(self, subject: int, trial: int) -> dict:
        """Whole trial: mixture/target/interferer ``(n_audio,)``, eeg ``(n_eeg, C)`` and metadata."""
        record = self.record(subject, trial)
        out = self.audio(record)
        out.update(eeg=self.eeg(record), subject=record.subject, trial=record.trial, fs_audio=self.fs_audio,
                   fs_eeg=self.fs_eeg, attended_track=record.attended_track, attended_ear=record.attended_ear)
        return out

    def window(self, record: TrialRecord, index: int) -> dict:
        """Window ``index`` of a trial as numpy arrays (see ``KULWindows``)."""
        start_eeg = index * self.hop_eeg
        start_audio = int(start_eeg * self._ratio)
        out = self.audio(record, start_audio, self.window_audio)
        out["eeg"] = self.eeg(record, start_eeg, self.window_eeg)  # (512, C)
        return out

    def __getstate__(self):  # DataLoader workers reopen their own memory maps
        state = self.__dict__.copy()
        state["_eeg_maps"] = OrderedDict()
        state["_audio_maps"] = {}
        return state


def _cached_array_ok(path: Path, shape: tuple | None) -> bool:
    """True when a cache ``.npy`` is whole (header readable, data as long as the header says) and has
    ``shape`` (or is a non-empty 1-D array when ``shape`` is None); a damaged cache file is rebuilt
    instead of failing later in a memory map."""
    from util.npy import read_npy_header

    try:
        npy = read_npy_header(path)
    except EEGKitError:
        return False
    if shape is None:
        return len(npy.shape) == 1 and npy.n_rows > 0
    return tuple(npy.shape) == tuple(shape)


def check_window_coverage(corpus: "KULCorpus") -> None:
    """Refuse a subject none of whose selected trials holds one window (it would vanish from every split
    without a word); warn, naming them, about single trials shorter than a window."""
    import warnings

    window_s = corpus.window_eeg / corpus.fs_eeg
    for subject in corpus.subjects:
        records = corpus.records([subject])
        short = [r for r in records if corpus.n_windows(r) == 0]
        if not short:
            continue
        lengths = ", ".join(f"trial {r.trial} {r.n_eeg / corpus.fs_eeg:.2f} s" for r in short)
        if len(short) == len(records):
            raise EEGKitError(f"{corpus.subject_files[subject]}: every trial is shorter than one {window_s:g}-s "
                              f"window (data.window_s): {lengths}")
        warnings.warn(f"{corpus.subject_files[subject]}: trials shorter than one {window_s:g}-s window give no "
                      f"windows: {lengths}")


def _with_defaults(config: dict) -> dict:
    merged = data_defaults()
    _merge(merged, config.get("data", config) if isinstance(config.get("data"), dict) else config)
    return merged


# ---------------------------------------------------------------------------
# Splits
def _seeded_order(trials: list[int], subject: int, seed: int) -> list[int]:
    rng = np.random.default_rng([int(seed), int(subject)])
    return [trials[k] for k in rng.permutation(len(trials))]


def split_by_trial(corpus: KULCorpus, val_trials: int = 1, test_trials: int = 1, seed: int = 0,
                   subjects: Sequence[int] | None = None) -> dict[str, list[tuple[int, int]]]:
    """Per subject: seeded shuffle of its trials; first ``test_trials`` -> test, next ``val_trials`` -> val."""
    split = {"train": [], "val": [], "test": []}
    for subject in (corpus.subjects if subjects is None else subjects):
        trials = [r.trial for r in corpus.records([subject])]
        if len(trials) < val_trials + test_trials + 1:
            raise EEGKitError(f"{corpus.subject_files[subject]}: {len(trials)} trial(s) cannot fill "
                              f"{test_trials} test + {val_trials} val + at least 1 train")
        order = _seeded_order(trials, subject, seed)
        split["test"] += [(subject, t) for t in order[:test_trials]]
        split["val"] += [(subject, t) for t in order[test_trials:test_trials + val_trials]]
        split["train"] += [(subject, t) for t in order[test_trials + val_trials:]]
    return {name: sorted(keys) for name, keys in split.items()}


def split_leave_one_subject_out(corpus: KULCorpus, test_subject: int, val_trials: int = 1,
                                seed: int = 0) -> dict[str, list[tuple[int, int]]]:
    """All trials of ``test_subject`` -> test; ``val_trials`` per other subject -> val; rest -> train."""
    if test_subject not in corpus.subjects:
        raise EEGKitError(f"{corpus.root}: test subject S{test_subject}.mat is not in the dataset")
    others = [s for s in corpus.subjects if s != test_subject]
    if not others:
        raise EEGKitError(f"{corpus.root}: leave-one-subject-out needs at least 2 subjects")
    inner = split_by_trial(corpus, val_trials=val_trials, test_trials=0, seed=seed, subjects=others)
    return {"train": inner["train"], "val": inner["val"],
            "test": [r.key for r in corpus.records([test_subject])]}


def make_split(corpus: KULCorpus, split_cfg: dict | None = None) -> dict[str, list[tuple[int, int]]]:
    """Dispatch on ``split_cfg['protocol']`` ('trial' | 'loso')."""
    cfg = {**data_defaults()["split"], **(split_cfg or corpus.config.get("split", {}))}
    if cfg["protocol"] == "trial":
        return split_by_trial(corpus, int(cfg["val_trials"]), int(cfg["test_trials"]), int(cfg["seed"]))
    if cfg["protocol"] == "loso":
        if cfg.get("test_subject") is None:
            raise EEGKitError(f"{corpus.root}: split.protocol=loso needs split.test_subject")
        return split_leave_one_subject_out(corpus, int(cfg["test_subject"]), int(cfg["val_trials"]), int(cfg["seed"]))
    raise EEGKitError(f"{corpus.root}: unknown split protocol {cfg['protocol']!r} (trial | loso)")


def split_table(corpus: KULCorpus, split: dict[str, list[tuple[int, int]]]) -> str:
    """Readable table: one line per trial with its split, attended track and ear."""
    lines = ["subject trial split track ear windows"]
    where = {key: name for name, keys in split.items() for key in keys}
    for record in corpus.records():
        if record.key in where:
            lines.append(f"S{record.subject:<6} {record.trial:<5} {where[record.key]:<5} {record.attended_track:<5} "
                         f"{record.attended_ear:<3} {corpus.n_windows(record)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
class KULWindows(Dataset):
    """Aligned windows of the given trials; item = dict of float32 tensors and ints.

    ``{"mixture": (32000,), "target": (32000,), "interferer": (32000,), "eeg": (512, C),
    "subject": int, "trial": int, "window": int}`` (sizes for the 4-s default).
    """

    def __init__(self, corpus: KULCorpus, trial_keys: Iterable[tuple[int, int]]):
        self.corpus = corpus
        self.records = [corpus.record(s, t) for s, t in trial_keys]
        self.index = [(k, w) for k, record in enumerate(self.records) for w in range(corpus.n_windows(record))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict:
        k, w = self.index[item]
        record = self.records[k]
        arrays = self.corpus.window(record, w)
        sample = {name: torch.from_numpy(array) for name, array in arrays.items()}
        sample.update(subject=record.subject, trial=record.trial, window=w)
        return sample


def build_datasets(root: str | Path, config: dict | None = None, cache_dir: str | Path | None = None,
                   progress: bool = True) -> tuple[KULCorpus, dict[str, KULWindows]]:
    """Corpus plus ``{"train", "val", "test"}`` window datasets from ``config['split']``."""
    corpus = KULCorpus(root, config=config, cache_dir=cache_dir, progress=progress)
    check_window_coverage(corpus)
    split = make_split(corpus)
    return corpus, {name: KULWindows(corpus, keys) for name, keys in split.items()}
