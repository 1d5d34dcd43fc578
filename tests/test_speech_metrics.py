"""Tests for evaluation/speech_metrics.py: golden SI-SDR values by hand, PESQ/STOI behaviour."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import resample_poly

from evaluation.speech_metrics import pesq_nb, pesq_score, si_sdr, si_sdri, stoi_score
from util.errors import EEGKitError


@pytest.fixture(scope="module")
def speech_8k() -> np.ndarray:
    """3 s of espeak-ng speech at 8 kHz (float64)."""
    from synthetic.speech import speech_stream

    audio, fs = speech_stream(3.0, voice="en", rate_wpm=160, pitch=50, seed=0)
    return resample_poly(audio.astype(np.float64), 8000, fs)


def test_si_sdr_reference_check_values():
    reference = [3.0, -0.5, 2.0, 7.0]
    estimate = [2.5, 0.0, 2.0, 8.0]
    assert si_sdr(estimate, reference) == pytest.approx(15.0918, abs=1e-4)
    assert si_sdr(estimate, reference, zero_mean=False) == pytest.approx(18.4030, abs=1e-4)


def test_si_sdr_hand_worked_value():
    # ref = [1, -1, 0, 0], est = [1, 0, 0, -1]: both zero-mean already.
    # alpha = <est, ref> / ||ref||^2 = 1 / 2; target = [0.5, -0.5, 0, 0], ||target||^2 = 0.5
    # residual = est - target = [0.5, 0.5, 0, -1], ||residual||^2 = 1.5
    # SI-SDR = 10 log10(0.5 / 1.5) = 10 log10(1/3) = -4.7712 dB (with or without zero-mean)
    expected = 10 * math.log10(1 / 3)
    assert si_sdr([1, 0, 0, -1], [1, -1, 0, 0]) == pytest.approx(expected, abs=1e-6)
    assert si_sdr([1, 0, 0, -1], [1, -1, 0, 0], zero_mean=False) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(-4.7712, abs=1e-4)


def test_si_sdr_hand_worked_offset_value():
    # Without zero-mean: ref = [1, 0], est = [1, 1]: alpha = 1, target = [1, 0], residual = [0, 1] -> 0 dB.
    assert si_sdr([1, 1], [1, 0], zero_mean=False) == pytest.approx(0.0, abs=1e-6)


def test_si_sdr_scale_invariance_and_improvement():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(8000)
    noise = rng.standard_normal(8000)
    estimate = reference + 0.1 * noise
    assert si_sdr(5.0 * estimate, reference) == pytest.approx(si_sdr(estimate, reference), abs=1e-6)
    assert si_sdr(reference, reference) > 100.0
    mixture = reference + noise
    # SI-SDRi of the mixture itself is exactly zero; a cleaner estimate improves.
    assert si_sdri(mixture, reference, mixture) == pytest.approx(0.0, abs=1e-9)
    assert si_sdri(estimate, reference, mixture) == pytest.approx(
        si_sdr(estimate, reference) - si_sdr(mixture, reference), abs=1e-9
    )
    assert si_sdri(estimate, reference, mixture) > 15.0


def test_si_sdr_rejects_length_mismatch_and_nan():
    with pytest.raises(EEGKitError, match="length"):
        si_sdr(np.zeros(10), np.ones(11))
    with pytest.raises(EEGKitError, match="NaN"):
        si_sdr(np.array([1.0, np.nan]), np.ones(2))


def test_pesq_identical_is_high_and_noisy_is_lower(speech_8k):
    score_clean, reason_clean = pesq_nb(speech_8k, speech_8k, 8000)
    assert reason_clean is None
    assert score_clean > 4.2
    rng = np.random.default_rng(1)
    noisy = speech_8k + 0.3 * np.std(speech_8k) * rng.standard_normal(speech_8k.shape[0])
    score_noisy, reason_noisy = pesq_nb(speech_8k, noisy, 8000)
    assert reason_noisy is None
    assert 1.0 <= score_noisy < score_clean - 1.0


def test_pesq_refuses_wideband_at_8k_before_library(speech_8k):
    with pytest.raises(EEGKitError) as info:
        pesq_score(speech_8k, speech_8k, 8000, "wb")
    assert str(info.value) == "PESQ wide-band mode needs fs=16000; got 8000 Hz: use mode 'nb'"
    with pytest.raises(EEGKitError, match="8000 or fs=16000"):
        pesq_score(speech_8k, speech_8k, 44100, "nb")


def test_pesq_failures_are_reasons_not_crashes(speech_8k, monkeypatch):
    score, reason = pesq_nb(np.zeros(16000), np.zeros(16000), 8000)
    assert score is None and "silent" in reason
    score, reason = pesq_nb(speech_8k[:4000], speech_8k[:4000], 8000)  # 0.5 s
    assert score is None and "too short" in reason
    # NoUtterancesError / BufferTooShortError raised by the library itself become reasons.
    import pesq

    def raise_no_utterances(*args, **kwargs):
        raise pesq.NoUtterancesError()

    monkeypatch.setattr(pesq, "pesq", raise_no_utterances)
    score, reason = pesq_nb(speech_8k, speech_8k, 8000)
    assert score is None and "NoUtterancesError" in reason

    def raise_too_short(*args, **kwargs):
        raise pesq.BufferTooShortError()

    monkeypatch.setattr(pesq, "pesq", raise_too_short)
    score, reason = pesq_nb(speech_8k, speech_8k, 8000)
    assert score is None and "too short" in reason

def test_stoi_identical_noisy_and_errors(speech_8k):
    score, reason = stoi_score(speech_8k, speech_8k, 8000)
    assert reason is None and score == pytest.approx(1.0, abs=1e-3)
    rng = np.random.default_rng(3)
    noisy = speech_8k + 2.0 * np.std(speech_8k) * rng.standard_normal(speech_8k.shape[0])
    noisy_score, noisy_reason = stoi_score(speech_8k, noisy, 8000)
    assert noisy_reason is None and noisy_score < score - 0.1
    with pytest.raises(EEGKitError, match="length"):
        stoi_score(speech_8k, speech_8k[:-1], 8000)
    # 0.1 s is far fewer than 30 STFT frames: pystoi's 1e-5 becomes a reason.
    short_score, short_reason = stoi_score(speech_8k[:800], speech_8k[:800], 8000)
    assert short_score is None and "30" in short_reason
