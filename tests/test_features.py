"""Tests for util.features against independently worked-out values."""
import gzip
import io

import numpy as np
import pytest
from scipy.io import wavfile

from util import features as F
from util.errors import EEGKitError

# Reference section 2: the 12 mel10 filter edges (Hz).
REFERENCE_EDGES = [0, 147.0, 324.9, 540.2, 800.7, 1115.9, 1497.3, 1958.8, 2517.2, 3193.0, 4010.6, 5000]


def _tone(freq, fs, seconds, amplitude=0.5):
    t = np.arange(int(fs * seconds)) / fs
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_mel10_edges_match_reference():
    edges = F.mel_edges(10, 0.0, 5000.0, scale="htk")
    np.testing.assert_allclose(edges, REFERENCE_EDGES, atol=0.5)
    # Slaney's scale would not give these edges (first edge 232.8 Hz, worked out by hand)
    assert F.mel_edges(10, 0.0, 5000.0, scale="slaney")[1] == pytest.approx(232.8, abs=0.5)


def test_slaney_norm_peak_height():
    fbank = F.mel_filterbank(48000, 1 << 16, 10, 0.0, 5000.0)  # fine grid: peaks sampled accurately
    edges = np.array(REFERENCE_EDGES)
    np.testing.assert_allclose(fbank.max(axis=1), 2.0 / (edges[2:] - edges[:-2]), rtol=0.01)
    assert fbank.shape == (10, (1 << 15) + 1) and (fbank >= 0).all()


@pytest.mark.parametrize("fs", [48000, 22050, 16000])
@pytest.mark.parametrize("band", [2, 7])
def test_pure_tone_lands_in_its_mel10_band(fs, band):
    centre = REFERENCE_EDGES[band + 1]  # centre of filter `band` = its middle edge
    mel = F.mel10(_tone(centre, fs, 3.0), fs)  # (T, 10)
    energy = mel[5:-5].mean(axis=0)
    assert int(np.argmax(energy)) == band
    assert energy[band] / energy.sum() > 0.9


def test_pure_tone_lands_in_its_mel80_band():
    edges = F.mel_edges(80, 0.0, 8000.0, scale="htk")
    mel = F.mel80(_tone(edges[41], 22050, 2.0), 22050)  # centre of band 40
    assert mel.shape[1] == 80
    energy = mel[5:-5].mean(axis=0)
    assert int(np.argmax(energy)) == 40 and energy[40] / energy.sum() > 0.7  # 77-Hz-wide bands, 31-Hz bins
    far = np.r_[energy[:39], energy[42:]]
    assert far.max() < 0.01 * energy[40]


def test_magnitude_golden_peak():
    # 1 kHz at 16 kHz sits exactly on bin 32 (31.25 Hz bins). With a 400-sample periodic
    # Hann window (sum 200) and amplitude 0.5 the power peak is (0.5 * 200 / 2) ** 2 = 2500.
    mag = F.magnitude(_tone(1000.0, 16000, 2.0), 16000)  # (T, 257)
    assert mag.shape == (1 + (32000 + 500 - 512) // 250, 257)
    steady = mag[5:-5]
    assert (steady.argmax(axis=1) == 32).all()
    np.testing.assert_allclose(steady[:, 32], 2500.0, rtol=0.01)


def test_output_lengths_are_64_hz():
    seconds = 10.0
    # 48 kHz: window 1200, n_fft 2048, hop 375 -> 1 + (480000 - 2048) // 375 = 1275 frames at 128 Hz -> 638
    assert F.mel10(np.random.default_rng(0).standard_normal(480000), 48000).shape == (638, 10)
    audio = np.random.default_rng(1).standard_normal(int(16000 * seconds)).astype(np.float32)
    assert F.mel80(audio, 16000).shape == (640, 80)  # 1 + (160500 - 512) // 250 = 640
    assert F.magnitude(audio, 16000).shape == (640, 257)
    assert F.gammatone_envelope(audio, 16000).shape == (640, 1)
    for name, n_bands in F.BANDS.items():
        out = F.compute(name, audio[:32000], 16000)
        assert out.dtype == np.float32 and out.shape[1] == n_bands and abs(out.shape[0] - 128) <= 2


def test_envelope_follows_2hz_modulation_at_64hz():
    fs = 16000
    t = np.arange(fs * 8) / fs
    modulation = 1 + 0.8 * np.sin(2 * np.pi * 2.0 * t)
    audio = (0.3 * modulation * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    env = F.gammatone_envelope(audio, fs)[:, 0]  # (512,)
    assert env.shape == (512,)
    core = env[32:-32]
    spectrum = np.abs(np.fft.rfft(core - core.mean()))
    freqs = np.fft.rfftfreq(core.size, 1 / 64.0)
    assert freqs[np.argmax(spectrum)] == pytest.approx(2.0, abs=0.15)
    expected = modulation[::250][32:-32] ** 0.6  # the same 2 Hz shape sampled at 64 Hz
    assert np.corrcoef(core, expected)[0, 1] > 0.95


def test_erb_centres():
    centres = F.erb_space(28, 50.0, 5000.0)
    assert centres.shape == (28,)
    assert centres[0] == pytest.approx(50.0) and centres[-1] == pytest.approx(5000.0)
    # ERB number: 21.4 log10(1 + 0.00437 f): 1.836 at 50 Hz, 29.08 at 5 kHz -> step 1.009;
    # second centre = (10 ** ((1.836 + 1.009) / 21.4) - 1) / 0.00437 = 82.0 Hz (by hand)
    assert centres[1] == pytest.approx(82.0, abs=0.5)
    assert np.all(np.diff(centres) > 0)


def test_mel10_removes_dc():
    audio = np.random.default_rng(2).standard_normal(48000 * 2).astype(np.float32) * 0.1
    np.testing.assert_allclose(F.mel10(audio + 0.3, 48000), F.mel10(audio, 48000), rtol=1e-3, atol=1e-6)


def test_load_audio_formats(tmp_path):
    audio = _tone(440.0, 8000, 0.5)
    wavfile.write(tmp_path / "a.wav", 8000, (audio * 32767).astype(np.int16))
    got, fs = F.load_audio(tmp_path / "a.wav")
    assert fs == 8000 and got.dtype == np.float32
    np.testing.assert_allclose(got, audio, atol=1e-4)
    np.savez(tmp_path / "b.npz", audio=audio, fs=8000)
    got, fs = F.load_audio(tmp_path / "b.npz")
    assert fs == 8000 and np.array_equal(got, audio)
    buffer = io.BytesIO()
    np.savez(buffer, audio=np.stack([audio, audio], axis=1), fs=np.array(8000.0))
    (tmp_path / "c.npz.gz").write_bytes(gzip.compress(buffer.getvalue()))
    got, fs = F.load_audio(tmp_path / "c.npz.gz")
    assert fs == 8000 and np.allclose(got, audio)


def test_load_audio_errors_name_the_file(tmp_path):
    with pytest.raises(EEGKitError, match="missing.wav: audio file not found"):
        F.load_audio(tmp_path / "missing.wav")
    (tmp_path / "bad.wav").write_bytes(b"not a wav file")
    with pytest.raises(EEGKitError, match="bad.wav: cannot read audio"):
        F.load_audio(tmp_path / "bad.wav")
    np.savez(tmp_path / "nokeys.npz", x=np.zeros(3))
    with pytest.raises(EEGKitError, match="nokeys.npz: npz must hold keys"):
        F.load_audio(tmp_path / "nokeys.npz")
    (tmp_path / "x.mp3").write_bytes(b"")
    with pytest.raises(EEGKitError, match="x.mp3: unsupported audio format"):
        F.load_audio(tmp_path / "x.mp3")
