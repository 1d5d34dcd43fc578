"""util.inputs and util.features.load_audio: hand-made wavs of every PCM width (golden samples),
decompression caps against crafted bombs, strict JSON numbers, and the shared array checks."""
from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile

import numpy as np
import pytest

from util import inputs
from util.errors import EEGKitError
from util.features import load_audio


# --------------------------------------------------------------------------- hand-made wavs
def wav_bytes(samples: bytes, fs: int, bits: int, channels: int = 1, fmt: int = 1, truncate: int = 0) -> bytes:
    """A RIFF/WAVE file written byte by byte (format 1 = PCM, 3 = IEEE float); ``truncate`` cuts the data."""
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, fs, fs * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    body += b"data" + struct.pack("<I", len(samples)) + samples
    data = b"RIFF" + struct.pack("<I", len(body)) + body
    return data[:len(data) - truncate] if truncate else data


def pcm24(values) -> bytes:
    return b"".join(int(v).to_bytes(4, "little", signed=True)[:3] for v in values)


GOLDEN = [-1.0, -0.5, 0.0, 0.5]  # the first four samples of every case decode exactly to these

CASES = {
    # name: (data bytes, bits, format tag, the last sample's exact value)
    "uint8": (bytes([0, 64, 128, 192, 255]), 8, 1, 127 / 128),
    "int16": (np.array([-32768, -16384, 0, 16384, 32767], "<i2").tobytes(), 16, 1, 32767 / 32768),
    "int24": (pcm24([-(1 << 23), -(1 << 22), 0, 1 << 22, (1 << 23) - 1]), 24, 1, ((1 << 23) - 1) / (1 << 23)),
    "int32": (np.array([-(1 << 31), -(1 << 30), 0, 1 << 30, (1 << 31) - 1], "<i4").tobytes(), 32, 1,
              ((1 << 31) - 1) / (1 << 31)),
    "float32": (np.array([-1.0, -0.5, 0.0, 0.5, 0.75], "<f4").tobytes(), 32, 3, 0.75),
    "float64": (np.array([-1.0, -0.5, 0.0, 0.5, 0.75], "<f8").tobytes(), 64, 3, 0.75),
}


@pytest.mark.parametrize("name", list(CASES))
def test_load_audio_decodes_every_pcm_width_to_golden_values(tmp_path, name):
    data, bits, fmt, last = CASES[name]
    path = tmp_path / f"{name}.wav"
    path.write_bytes(wav_bytes(data, 8000, bits, fmt=fmt))
    audio, fs = load_audio(path, np.float64)
    assert fs == 8000 and audio.dtype == np.float64
    np.testing.assert_array_equal(audio, GOLDEN + [last])


def test_stereo_is_averaged_or_refused_as_the_caller_asks(tmp_path):
    left, right = [-16384, 0, 16384, 8192], [16384, 16384, 16384, -8192]
    frames = np.array(list(zip(left, right)), "<i2").tobytes()
    path = tmp_path / "stereo.wav"
    path.write_bytes(wav_bytes(frames, 8000, 16, channels=2))
    audio, _ = load_audio(path, np.float64, channels="mean")
    np.testing.assert_array_equal(audio, [0.0, 0.25, 0.5, 0.0])
    with pytest.raises(EEGKitError, match=r"stereo\.wav: expected mono audio, found 2 channels"):
        load_audio(path, channels="mono")


def test_truncated_empty_silent_and_nan_wavs_are_refused_naming_the_file(tmp_path):
    data = np.arange(1, 101, dtype="<i2").tobytes()
    (tmp_path / "cut.wav").write_bytes(wav_bytes(data, 8000, 16, truncate=50))
    with pytest.raises(EEGKitError, match=r"cut\.wav: truncated or damaged wav \(Reached EOF prematurely"):
        load_audio(tmp_path / "cut.wav")
    (tmp_path / "head.wav").write_bytes(wav_bytes(data, 8000, 16)[:30])
    with pytest.raises(EEGKitError, match=r"head\.wav: cannot read audio"):
        load_audio(tmp_path / "head.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(EEGKitError, match=r"empty\.wav: empty file"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "silent.wav").write_bytes(wav_bytes(bytes(200), 8000, 16))
    with pytest.raises(EEGKitError, match=r"silent\.wav: audio is silent"):
        load_audio(tmp_path / "silent.wav")
    assert load_audio(tmp_path / "silent.wav", allow_silent=True)[0].shape == (100,)
    values = np.linspace(-0.5, 0.5, 10).astype("<f4")
    values[7] = np.nan
    (tmp_path / "nan.wav").write_bytes(wav_bytes(values.tobytes(), 8000, 32, fmt=3))
    with pytest.raises(EEGKitError, match=r"nan\.wav: audio: contains NaN or Inf \(first: NaN at index 7\)"):
        load_audio(tmp_path / "nan.wav")


def test_pesq_and_stoi_of_an_8_bit_file_agree_with_its_16_bit_version(tmp_path):
    """An estimate stored as 8-bit unsigned and as 16-bit PCM scores (nearly) the same against one reference.

    The decoded 8-bit samples must lie within half a quantisation step of the signal (without the
    128 offset they would sit near +1).
    """
    from scipy.signal import resample_poly

    from evaluation.speaker_extraction import evaluate_files
    from synthetic.speech import speech_stream

    audio, fs = speech_stream(3.0, voice="en", rate_wpm=160, pitch=50, seed=0)
    reference = resample_poly(audio.astype(np.float64), 8000, fs)
    rng = np.random.default_rng(0)
    # a noise floor in the reference (no digital silence, where 8-bit steps alone would dominate PESQ)
    reference = 0.5 * reference / np.max(np.abs(reference)) + 0.005 * rng.standard_normal(reference.size)
    estimate = np.clip(reference + 0.005 * rng.standard_normal(reference.size), -0.99, 0.99)
    pcm16 = np.round(estimate * 32767).astype("<i2")
    pcm8 = np.clip(np.round(estimate * 128) + 128, 0, 255).astype(np.uint8)
    for folder in ("est16", "est8", "ref", "mix"):
        (tmp_path / folder).mkdir()
    (tmp_path / "est16" / "a.wav").write_bytes(wav_bytes(pcm16.tobytes(), 8000, 16))
    (tmp_path / "est8" / "a.wav").write_bytes(wav_bytes(pcm8.tobytes(), 8000, 8))
    ref16 = np.round(reference * 32767).astype("<i2")
    (tmp_path / "ref" / "a.wav").write_bytes(wav_bytes(ref16.tobytes(), 8000, 16))
    (tmp_path / "mix" / "a.wav").write_bytes(wav_bytes(pcm16.tobytes(), 8000, 16))
    decoded8, _ = load_audio(tmp_path / "est8" / "a.wav", np.float64)
    assert np.max(np.abs(decoded8 - estimate)) <= 0.5 / 128 + 1e-12  # within half an 8-bit step
    rows = {}
    for name in ("est16", "est8"):
        report = evaluate_files(tmp_path / name, tmp_path / "ref", tmp_path / "mix", progress=False)
        rows[name] = report["windows"][0]
    assert rows["est16"]["pesq"] > 3.5  # 4.16 here; the 8-bit copy 4.09
    assert abs(rows["est8"]["pesq"] - rows["est16"]["pesq"]) < 0.15, rows
    assert abs(rows["est8"]["stoi"] - rows["est16"]["stoi"]) < 0.01, rows
    assert abs(rows["est8"]["si_sdr"] - rows["est16"]["si_sdr"]) < 1.0, rows


# --------------------------------------------------------------------------- decompression caps
def test_gz_bomb_is_refused_by_declared_size_and_by_stream(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "MAX_INFLATED_BYTES", 64 * 1024)
    bomb = tmp_path / "bomb.npz.gz"
    bomb.write_bytes(gzip.compress(bytes(1 << 20)))  # 1 MiB of zeros -> about 1 KiB compressed
    assert bomb.stat().st_size < 2000
    with pytest.raises(EEGKitError, match=r"bomb\.npz\.gz: declares 1048576 bytes, beyond the 64 KiB cap"):
        inputs.gunzip_file(bomb)
    raw = bytearray(bomb.read_bytes())
    raw[-4:] = (100).to_bytes(4, "little")  # the trailer lies: 100 bytes
    (tmp_path / "liar.gz").write_bytes(bytes(raw))
    with pytest.raises(EEGKitError, match=r"liar\.gz: \.gz content inflates beyond the 64 KiB cap"):
        inputs.gunzip_file(tmp_path / "liar.gz")
    (tmp_path / "liar.npz.gz").write_bytes(bytes(raw))  # the same bomb as a stimulus file
    with pytest.raises(EEGKitError, match=r"liar\.npz\.gz: \.gz content inflates beyond the 64 KiB cap"):
        load_audio(tmp_path / "liar.npz.gz")
    small = tmp_path / "ok.gz"
    small.write_bytes(gzip.compress(b"x" * 1000))
    assert inputs.gunzip_file(small) == b"x" * 1000


def test_zip_member_bomb_is_refused_by_declared_and_actual_size(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "MAX_JSON_BYTES", 64 * 1024)
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("sub-001.json", b" " * (1 << 20))
    assert path.stat().st_size < 5000  # ~1000x compression
    with zipfile.ZipFile(path) as archive:
        with pytest.raises(EEGKitError, match=r"sub-001\.json: declares 1048576 bytes, beyond the 64 KiB cap"):
            inputs.read_zip_member(archive, "sub-001.json", f"{path}:sub-001.json")
        info = archive.getinfo("sub-001.json")
        info.file_size = 10  # a lying central directory: zipfile stops at the declared size, the CRC fails
        with pytest.raises(EEGKitError, match=r"^x: unreadable zip member \(BadZipFile: Bad CRC-32"):
            inputs.read_zip_member(archive, "sub-001.json", "x")


def test_npz_member_caps_and_object_arrays(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    np.savez(buffer, big=np.zeros(50_000), obj=np.array([{"a": 1}], dtype=object), fine=np.arange(3.0))
    monkeypatch.setattr(inputs, "MAX_INFLATED_BYTES", 64 * 1024)
    with inputs.NpzReader(buffer.getvalue(), "x.npz") as npz:
        assert npz["fine"].tolist() == [0.0, 1.0, 2.0]
        with pytest.raises(EEGKitError, match=r"x\.npz: entry 'big': declares 400\d+ bytes, beyond the 64 KiB cap"):
            npz["big"]
        with pytest.raises(EEGKitError, match=r"x\.npz: entry 'obj': is an object array"):
            npz["obj"]
        with pytest.raises(EEGKitError, match=r"x\.npz: no entry 'nope'"):
            npz["nope"]


# --------------------------------------------------------------------------- JSON and arrays
def test_json_reader_refuses_deep_nesting_bad_text_and_oversize(tmp_path, monkeypatch):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(EEGKitError, match=r"deep\.json: JSON nested too deeply to read"):
        inputs.read_json(tmp_path / "deep.json")
    (tmp_path / "bad.json").write_text('{"a": [1, 2,]}')
    with pytest.raises(EEGKitError, match=r"bad\.json: invalid JSON \(.* at line 1 column"):
        inputs.read_json(tmp_path / "bad.json")
    (tmp_path / "latin.json").write_bytes(b'{"\xe9": 1}')
    with pytest.raises(EEGKitError, match=r"latin\.json: not UTF-8 text"):
        inputs.read_json(tmp_path / "latin.json")
    monkeypatch.setattr(inputs, "MAX_JSON_BYTES", 10)
    (tmp_path / "big.json").write_text(json.dumps({"a": 12345678}))
    with pytest.raises(EEGKitError, match=r"big\.json: 15 bytes, beyond the 10 bytes cap"):
        inputs.read_json(tmp_path / "big.json")


@pytest.mark.parametrize("value, message", [
    ([[1.0, True]], "values must be JSON numbers, found booleans"),
    ([[1.0, "1.5"]], "values must be JSON numbers, found strings"),
    ([[1.0, None]], "values must be JSON numbers, found null"),
    ([[1.0], 2.0], r"not a numeric 2-D array \(found numbers where lists belong\)"),
    ([[1.0, 2.0], [3.0]], "ragged lists"),
    ("mel", r"not a numeric array \(found strings"),
])
def test_json_numbers_refuses_what_numpy_would_convert(value, message):
    with pytest.raises(EEGKitError, match=r"seg 7: " + message):
        inputs.json_numbers(value, "seg 7", ndim=2)
    assert inputs.json_numbers([[1, 2.5]], "x").dtype == np.float64


@pytest.mark.parametrize("array, kwargs, message", [
    (np.zeros((3, 2), complex), {}, "array holds complex numbers"),
    (np.array([["a", "b"]]), {}, r"array holds text \(dtype <U1\)"),
    (np.ones((3, 2), bool), {}, "array holds booleans"),
    (np.zeros((0, 4)), {}, r"array is empty \(shape \(0, 4\)\)"),
    (np.ones((5, 8)), {"columns": 10, "what": "mel"}, r"mel must be \(time, 10\), found 8 columns \(shape \(5, 8\)\)"),
    (np.ones(5), {"ndim": 2, "columns": 10, "what": "mel"}, r"mel must be \(time, 10\), found shape \(5,\)"),
    (np.ones((3, 4)), {"min_rows": 64}, "array has 3 samples, need at least 64"),
    (np.zeros((9, 4)), {"refuse_constant": True, "what": "EEG"}, r"EEG is constant \(every value is 0\)"),
])
def test_check_array_refusals_name_the_place(array, kwargs, message):
    with pytest.raises(EEGKitError, match=r"^f\.npy: entry 'k': " + message):
        inputs.check_array(array, "f.npy: entry 'k'", **kwargs)


def test_check_array_names_the_first_bad_index():
    eeg = np.zeros((10, 4))
    eeg[:, 0] = np.arange(10)
    eeg[6, 2], eeg[8, 1] = np.inf, np.nan
    with pytest.raises(EEGKitError, match=r"contains NaN or Inf \(first: Inf at index \(6, 2\) \(row 6, column 2\)\)"):
        inputs.check_array(eeg, "x")
    with pytest.raises(EEGKitError, match=r"first: Inf at index \(106, 2\)"):
        inputs.check_finite(eeg, "x", row_offset=100)
    assert inputs.check_array(np.arange(6.0).reshape(3, 2), "x", columns=2, refuse_constant=True).shape == (3, 2)
