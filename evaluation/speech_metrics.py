"""Speech quality metrics for speaker extraction: SI-SDR, SI-SDRi, PESQ, STOI.

All functions take 1-D numpy signals (time,) at the stated sampling rate.

- `si_sdr` follows Le Roux et al. (2019): by default both signals are made
  zero-mean first (the "SI-SNR" form most extraction papers report);
  alpha = <est, ref> / ||ref||^2, target = alpha * ref,
  SI-SDR = 10 log10(||target||^2 / ||est - target||^2).
- `pesq_nb` / `pesq_score` wrap the `pesq` package and never crash on the
  library's known failure cases (too short, no utterances, silence): they return
  ``(score or None, reason or None)``.
- `stoi_score` wraps `pystoi` and turns its "fewer than 30 frames" warning
  (where pystoi returns 1e-5) into a reason instead of a fake score.
"""
from __future__ import annotations

import warnings

import numpy as np

from util.errors import EEGKitError
from util.metrics import si_sdr_np


PESQ_MIN_SECONDS = 0.85  # the pesq library raises BufferTooShortError below about this length
PESQ_RATES = (8000, 16000)


def _as_signal(signal, name: str) -> np.ndarray:
    array = np.asarray(signal, dtype=np.float64)
    if array.ndim != 1:
        array = np.squeeze(array)
    if array.ndim != 1:
        raise EEGKitError(f"{name}: expected a 1-D signal, got shape {np.shape(signal)}")
    if not np.all(np.isfinite(array)):
        raise EEGKitError(f"{name}: signal contains NaN or Inf")
    return array


def _check_same_length(first: np.ndarray, second: np.ndarray, first_name: str, second_name: str) -> None:
    if first.shape[0] != second.shape[0]:
        raise EEGKitError(
            f"{first_name}: length {first.shape[0]} samples differs from {second_name} length {second.shape[0]}"
        )


def si_sdr(estimate, reference, zero_mean: bool = True) -> float:
    """Scale-invariant signal-to-distortion ratio in dB of ``estimate`` w.r.t. ``reference``."""
    estimate = _as_signal(estimate, "estimate")
    reference = _as_signal(reference, "reference")
    _check_same_length(estimate, reference, "estimate", "reference")
    return si_sdr_np(estimate, reference, zero_mean)


def si_sdri(estimate, reference, mixture, zero_mean: bool = True) -> float:
    """SI-SDR improvement: SI-SDR(estimate, reference) - SI-SDR(mixture, reference), in dB."""
    return si_sdr(estimate, reference, zero_mean) - si_sdr(mixture, reference, zero_mean)


def pesq_score(reference, degraded, fs: int, mode: str = "nb") -> tuple[float | None, str | None]:
    """PESQ MOS-LQO of ``degraded`` against ``reference``; returns ``(score, None)`` or ``(None, reason)``.

    Bad arguments (unsupported rate, wide-band at 8 kHz, unknown mode, length
    mismatch) raise `EEGKitError` before the library is called; signal-dependent
    failures (too short, silence, no utterances) are returned as a reason.
    """
    if mode not in ("nb", "wb"):
        raise EEGKitError(f"PESQ mode must be 'nb' or 'wb'; got {mode!r}")
    if fs not in PESQ_RATES:
        raise EEGKitError(f"PESQ needs fs=8000 or fs=16000; got {fs} Hz: resample first")
    if mode == "wb" and fs != 16000:
        raise EEGKitError(f"PESQ wide-band mode needs fs=16000; got {fs} Hz: use mode 'nb'")
    reference = _as_signal(reference, "reference")
    degraded = _as_signal(degraded, "degraded")
    _check_same_length(degraded, reference, "degraded", "reference")
    duration_s = reference.shape[0] / fs
    if duration_s < PESQ_MIN_SECONDS:
        return None, f"too short ({duration_s:.2f} s < {PESQ_MIN_SECONDS} s)"
    if not np.any(reference):
        return None, "silent reference"
    if not np.any(degraded):
        return None, "silent degraded signal"
    import pesq

    try:
        score = pesq.pesq(fs, reference.astype(np.float32), degraded.astype(np.float32), mode)
    except pesq.BufferTooShortError:
        return None, "too short (pesq BufferTooShortError)"
    except pesq.NoUtterancesError:
        return None, "no utterances detected (pesq NoUtterancesError)"
    except pesq.PesqError as error:  # any other library-side failure of this signal
        return None, f"pesq error ({type(error).__name__})"
    if not np.isfinite(score):
        return None, "pesq returned a non-finite score"
    return float(score), None


def pesq_nb(reference, degraded, fs: int = 8000) -> tuple[float | None, str | None]:
    """Narrow-band PESQ (the mode for 8 kHz audio); ``(score, None)`` or ``(None, reason)``."""
    return pesq_score(reference, degraded, fs, mode="nb")


def stoi_score(clean, processed, fs: int, extended: bool = False) -> tuple[float | None, str | None]:
    """STOI of ``processed`` against ``clean`` via pystoi; ``(score, None)`` or ``(None, reason)``.

    Equal lengths are required (`EEGKitError` otherwise). When pystoi finds fewer
    than 30 frames after silence removal it warns and returns 1e-5; that case is
    returned as a reason instead of a score.
    """
    clean = _as_signal(clean, "clean")
    processed = _as_signal(processed, "processed")
    _check_same_length(processed, clean, "processed", "clean")
    if fs <= 0:
        raise EEGKitError(f"STOI needs a positive sampling rate; got {fs}")
    from pystoi import stoi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = stoi(clean, processed, fs, extended=extended)
    if any("Not enough STFT frames" in str(item.message) for item in caught):
        return None, "fewer than 30 STFT frames after silence removal (pystoi)"
    if not np.isfinite(score):
        return None, "pystoi returned a non-finite score"
    return float(score), None
