"""Stimulus features for Task 2, numpy/scipy only; every output is float32, time first, 64 Hz.

Definitions (docs: ``shared/reference/task2_challenge.md`` sections 2 and 6):

- ``mel10(audio, fs) -> (T, 10)``: the Task 2 target. DC removed; power mel
  spectrogram (power 2, no log); Hann window of 25 ms, ``n_fft`` = next power of
  two of the window length; 10 Slaney-normalised (area 2/(f_hi - f_lo)) triangular
  filters from 0 to 5000 Hz; no centre padding; frames at 128 Hz (hop = fs/128),
  then polyphase resampling by 1/2 to 64 Hz. When fs/128 is not an integer (e.g.
  22050 Hz) the audio is first resampled to 16 kHz (all bands lie below 5 kHz).
  Note on the mel scale: the reference filter edges (0, 147.0, 324.9, 540.2, ...,
  4010.6, 5000 Hz) are exactly the edges of the HTK formula
  ``2595 log10(1 + f/700)``; Slaney's linear-below-1-kHz scale would put the
  first edge at 232.8 Hz. We follow the published edges (``scale='htk'``).
- ``gammatone_envelope(audio, fs) -> (T, 1)``: 28 gammatone bands with centres
  equally spaced on the ERB-number scale (Glasberg & Moore,
  ``21.4 log10(1 + 0.00437 f)``) from 50 Hz to 5 kHz, IIR filters from
  ``scipy.signal.gammatone``; each band ``|x|**0.6``; summed over bands; polyphase
  resampling to 64 Hz. Filtering runs at ``work_fs`` = 16 kHz by default (audio
  above 16 kHz is resampled first: the top band is 5 kHz, far below the 8 kHz
  Nyquist); pass ``work_fs=None`` to filter at the native rate.
- ``mel80(audio, fs) -> (T, 80)`` and ``magnitude(audio, fs) -> (T, 257)`` (the
  CAT-guided WaveNet's finer targets): audio resampled to 16 kHz, padded with
  250 zeros on each side, frames of 512 samples every 250 samples (64 Hz) with a
  400-sample Hann window, no centring; ``magnitude`` = 257-bin power spectrum;
  ``mel80`` = 80 Slaney-normalised HTK-scale mel bands 0-8 kHz of it.
- ``load_audio(path) -> (audio float32 mono, fs)`` for .wav (8-bit unsigned, 16/24/32-bit
  integer, 32/64-bit float PCM), .npz, .npz.gz (npz keys ``audio`` and ``fs``; read through
  ``util.inputs`` with its decompression caps); truncated, NaN/Inf and silent audio are refused,
  multi-channel audio is averaged or refused as the caller asks.

``BANDS`` maps each target name to its number of bands.
"""
from __future__ import annotations

import math
from struct import error as struct_error
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy import signal

from util.errors import EEGKitError

__all__ = ["BANDS", "FS_TASK2", "hz_to_mel", "mel_to_hz", "mel_edges", "mel_filterbank", "erb_space",
           "power_spectrogram", "resample", "gammatone_envelope", "mel10", "mel80", "magnitude",
           "load_audio", "compute"]

FS_TASK2 = 64
BANDS = {"envelope": 1, "mel": 10, "mel80": 80, "mag": 257}
_FRAME_CHUNK = 4096  # frames per FFT batch (bounds memory for long audio)


# --------------------------------------------------------------------------- mel filters
def hz_to_mel(freq_hz, scale: str = "htk"):
    """Hz -> mel. ``scale='htk'``: 2595 log10(1 + f/700); ``'slaney'``: linear < 1 kHz, log above."""
    freq_hz = np.asarray(freq_hz, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + freq_hz / 700.0)
    if scale == "slaney":
        f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
        linear = freq_hz / f_sp
        log_part = min_log_hz / f_sp + np.log(np.maximum(freq_hz, 1e-10) / min_log_hz) / logstep
        return np.where(freq_hz >= min_log_hz, log_part, linear)
    raise EEGKitError(f"features: unknown mel scale {scale!r} (use 'htk' or 'slaney')")


def mel_to_hz(mels, scale: str = "htk"):
    """Inverse of ``hz_to_mel``."""
    mels = np.asarray(mels, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    if scale == "slaney":
        f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
        min_log_mel = min_log_hz / f_sp
        return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)
    raise EEGKitError(f"features: unknown mel scale {scale!r} (use 'htk' or 'slaney')")


def mel_edges(n_mels: int, fmin: float, fmax: float, scale: str = "htk") -> np.ndarray:
    """The n_mels + 2 filter edge frequencies (Hz), equally spaced on the mel scale."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin, scale), hz_to_mel(fmax, scale), n_mels + 2), scale)


def mel_filterbank(fs: float, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None,
                   scale: str = "htk", norm: str | None = "slaney") -> np.ndarray:
    """Triangular mel filters (n_mels, n_fft // 2 + 1); ``norm='slaney'`` scales each to area-like 2/width."""
    fmax = fs / 2 if fmax is None else fmax
    edges = mel_edges(n_mels, fmin, fmax, scale)  # (n_mels + 2,)
    fft_freqs = np.linspace(0, fs / 2, n_fft // 2 + 1)  # (n_bins,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (fft_freqs[None] - lower) / (centre - lower)
    falling = (upper - fft_freqs[None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))  # (n_mels, n_bins)
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    elif norm is not None:
        raise EEGKitError(f"features: unknown mel norm {norm!r} (use 'slaney' or None)")
    return weights


def erb_space(n_bands: int = 28, fmin: float = 50.0, fmax: float = 5000.0) -> np.ndarray:
    """Centre frequencies equally spaced on the ERB-number scale (Glasberg & Moore 1990)."""
    erb_lo, erb_hi = (21.4 * np.log10(1 + 0.00437 * f) for f in (fmin, fmax))
    return (10 ** (np.linspace(erb_lo, erb_hi, n_bands) / 21.4) - 1) / 0.00437


# --------------------------------------------------------------------------- helpers
def _as_mono(audio) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim == 2:  # (samples, channels) or (channels, samples)
        audio = audio.mean(axis=1 if audio.shape[0] > audio.shape[1] else 0)
    if audio.ndim != 1:
        raise EEGKitError(f"features: audio must be 1-D (samples,), got shape {audio.shape}")
    return audio.astype(np.float64)


def resample(audio: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Polyphase resampling along axis 0 by the exact rational ratio fs_out / fs_in."""
    if fs_in == fs_out:
        return audio
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    return signal.resample_poly(audio, ratio.numerator, ratio.denominator, axis=0)


def power_spectrogram(audio: np.ndarray, n_fft: int, hop: int, win_length: int) -> np.ndarray:
    """|STFT|^2 (n_frames, n_fft//2 + 1) without centring: frame i = audio[i*hop : i*hop + n_fft].

    The periodic Hann window of ``win_length`` sits in the middle of the ``n_fft`` frame.
    """
    window = np.zeros(n_fft)
    offset = (n_fft - win_length) // 2
    window[offset:offset + win_length] = signal.get_window("hann", win_length, fftbins=True)
    if audio.size < n_fft:
        return np.zeros((0, n_fft // 2 + 1))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop]  # (n_frames, n_fft) view
    out = np.empty((frames.shape[0], n_fft // 2 + 1))
    for start in range(0, frames.shape[0], _FRAME_CHUNK):
        block = frames[start:start + _FRAME_CHUNK] * window
        out[start:start + _FRAME_CHUNK] = np.abs(np.fft.rfft(block, axis=1)) ** 2
    return out


# --------------------------------------------------------------------------- features
def mel10(audio, fs: float) -> np.ndarray:
    """Task 2 mel target: (T, 10) float32 at 64 Hz (see module docstring)."""
    audio = _as_mono(audio)
    if fs % 128 != 0:
        audio, fs = resample(audio, fs, 16000), 16000
    fs = int(fs)
    audio = audio - audio.mean()  # DC removed
    win_length = int(round(0.025 * fs))
    n_fft = 1 << (win_length - 1).bit_length()
    hop = fs // 128
    power = power_spectrogram(audio, n_fft, hop, win_length)  # (frames at 128 Hz, bins)
    mel = power @ mel_filterbank(fs, n_fft, 10, 0.0, 5000.0, scale="htk", norm="slaney").T  # (frames, 10)
    mel = signal.resample_poly(mel, 1, 2, axis=0)  # 128 Hz -> 64 Hz
    return mel.astype(np.float32)


def gammatone_envelope(audio, fs: float, n_bands: int = 28, work_fs: float | None = 16000) -> np.ndarray:
    """Speech envelope: (T, 1) float32 at 64 Hz (see module docstring)."""
    audio = _as_mono(audio)
    if work_fs is not None and fs > work_fs:
        audio, fs = resample(audio, fs, work_fs), work_fs
    if fs <= 2 * 5000:
        raise EEGKitError(f"features: gammatone envelope needs fs > 10 kHz for the 5 kHz band, got {fs}")
    total = np.zeros(audio.size, dtype=np.float32)
    x32 = audio.astype(np.float32)
    for centre in erb_space(n_bands, 50.0, 5000.0):
        b, a = signal.gammatone(centre, "iir", fs=fs)
        band = signal.sosfilt(signal.tf2sos(b, a), x32).astype(np.float32)
        np.abs(band, out=band)
        total += np.power(band, np.float32(0.6), out=band)
    envelope = resample(total.astype(np.float64), fs, FS_TASK2)  # (T,)
    return envelope[:, None].astype(np.float32)


def _spectrogram_16k(audio, fs: float) -> np.ndarray:
    """Power spectrogram (T, 257) at 64 Hz of the audio resampled to 16 kHz, padded by 250 each side."""
    audio = resample(_as_mono(audio), fs, 16000)
    audio = np.pad(audio, (250, 250))
    return power_spectrogram(audio, n_fft=512, hop=250, win_length=400)


def magnitude(audio, fs: float) -> np.ndarray:
    """257-bin power spectrogram: (T, 257) float32 at 64 Hz."""
    return _spectrogram_16k(audio, fs).astype(np.float32)


def mel80(audio, fs: float) -> np.ndarray:
    """80-band power mel spectrogram 0-8 kHz (HTK scale, Slaney norm): (T, 80) float32 at 64 Hz."""
    fbank = mel_filterbank(16000, 512, 80, 0.0, 8000.0, scale="htk", norm="slaney")
    return (_spectrogram_16k(audio, fs) @ fbank.T).astype(np.float32)


_FEATURES = {"envelope": gammatone_envelope, "mel": mel10, "mel80": mel80, "mag": magnitude}


def compute(name: str, audio, fs: float) -> np.ndarray:
    """Feature by target name (a key of ``BANDS``)."""
    if name not in _FEATURES:
        raise EEGKitError(f"features: unknown feature {name!r}; choose from {sorted(_FEATURES)}")
    return _FEATURES[name](audio, fs)


# --------------------------------------------------------------------------- audio files
MAX_CHANNELS = 16  # an audio array with more "channels" than this is taken as a wrong shape, not as audio


def _to_float(audio: np.ndarray, path, dtype=np.float32) -> np.ndarray:
    """Integer PCM -> [-1, 1): signed by 2**(bits-1) (scipy returns 24-bit PCM left-justified in int32),
    unsigned (8-bit wav) around its midpoint 2**(bits-1) (128 for 8 bit); float unchanged."""
    from util.inputs import check_array

    check_array(audio, f"{path}", ndim=(1, 2), finite=False, what="audio")
    bits = audio.dtype.itemsize * 8
    if audio.dtype.kind == "i":
        return (audio.astype(np.float64) / float(1 << (bits - 1))).astype(dtype)
    if audio.dtype.kind == "u":
        half = float(1 << (bits - 1))
        return ((audio.astype(np.float64) - half) / half).astype(dtype)
    return audio.astype(dtype)


def _mono(audio: np.ndarray, path, channels: str) -> np.ndarray:
    """(samples,) from (samples,) or (samples, channels); ``channels='mean'`` averages, ``'mono'`` refuses."""
    if audio.ndim == 1:
        return audio
    axis = 1 if audio.shape[1] <= audio.shape[0] else 0  # wav: (samples, channels); npz may be (channels, samples)
    n_channels = audio.shape[axis]
    if n_channels > MAX_CHANNELS:
        raise EEGKitError(f"{path}: audio of shape {audio.shape} is not (samples,) or (samples, channels)")
    if n_channels == 1:
        return audio.reshape(-1)
    if channels == "mono":
        raise EEGKitError(f"{path}: expected mono audio, found {n_channels} channels (shape {audio.shape}); "
                          f"this tool scores one signal per file, so it does not mix the channels down")
    return audio.mean(axis=axis)


def load_audio(path, dtype=np.float32, channels: str = "mean", allow_silent: bool = False) -> tuple[np.ndarray, int]:
    """Read .wav, .npz or .npz.gz (keys 'audio', 'fs'); returns (mono audio (samples,) in [-1, 1] as ``dtype``, fs).

    The kit's one audio-file reader (stimuli, mixtures, estimates, references). Wav: 8-bit unsigned
    (offset 128), 16-, 24- and 32-bit signed integer PCM and 32/64-bit float; a truncated file (data
    shorter than its header says) is refused. Multi-channel audio: ``channels='mean'`` averages the
    channels to mono (stimuli, the mixture given to predict), ``channels='mono'`` refuses it (the
    scorer's estimates and references). NaN/Inf samples are refused naming the first; silent
    (constant) audio too unless ``allow_silent``. ``.npz.gz`` files are decompressed under the
    `util.inputs.MAX_INFLATED_BYTES` cap (2 GiB). The file is opened by `util.inputs.open_regular`:
    a FIFO or a device (``/dev/zero``) is refused with one line, never read; a wav is read whole under
    `util.inputs.MAX_ARRAY_BYTES`.
    """
    import os
    import warnings

    from util.inputs import MAX_ARRAY_BYTES, NpzReader, check_finite, open_gunzipped, open_regular, out_of_memory

    if channels not in ("mean", "mono"):
        raise ValueError(f"channels must be 'mean' or 'mono', got {channels!r}")
    path = Path(path)
    if not path.exists():
        raise EEGKitError(f"{path}: audio file not found")
    name = path.name.lower()
    if not name.endswith((".wav", ".npz", ".npz.gz")):
        raise EEGKitError(f"{path}: unsupported audio format (use .wav, .npz or .npz.gz)")
    # a regular file only (a FIFO or /dev/zero is refused, never read); a wav is read whole: capped
    with open_regular(path, MAX_ARRAY_BYTES if name.endswith(".wav") else None, "audio file") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise EEGKitError(f"{path}: empty file")
        try:
            if name.endswith(".wav"):
                from scipy.io import wavfile

                with warnings.catch_warnings():
                    warnings.simplefilter("error", wavfile.WavFileWarning)
                    try:
                        fs, audio = wavfile.read(handle)
                    except UnboundLocalError:  # scipy's reader on a file that has no 'data' chunk
                        raise EEGKitError(f"{path}: cannot read audio (no 'data' chunk in this wav)") from None
            else:  # .npz, or .npz.gz inflated (capped) into memory or a temporary file, never twice in memory
                with (open_gunzipped(path) if name.endswith(".gz") else handle) as source:
                    with NpzReader(source, str(path)) as data:
                        if "audio" not in data or "fs" not in data:
                            raise EEGKitError(f"{path}: npz must hold keys 'audio' and 'fs', "
                                              f"found {sorted(data.files)}")
                        audio, fs = data["audio"], data["fs"]
        except EEGKitError:
            raise
        except MemoryError:
            raise out_of_memory(str(path)) from None
        except Warning as warning:  # scipy's WavFileWarning: "Reached EOF prematurely ..."
            raise EEGKitError(f"{path}: truncated or damaged wav ({str(warning).splitlines()[0]})") from None
        except (ValueError, OSError, EOFError, KeyError, struct_error, IndexError, TypeError) as exc:
            raise EEGKitError(f"{path}: cannot read audio ({type(exc).__name__}: {exc})") from None
    fs_array = np.asarray(fs)
    if fs_array.dtype.kind not in "iuf" or fs_array.size != 1:
        raise EEGKitError(f"{path}: invalid sampling rate {fs!r}")
    fs_value = float(fs_array.reshape(-1)[0])
    if not math.isfinite(fs_value) or fs_value <= 0 or fs_value != round(fs_value):
        raise EEGKitError(f"{path}: invalid sampling rate {fs_value!r} (a positive whole number of Hz)")
    audio = _mono(_to_float(np.asarray(audio), path, dtype), path, channels)
    check_finite(audio, f"{path}: audio")
    if not allow_silent and not np.any(audio != audio[0]):
        raise EEGKitError(f"{path}: audio is silent (every sample is {float(audio[0]):g})")
    return audio, int(round(fs_value))
