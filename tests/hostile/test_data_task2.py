"""Hostile DATA for the Task 2 CLIs: train.py on a broken split_data copy or broken stimulus audio,
predict.py on a broken test set, evaluate.py on a broken within-subject test split.

Each case copies only what it needs (one subject's split_data files, one test set) from the session
fixture `task2_dataset`, breaks one file, and checks the harness's promises on the --out folder AND
on the input copy (nothing written next to the data either: the stimulus cache goes to a watched
--cache-dir)."""
from __future__ import annotations

import gzip
import io
import json
import shutil

import numpy as np
import pytest
import yaml

from data_faults import (copy_test_set, deep_json, edit_npz, last_subject, save_npy, split_dir, t2_file, t2_stimuli,
                         task2_copy, truncate, write_wav)
from util import inputs

CONFIG = {
    "target": "mel",
    "model": {"type": "linear", "n_taps": 16},
    "data": {"window_s": 5.0, "hop_s": 5.0, "sampling": "fixed", "normalize": "recording", "batch_size": 8,
             "val_window_s": 5.0},
    "train": {"epochs": 1, "lr": 5.0e-3, "patience": 5, "seed": 0, "mixup": 0},
}


@pytest.fixture(scope="module")
def task2_run(task2_dataset, tmp_path_factory):
    """A linear run trained for one epoch on the whole fixture (read only)."""
    from task2_regression.train import train

    run = tmp_path_factory.mktemp("hostile_runs") / "linear"
    train(CONFIG, task2_dataset, run, say=lambda message: None)
    return run


def _config(tmp_path, config=None):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config or CONFIG))
    return path


# --------------------------------------------------------------------------- train.py on broken split_data
def _set(index, value):
    def change(array):
        array = array.astype(np.float64) if array.dtype.kind != "f" else array.copy()
        array[index] = value
        return array
    return change


TRAIN_DATA = {
    # case: (split, feature, new array from the old one, the text the message must hold)
    "nan_train_eeg": ("train", "eeg", _set((10, 5), np.nan), "first: NaN at index (10, 5) (row 10, column 5)"),
    "inf_train_eeg": ("train", "eeg", _set((0, 0), -np.inf), "first: Inf at index (0, 0)"),
    "nan_train_mel": ("train", "mel", _set((200, 9), np.nan), "first: NaN at index (200, 9)"),
    "inf_train_mel": ("train", "mel", _set((3, 0), np.inf), "first: Inf at index (3, 0)"),
    "nan_val_eeg": ("val", "eeg", _set((7, 63), np.nan), "first: NaN at index (7, 63)"),
    "nan_val_mel": ("val", "mel", _set((1, 2), np.nan), "first: NaN at index (1, 2)"),
    "zero_eeg": ("train", "eeg", lambda a: np.zeros_like(a), "constant over rows"),
    "constant_mel": ("train", "mel", lambda a: np.full_like(a, 0.5), "constant over rows"),
    "zero_val_eeg": ("val", "eeg", lambda a: np.zeros_like(a), "constant over rows"),
    "mel_8_bands": ("train", "mel", lambda a: a[:, :8], "mel must be (time, 10), found shape"),
    "mel_1d": ("train", "mel", lambda a: a[:, 0], "mel must be (time, 10), found shape"),
    "mel_transposed": ("train", "mel", lambda a: a[:640].T, "looks transposed"),
    "eeg_63_channels": ("train", "eeg", lambda a: a[:, :63], "EEG must have 64 channels"),
    "eeg_channels_first": ("train", "eeg", lambda a: a[:500].T, "looks channels-first"),
    "complex_eeg": ("train", "eeg", lambda a: a.astype(np.complex64), "holds complex numbers"),
    "string_eeg": ("train", "eeg", lambda a: a.astype(str), "unsupported dtype"),
    "bool_eeg": ("train", "eeg", lambda a: a > 0, "unsupported dtype bool"),
    "object_eeg": ("train", "eeg", lambda a: np.array([a, None], dtype=object), "unsupported dtype object"),
    "empty_eeg": ("train", "eeg", lambda a: a[:0], "empty array"),
    "three_d_mel": ("train", "mel", lambda a: a[:, :, None], "expected a 1-D or 2-D array"),
    "fortran_nan_eeg": ("train", "eeg", lambda a: np.asfortranarray(_set((20, 1), np.nan)(a)),
                        "first: NaN at index (20, 1)"),
}


@pytest.mark.parametrize("case", list(TRAIN_DATA))
def test_task2_train_refuses_bad_split_data(case, refuse, task2_dataset, tmp_path):
    from task2_regression.train import main

    root = task2_copy(task2_dataset, tmp_path)
    split, feature, change, text = TRAIN_DATA[case]
    bad = t2_file(root, split, feature)
    save_npy(bad, change(np.load(bad)))
    out = tmp_path / "run"
    line = refuse(main, ["--config", _config(tmp_path), "--data", root, "--out", out], names=[bad], watch=[out, root])
    assert text in line


def test_task2_train_refuses_a_truncated_npy(refuse, task2_dataset, tmp_path):
    from task2_regression.train import main

    root = task2_copy(task2_dataset, tmp_path)
    bad = truncate(t2_file(root, "val", "mel"), 0.7)
    out = tmp_path / "run"
    line = refuse(main, ["--config", _config(tmp_path), "--data", root, "--out", out], names=[bad], watch=[out, root])
    assert "truncated .npy" in line


def test_task2_train_refuses_a_subject_whose_recordings_are_all_shorter_than_a_window(refuse, task2_dataset, tmp_path):
    from task2_regression.train import main

    root = task2_copy(task2_dataset, tmp_path, subjects=("sub-001", "sub-002"))
    for path in split_dir(root).glob("train_-_sub-002_-_*.npy"):
        save_npy(path, np.load(path)[:200])  # 3.1 s of every train recording of sub-002 < the 5-s window
    out = tmp_path / "run"
    line = refuse(main, ["--config", _config(tmp_path), "--data", root, "--out", out],
                  names=["sub-002"], watch=[out, root])
    assert "every recording of sub-002 is shorter than the window of 320 samples (5 s)" in line
    assert "200 samples" in line


# --------------------------------------------------------------------------- train.py with broken stimulus audio
def _stimulus_case(case, path, fs):
    """Break the stimulus file at ``path`` (a copy); returns the offending path."""
    n = fs  # 1 s is enough to be refused
    if case == "truncated_wav":
        return truncate(path, 0.5)
    if case == "silent_wav":
        return write_wav(path, np.zeros(n), fs)
    if case == "nan_wav":
        audio = 0.1 * np.sin(np.arange(n) / 7.0)
        audio[123] = np.nan
        return write_wav(path, audio, fs, "float32")
    if case == "empty_wav":
        path.write_bytes(b"")
        return path
    if case == "garbage_wav":
        path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
        return path
    target = path.with_name(path.name.replace(".wav", ".npz.gz"))
    path.unlink()
    buffer = io.BytesIO()
    if case == "npz_gz_bomb":  # 4 MiB of audio, ~4 KiB compressed; the cap is lowered to 1 MiB for speed
        np.savez(buffer, audio=np.zeros(1 << 20, np.float32), fs=np.array(fs))
    elif case == "npz_object_audio":
        np.savez(buffer, audio=np.array([None, 1], dtype=object), fs=np.array(fs))
    else:  # npz_missing_fs
        np.savez(buffer, audio=np.ones(n, np.float32))
    target.write_bytes(gzip.compress(buffer.getvalue()))
    return target


STIMULUS_CASES = {
    "truncated_wav": "truncated or damaged wav",
    "silent_wav": "audio is silent",
    "nan_wav": "first: NaN at index 123",
    "empty_wav": "empty file",
    "garbage_wav": "cannot read audio",
    "npz_gz_bomb": "beyond the 1 MiB cap",
    "npz_object_audio": "object array",
    "npz_missing_fs": "npz must hold keys 'audio' and 'fs'",
}


@pytest.mark.parametrize("case", list(STIMULUS_CASES))
def test_task2_train_refuses_bad_stimulus_audio(case, refuse, task2_dataset, tmp_path, monkeypatch):
    from task2_regression.train import main

    monkeypatch.setattr(inputs, "MAX_INFLATED_BYTES", 1 << 20)
    root = task2_copy(task2_dataset, tmp_path)
    audio_dir = tmp_path / "stimuli"
    audio_dir.mkdir()
    for stimulus in t2_stimuli(root):
        shutil.copy2(task2_dataset / "stimuli" / "eeg" / f"{stimulus}.wav", audio_dir)
    first = audio_dir / f"{t2_stimuli(root)[0]}.wav"  # the first stimulus computed: nothing cached before it
    bad = _stimulus_case(case, first, 22050)
    out, cache = tmp_path / "run", tmp_path / "cache"
    line = refuse(main, ["--config", "task2_regression/configs/cat_wavenet_small.yaml", "--data", root, "--out", out,
                         "--stimulus-audio", audio_dir, "--cache-dir", cache],
                  names=[bad], watch=[out, cache, root, audio_dir])
    assert STIMULUS_CASES[case] in line


def test_task2_stimulus_cache_truncated_is_rebuilt_not_read(task2_dataset, tmp_path):
    """A truncated cache file (an interrupted copy) is detected and rebuilt from the audio."""
    from task2_regression.stimulus_targets import cache_path, ensure_stimulus_targets
    from util.npy import read_npy_header

    audio_dir = tmp_path / "stimuli"
    audio_dir.mkdir()
    shutil.copy2(task2_dataset / "stimuli" / "eeg" / "audiobook_1_1.wav", audio_dir)
    cache = tmp_path / "cache"
    ensure_stimulus_targets(["audiobook_1_1"], audio_dir, cache, ("mel80",))
    path = cache_path(cache, "audiobook_1_1", "mel80")
    whole = path.read_bytes()
    truncate(path, 0.5)
    ensure_stimulus_targets(["audiobook_1_1"], audio_dir, cache, ("mel80",))
    assert path.read_bytes() == whole and read_npy_header(path).shape[1] == 80


# --------------------------------------------------------------------------- predict.py on a broken test set
def _entry(change):
    return lambda arrays, key: arrays.__setitem__(key, change(arrays[key]))


PREDICT_NPZ = {
    "nan_entry": (_entry(_set((100, 3), np.nan)), "first: NaN at index (100, 3) (row 100, column 3)"),
    "inf_entry": (_entry(_set((0, 63), np.inf)), "first: Inf at index (0, 63)"),
    "object_entry": (_entry(lambda a: np.array([a, "x"], dtype=object)), "object array"),
    "string_entry": (_entry(lambda a: a.astype(str)), "holds text"),
    "bool_entry": (_entry(lambda a: a > 0), "holds booleans"),
    "complex_entry": (_entry(lambda a: a.astype(np.complex64)), "holds complex numbers"),
    "empty_entry": (_entry(lambda a: a[:0]), "is empty"),
    "short_entry": (_entry(lambda a: a[:10]), "has 10 samples, need at least 64"),
    "one_d_entry": (_entry(lambda a: a[:, 0]), "EEG must be (time, 64)"),
    "entry_63_channels": (_entry(lambda a: a[:, :63]), "found 63 channels"),
    "transposed_entry": (_entry(lambda a: a.T), "looks transposed"),
    "zero_entry": (_entry(lambda a: np.zeros_like(a)), "EEG is constant"),
}


@pytest.mark.parametrize("case", list(PREDICT_NPZ))
def test_task2_predict_refuses_bad_test_set_entries(case, refuse, task2_run, task2_dataset, tmp_path):
    from task2_regression.predict import main

    test_dir = copy_test_set(task2_dataset, tmp_path)
    _, npz = last_subject(test_dir)
    change, text = PREDICT_NPZ[case]
    key = edit_npz(npz, change)
    out = tmp_path / "pred"
    line = refuse(main, ["--run", task2_run, "--test-set", test_dir, "--out", out], names=[npz],
                  watch=[out, test_dir, task2_run])
    assert f"'{key}'" in line and text in line


def test_task2_predict_refuses_an_npz_member_beyond_the_cap(refuse, task2_run, task2_dataset, tmp_path, monkeypatch):
    from task2_regression.predict import main

    monkeypatch.setattr(inputs, "MAX_INFLATED_BYTES", 64 * 1024)  # a 1920 x 64 float segment is ~0.5 MB
    test_dir = copy_test_set(task2_dataset, tmp_path)
    out = tmp_path / "pred"
    line = refuse(main, ["--run", task2_run, "--test-set", test_dir, "--out", out], names=["_eeg.npz"],
                  watch=[out, test_dir])
    assert "beyond the 64 KiB cap" in line


@pytest.mark.parametrize("case", ["deep_json", "malformed_json", "entry_without_eeg_id", "npz_not_a_zip",
                                  "mapping_names_missing_entry", "mapping_is_a_list"])
def test_task2_predict_refuses_bad_mapping_or_archive(case, refuse, task2_run, task2_dataset, tmp_path):
    from task2_regression.predict import main

    test_dir = copy_test_set(task2_dataset, tmp_path)
    mapping, npz = last_subject(test_dir)
    bad = mapping
    if case == "deep_json":
        mapping.write_text(deep_json())
    elif case == "malformed_json":
        mapping.write_text('{"sub-1_0": {"eeg": ')
    elif case == "mapping_is_a_list":
        mapping.write_text("[]")
    elif case == "entry_without_eeg_id":
        obj = json.loads(mapping.read_text())
        obj[next(iter(obj))] = {"eeg": 7}
        mapping.write_text(json.dumps(obj))
    elif case == "mapping_names_missing_entry":
        obj = json.loads(mapping.read_text())
        obj[next(iter(obj))] = {"eeg": "eeg_nothere"}
        mapping.write_text(json.dumps(obj))
        bad = npz
    else:
        npz.write_bytes(b"this is not a zip archive")
        bad = npz
    out = tmp_path / "pred"
    refuse(main, ["--run", task2_run, "--test-set", test_dir, "--out", out], names=[bad], watch=[out, test_dir])


# --------------------------------------------------------------------------- evaluate.py on a broken test split
@pytest.mark.parametrize("case", ["nan_test_eeg", "constant_test_mel", "test_mel_8_bands", "segment_s_nan",
                                  "segment_s_inf"])
def test_task2_evaluate_refuses_bad_test_split(case, refuse, task2_run, task2_dataset, tmp_path):
    from task2_regression.evaluate import main

    root = task2_copy(task2_dataset, tmp_path)
    segment, name = "5", None
    if case == "nan_test_eeg":
        name = save_npy(t2_file(root, "test", "eeg"), _set((30, 30), np.nan)(np.load(t2_file(root, "test", "eeg"))))
    elif case == "constant_test_mel":
        name = save_npy(t2_file(root, "test", "mel"), np.ones_like(np.load(t2_file(root, "test", "mel"))))
    elif case == "test_mel_8_bands":
        name = save_npy(t2_file(root, "test", "mel"), np.load(t2_file(root, "test", "mel"))[:, :8])
    else:
        segment, name = case.split("_")[-1], "--segment-s"
    out = tmp_path / "out"
    refuse(main, ["--run", task2_run, "--data", root, "--segment-s", segment, "--out", out / "within.json"],
           names=[name], watch=[out, root])
