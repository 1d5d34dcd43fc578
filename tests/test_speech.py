"""Tests for synthetic.speech: espeak-ng TTS through ctypes."""
import numpy as np
import pytest

from synthetic import speech
from util.errors import EEGKitError


def _median_f0(audio, fs, f_lo=60.0, f_hi=400.0):
    """Median autocorrelation pitch (Hz) over loud 40-ms frames."""
    frame = int(0.04 * fs)
    lag_lo, lag_hi = int(fs / f_hi), int(fs / f_lo)
    rms_all = np.sqrt(np.mean(audio ** 2))
    f0s = []
    for start in range(0, audio.size - frame, frame):
        x = audio[start:start + frame]
        if np.sqrt(np.mean(x ** 2)) < rms_all:
            continue
        x = x - x.mean()
        ac = np.correlate(x, x, mode="full")[frame - 1:]
        lag = lag_lo + int(np.argmax(ac[lag_lo:lag_hi]))
        if ac[lag] > 0.5 * ac[0]:
            f0s.append(fs / lag)
    return float(np.median(f0s))


def test_synthesize_is_speech_like():
    audio, fs = speech.synthesize("The old captain walked to the harbour.")
    assert fs == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.8 * fs < audio.size < 6 * fs  # a short sentence lasts ~1.5-3 s
    assert 0.02 < audio.std() < 0.5 and np.abs(audio).max() <= 1.0
    # most energy below 4 kHz, like speech
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / fs)
    assert spectrum[freqs < 4000].sum() / spectrum.sum() > 0.8


@pytest.mark.parametrize("duration_s", [0.5, 7.3])
def test_speech_stream_exact_duration_and_not_silent(duration_s):
    audio, fs = speech.speech_stream(duration_s, seed=3)
    assert audio.shape == (int(round(duration_s * fs)),)
    assert audio.dtype == np.float32
    assert audio.std() > 0.02


def test_speech_stream_has_pauses_and_is_deterministic():
    audio, fs = speech.speech_stream(12.0, voice="en-us", seed=5)
    again, _ = speech.speech_stream(12.0, voice="en-us", seed=5)
    other, _ = speech.speech_stream(12.0, voice="en-us", seed=6)
    np.testing.assert_array_equal(audio, again)
    assert not np.array_equal(audio, other)
    # inserted pauses: some 100-ms frames are completely silent
    frames = audio[: audio.size // 2205 * 2205].reshape(-1, 2205)
    assert (np.abs(frames).max(axis=1) < 1e-3).sum() >= 2


def test_voices_and_pitch_change_the_audio():
    text = "We talked about the weather until the baker walked home."
    low, fs = speech.synthesize(text, voice="en", pitch=20)
    high, _ = speech.synthesize(text, voice="en", pitch=80)
    assert _median_f0(high, fs) > 1.2 * _median_f0(low, fs)
    male, _ = speech.synthesize(text, voice="en+m3")
    female, _ = speech.synthesize(text, voice="en+f3")
    assert _median_f0(female, fs) > 1.3 * _median_f0(male, fs)
    for voice in ["en-us", "nl", "en-gb-x-rp"]:
        audio, _ = speech.synthesize(text, voice=voice)
        assert audio.std() > 0.02
    dutch, _ = speech.synthesize(text, voice="nl")
    assert dutch.size != male.size or not np.allclose(dutch, male)


def test_bad_voice_and_empty_text_raise():
    with pytest.raises(EEGKitError, match="unknown espeak-ng voice"):
        speech.synthesize("hello", voice="no-such-voice")
    with pytest.raises(EEGKitError, match="empty"):
        speech.synthesize("   ")


def test_sentence_generator_is_seeded():
    a = [speech.make_sentence(np.random.default_rng(1)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng = np.random.default_rng(2)
    sentences = {speech.make_sentence(rng) for _ in range(50)}
    assert len(sentences) > 40
    assert all(s[0].isupper() and s[-1] in ".?" for s in sentences)
