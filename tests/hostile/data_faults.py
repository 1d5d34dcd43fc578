"""Builders for the data-side hostile cases: tiny broken copies of the session fixtures, hand-made files.

Every builder writes only under the case's ``tmp_path``; the session fixtures stay read-only.
"""
from __future__ import annotations

import json
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np

SEP = "_-_"


# --------------------------------------------------------------------------- generic files
def wav_bytes(samples: bytes, fs: int, bits: int, channels: int = 1, fmt: int = 1) -> bytes:
    """A RIFF/WAVE file written byte by byte (format 1 = integer PCM, 3 = IEEE float)."""
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, fs, fs * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    body += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_wav(path: Path, audio: np.ndarray, fs: int, kind: str = "int16") -> Path:
    """``audio`` (samples,) or (samples, channels) in [-1, 1] as int16 or float32 PCM."""
    audio = np.asarray(audio, dtype=np.float64)
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    if kind == "int16":
        data = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2").tobytes()
        path.write_bytes(wav_bytes(data, fs, 16, channels))
    else:
        path.write_bytes(wav_bytes(audio.astype("<f4").tobytes(), fs, 32, channels, fmt=3))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def deep_json(depth: int = 100_000) -> str:
    return "[" * depth + "]" * depth


def save_npy(path: Path, array) -> Path:
    array = np.asarray(array)
    np.save(path, array, allow_pickle=array.dtype.hasobject)
    return path


def zip_bomb(path: Path, member: str, size: int) -> Path:
    """A zip with one member of ``size`` spaces (deflate: ~1000x smaller on disk)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, b" " * size)
    return path


# --------------------------------------------------------------------------- Task 2
def split_dir(root: Path) -> Path:
    return root / "derivatives" / "split_data"


def task2_copy(task2_dataset: Path, tmp_path: Path, subjects=("sub-001",)) -> Path:
    """A copy of the split_data files of ``subjects`` (dataset root returned)."""
    root = tmp_path / "data"
    target = split_dir(root)
    target.mkdir(parents=True)
    for subject in subjects:
        for path in split_dir(task2_dataset).glob(f"*{SEP}{subject}{SEP}*.npy"):
            shutil.copy2(path, target / path.name)
    return root


def t2_file(root: Path, split: str, feature: str, subject: str = "sub-001", index: int = 0) -> Path:
    """The split_data file of ``subject``'s ``index``-th stimulus (sorted)."""
    files = sorted(split_dir(root).glob(f"{split}{SEP}{subject}{SEP}*{SEP}{feature}.npy"))
    return files[index]


def t2_stimuli(root: Path, subject: str = "sub-001") -> list[str]:
    return sorted(p.name.split(SEP)[2] for p in split_dir(root).glob(f"train{SEP}{subject}{SEP}*{SEP}eeg.npy"))


def copy_test_set(task2_dataset: Path, tmp_path: Path) -> Path:
    """A copy of test_set/TASK2_regression (mapping files + preprocessed_eeg)."""
    target = tmp_path / "TASK2_regression"
    shutil.copytree(task2_dataset / "test_set" / "TASK2_regression", target)
    return target


def last_subject(test_dir: Path) -> tuple[Path, Path]:
    """(mapping file, npz) of the test set's last subject."""
    mapping = sorted(test_dir.glob("sub-*_mapping.json"))[-1]
    subject = mapping.name.split("_")[0]
    return mapping, test_dir / "preprocessed_eeg" / f"{subject}_eeg.npz"


def edit_npz(npz: Path, change) -> str:
    """Rewrite ``npz`` after ``change(arrays, first_key)``; returns the first key (the entry changed)."""
    with np.load(npz) as data:
        arrays = {key: data[key] for key in data.files}
    first = sorted(arrays)[0]
    change(arrays, first)
    np.savez(npz, **arrays)
    return first


def labels_copy(task2_dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(labels folder, predictions folder) holding the same valid JSON files (labels as predictions)."""
    labels, predictions = tmp_path / "labels", tmp_path / "pred"
    shutil.copytree(task2_dataset / "test_set" / "labels", labels)
    shutil.copytree(labels, predictions)
    return labels, predictions


def edit_json(path: Path, change) -> Path:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    return path


# --------------------------------------------------------------------------- KUL
def kul_copy(kul_dataset: Path, tmp_path: Path, subjects=(1,), cache: Path | None = None) -> Path:
    """S{n}.mat of ``subjects`` and the dry stimulus wavs (plus a warm ``.eegkit_cache`` when given)."""
    root = tmp_path / "kul"
    (root / "stimuli").mkdir(parents=True)
    for subject in subjects:
        shutil.copy2(kul_dataset / f"S{subject}.mat", root / f"S{subject}.mat")
    for wav in (kul_dataset / "stimuli").glob("*_dry.wav"):
        shutil.copy2(wav, root / "stimuli" / wav.name)
    if cache is not None:
        shutil.copytree(cache, root / ".eegkit_cache")
    return root


def edit_mat(path: Path, change) -> Path:
    """Rewrite a subject file after ``change(trials)`` on its list of `RawTrial` (first trial: trials[0])."""
    from speaker_extraction.kul_format import read_subject_mat, write_subject_mat

    trials = read_subject_mat(path)
    change(trials)
    write_subject_mat(path, trials)
    return path
