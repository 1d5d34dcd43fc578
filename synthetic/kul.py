"""Synthetic KU Leuven AAD dataset in the real on-disk format.

``generate(out, subjects=2, trials=8, minutes=1.0, seed=0)`` writes

- ``out/S1.mat`` ... : a 1 x n cell array ``trials`` of structs with the
  fields of the real files (see ``speaker_extraction.kul_format``): RawData
  (Channels, EegData samples x 64, float32 microvolts), FileHeader
  (SampleRate 128), TrialID, attended_ear, stimuli (left, right), condition,
  experiment, part, attended_track, repetition, subject.
- ``out/stimuli/part{p}_track{t}_{dry,hrtf}.wav``: 44.1 kHz 16-bit PCM.

Stimuli: ``n_parts = min(4, ceil(trials / 2))`` parts ("stories"), each with
two talkers from ``synthetic.speech`` (espeak-ng): track 1 a low, slower voice
(``en+m3``, 150 wpm, pitch 35), track 2 a higher, faster one (``en-us+m1``,
185 wpm, pitch 70). Each wav is ``EEG length + extra_s`` long (the real audio is
longer than the EEG too). The ``hrtf`` files are a crude binaural rendering
(stereo: near ear = the dry signal, far ear = 0.6 ms later, low-passed at
1.5 kHz and 6 dB quieter), not a measured HRTF; the loader uses only ``dry``.

Trials (per subject, the same design for all subjects): trial k (0-based)
plays part ``(k // 2) % n_parts + 1``, so every part is heard twice, once
attending each track; ``attended_track`` alternates 1, 2, 1, 2, ...;
``attended_ear`` alternates in pairs L, L, R, R, ... so all four track/ear
combinations occur; the attended track is presented to the attended ear
(``stimuli`` = (left file, right file)). ``condition`` alternates in pairs of
parts (dry, dry, HRTF, HRTF by part) with ``experiment`` 1 (dry) / 2 (HRTF).
``repetitions`` extra trials (``repetition = 1``, a third of the length, the
start of the same stimuli) follow the main ones, as in the real data.

EEG (``synthetic.eeg_forward`` at 128 Hz): one driver per trial,
``z(env_attended) + attenuation * z(env_unattended)`` (``attenuation`` 1/3 by
default), where ``env`` is the compressed (|x|^0.6) broadband envelope
resampled to 128 Hz; subject-specific TRFs and scalp patterns
(``make_subject``), 1/f background high-passed at 0.5 Hz, alpha, blinks,
sensor noise, at ``snr_db`` (stimulus-driven vs background power).
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.io.wavfile
import scipy.signal
from tqdm import tqdm

from speaker_extraction.kul_format import BIOSEMI64, RawTrial, write_subject_mat
from util.atomic import atomic_path
from synthetic.eeg_forward import make_subject, simulate_eeg
from util.errors import EEGKitError
from synthetic.speech import speech_stream

__all__ = ["generate", "VOICES", "FS_EEG", "FS_WAV", "speech_envelope"]

FS_EEG = 128
FS_WAV = 44100
# (voice, rate_wpm, pitch) per track: different voice, speed and pitch
VOICES = {1: ("en+m3", 150, 35), 2: ("en-us+m1", 185, 70)}  # en-us+f2 is not deterministic


def speech_envelope(audio: np.ndarray, fs: int, fs_out: int = FS_EEG, power: float = 0.6) -> np.ndarray:
    """Compressed broadband envelope ``|audio| ** power`` anti-alias resampled to ``fs_out``: (T,) float64."""
    ratio = Fraction(int(fs_out), int(fs))
    envelope = np.abs(np.asarray(audio, dtype=np.float64)) ** power
    return np.clip(scipy.signal.resample_poly(envelope, ratio.numerator, ratio.denominator), 0, None)


def _write_wav(path: Path, audio: np.ndarray, fs: int) -> None:
    """16-bit PCM wav (mono (n,) or stereo (n, 2)), atomically."""
    pcm = np.clip(np.round(np.asarray(audio) * 32767.0), -32768, 32767).astype(np.int16)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            scipy.io.wavfile.write(handle, fs, pcm)


def _binaural(audio: np.ndarray, fs: int) -> np.ndarray:
    """Crude 'from the left' rendering: (n, 2) with a delayed, low-passed, quieter far (right) ear."""
    delay = int(round(0.0006 * fs))
    sos = scipy.signal.butter(2, 1500, btype="lowpass", fs=fs, output="sos")
    far = 0.5 * scipy.signal.sosfilt(sos, np.concatenate([np.zeros(delay), audio[: len(audio) - delay]]))
    return np.stack([audio, far], axis=1)


def _trial_design(trials: int, repetitions: int, n_eeg_main: int) -> list[dict]:
    n_parts = min(4, max(1, math.ceil(trials / 2)))
    design = []
    for k in range(trials + repetitions):
        repetition = int(k >= trials)
        j = k - trials if repetition else k
        part = (j // 2) % n_parts + 1
        condition = "dry" if ((part - 1) // 2) % 2 == 0 else "HRTF"
        n_eeg = n_eeg_main if not repetition else max(2 * ((n_eeg_main // 3) // 2), 2)
        design.append(dict(trial_id=k + 1, part=part, attended_track=1 + j % 2,
                           attended_ear="L" if (j // 2) % 2 == 0 else "R", condition=condition,
                           experiment=1 if condition == "dry" else 2, repetition=repetition, n_eeg=n_eeg))
    return design


def generate(out: str | Path, subjects: int = 2, trials: int = 8, minutes: float = 1.0, seed: int = 0,
             repetitions: int = 0, snr_db: float = -3.0, attenuation: float = 1 / 3, extra_s: float = 1.0,
             progress: bool = True) -> Path:
    """Write a synthetic KUL dataset to ``out`` (see the module docstring); returns ``out`` as a Path.

    ``subjects`` S1..Sn; ``trials`` non-repetition trials per subject of ``minutes``
    each (floats allowed); ``repetitions`` extra short repetition trials;
    ``snr_db`` stimulus-driven vs background EEG power; ``attenuation`` gain of
    the unattended envelope relative to the attended; ``extra_s`` audio beyond
    the EEG end.
    """
    out = Path(out)
    if not np.isfinite([minutes, snr_db, attenuation, extra_s]).all() or int(seed) < 0:
        raise EEGKitError(f"{out}: minutes, snr_db, attenuation and extra_s must be finite and seed >= 0 "
                          f"(got {minutes}, {snr_db}, {attenuation}, {extra_s}, seed {seed})")
    if subjects < 1 or trials < 1 or minutes <= 0 or repetitions < 0 or extra_s < 0:
        raise EEGKitError(f"{out}: need subjects >= 1, trials >= 1, minutes > 0, repetitions >= 0, extra_s >= 0")
    n_eeg = 2 * int(round(minutes * 60 * FS_EEG / 2))  # even, so audio at 8 kHz is whole samples (x62.5)
    if n_eeg < 2 * FS_EEG:
        raise EEGKitError(f"{out}: minutes={minutes} gives trials shorter than 2 s")
    design = _trial_design(trials, repetitions, n_eeg)
    parts = sorted({d["part"] for d in design})
    stimulus_s = n_eeg / FS_EEG + extra_s
    (out / "stimuli").mkdir(parents=True, exist_ok=True)

    envelopes: dict[tuple[int, int], np.ndarray] = {}  # (part, track) -> (T_eeg,) at 128 Hz
    jobs = [(p, t) for p in parts for t in (1, 2)]
    for part, track in tqdm(jobs, desc="KUL stimuli (TTS)", disable=not progress, leave=False):
        voice, rate_wpm, pitch = VOICES[track]
        audio, fs = speech_stream(stimulus_s, voice=voice, rate_wpm=rate_wpm, pitch=pitch,
                                  seed=int(seed) * 1000 + 10 * part + track)
        audio = 0.7 * audio / max(float(np.max(np.abs(audio))), 1e-6)  # (samples,) headroom for 16-bit
        envelopes[(part, track)] = speech_envelope(audio, fs)
        ratio = Fraction(FS_WAV, fs)
        audio_wav = scipy.signal.resample_poly(audio, ratio.numerator, ratio.denominator)
        audio_wav = np.clip(audio_wav, -1.0, 1.0)
        _write_wav(out / "stimuli" / f"part{part}_track{track}_dry.wav", audio_wav, FS_WAV)
        _write_wav(out / "stimuli" / f"part{part}_track{track}_hrtf.wav", _binaural(audio_wav, FS_WAV), FS_WAV)

    total = subjects * len(design)
    bar = tqdm(total=total, desc="KUL EEG", disable=not progress, leave=False)
    for subject in range(1, subjects + 1):
        head = make_subject(int(seed) * 1000 + subject, FS_EEG, n_drivers=1)
        raw_trials = []
        for d in design:
            rng = np.random.default_rng([int(seed), subject, d["trial_id"]])
            attended = envelopes[(d["part"], d["attended_track"])][: d["n_eeg"]]
            unattended = envelopes[(d["part"], 3 - d["attended_track"])][: d["n_eeg"]]
            driver = _z(attended) + attenuation * _z(unattended)  # (T,)
            eeg = simulate_eeg(driver[:, None], head, FS_EEG, snr_db, rng)  # (T, 64) microvolts
            suffix = d["condition"].lower()
            files = {d["attended_track"]: f"part{d['part']}_track{d['attended_track']}_{suffix}.wav",
                     3 - d["attended_track"]: f"part{d['part']}_track{3 - d['attended_track']}_{suffix}.wav"}
            attended_file, other_file = files[d["attended_track"]], files[3 - d["attended_track"]]
            stimuli = (attended_file, other_file) if d["attended_ear"] == "L" else (other_file, attended_file)
            raw_trials.append(RawTrial(
                eeg=eeg.astype(np.float32), fs=float(FS_EEG), trial_id=d["trial_id"], attended_ear=d["attended_ear"],
                attended_track=d["attended_track"], stimuli=stimuli, condition=d["condition"],
                experiment=d["experiment"], part=d["part"], repetition=d["repetition"], subject=f"S{subject}",
                channels=list(BIOSEMI64)))
            bar.update(1)
        write_subject_mat(out / f"S{subject}.mat", raw_trials)
    bar.close()
    return out


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x - x.mean()) / max(float(x.std()), 1e-12)
