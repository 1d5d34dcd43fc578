"""Hostile DATA for the speaker-extraction CLIs: train.py and evaluate.py on a broken KU Leuven copy
(.mat EEG, subject files, stimulus wavs), predict.py on a broken EEG .npy or mixture wav.

Each case copies one or two subject files and the dry stimuli of the session fixture `kul_dataset`,
breaks one thing and checks the harness's promises on --out and on every input file (the subject
files and the stimulus folder). The kit's own cache folder inside the copy is not an input: a
subject read before the broken one may be cached there, which is the cache doing its job."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from data_faults import edit_mat, kul_copy, save_npy, truncate, write_wav

FS_AUDIO, FS_EEG = 8000, 128


def _inputs(root):
    return [*sorted(root.glob("S*.mat")), root / "stimuli"]


def _config(tmp_path, tiny_se_config):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_se_config))
    return path


def _first_trial(change):
    def edit(trials):
        change(trials[0])
    return edit


def _eeg(transform):
    def change(trial):
        trial.eeg = transform(np.array(trial.eeg, dtype=np.float64))
    return change


def _set(index, value):
    def transform(eeg):
        eeg[index] = value
        return eeg
    return transform


MAT_CASES = {
    # case: (change to the first trial of S1.mat, the text the message must hold)
    "nan_eeg": (_eeg(_set((50, 3), np.nan)), "EegData: contains NaN or Inf (first: NaN at index (50, 3)"),
    "inf_eeg": (_eeg(_set((0, 63), -np.inf)), "first: Inf at index (0, 63)"),
    "zero_eeg": (_eeg(np.zeros_like), "EEG is constant"),
    "complex_eeg": (_eeg(lambda e: e.astype(np.complex128) * 1j), "holds complex numbers"),
    "eeg_63_channels": (_eeg(lambda e: e[:, :63]), "expected 64 channels, found 63"),
    "one_sample_eeg": (_eeg(lambda e: e[:1]), "has 1 samples, need at least 2"),
    "attended_track_3": (lambda t: setattr(t, "attended_track", 3), "attended_track must be 1 or 2"),
    "sample_rate_nan": (lambda t: setattr(t, "fs", float("nan")), "SampleRate must be positive"),
    "sample_rate_256": (lambda t: setattr(t, "fs", 256.0), "EEG sampled at 256 Hz, expected 128 Hz"),
    "attended_ear_x": (lambda t: setattr(t, "attended_ear", "X"), "attended_ear must be 'L' or 'R'"),
}


@pytest.mark.parametrize("case", list(MAT_CASES))
def test_se_train_refuses_bad_mat_eeg(case, refuse, kul_dataset, tiny_se_config, tmp_path):
    from speaker_extraction.train import main

    root = kul_copy(kul_dataset, tmp_path)
    change, text = MAT_CASES[case]
    if case == "eeg_63_channels":  # the writer itself refuses 63 channels: write the file with scipy directly
        _write_mat_raw(root / "S1.mat", lambda eeg: eeg[:, :63])
    else:
        edit_mat(root / "S1.mat", _first_trial(change))
    out = tmp_path / "run"
    line = refuse(main, ["--config", _config(tmp_path, tiny_se_config), "--data", root, "--out", out, "--no-progress"],
                  names=[root / "S1.mat"], watch=[out, *_inputs(root)])
    assert text in line


def _write_mat_raw(path, transform):
    """Rewrite the first trial's EegData of a subject file with scipy (bypassing the kit's writer checks)."""
    import scipy.io

    content = scipy.io.loadmat(str(path))
    cell = content["trials"][0, 0]
    raw = cell["RawData"][0, 0]
    raw["EegData"][0, 0] = transform(raw["EegData"][0, 0])
    scipy.io.savemat(str(path), {"trials": content["trials"]})


@pytest.mark.parametrize("case", ["ambiguous_ids", "garbage_mat", "truncated_mat", "no_trials_variable",
                                  "all_trials_short"])
def test_se_train_refuses_bad_subject_files(case, refuse, kul_dataset, tiny_se_config, tmp_path):
    import scipy.io

    from speaker_extraction.train import main

    root = kul_copy(kul_dataset, tmp_path, subjects=(1, 2))
    bad, text = root / "S1.mat", None
    if case == "ambiguous_ids":
        shutil.copy2(root / "S1.mat", root / "S01.mat")
        text = "subject 1 is also"
    elif case == "garbage_mat":
        bad.write_bytes(b"MATLAB 5.0 MAT-file, but not really" + bytes(200))
        text = "cannot read MATLAB file"
    elif case == "truncated_mat":
        truncate(bad, 0.5)
        text = "cannot read MATLAB file"
    elif case == "no_trials_variable":
        scipy.io.savemat(str(bad), {"data": np.zeros(3)})
        text = "no variable 'trials'"
    else:  # every trial of S2 is shorter than the 1-s window of the tiny config
        bad = root / "S2.mat"
        edit_mat(bad, lambda trials: [setattr(t, "eeg", t.eeg[:100]) for t in trials])
        text = "every trial is shorter than one 1-s window (data.window_s): trial 1 0.78 s"
    out = tmp_path / "run"
    line = refuse(main, ["--config", _config(tmp_path, tiny_se_config), "--data", root, "--out", out, "--no-progress"],
                  names=[bad], watch=[out, *_inputs(root)])
    assert text in line


def _break_wavs(root, case):
    """Break every dry stimulus the same way (so the first one the loader needs is broken)."""
    for path in sorted((root / "stimuli").glob("*_dry.wav")):
        if case == "truncated_wav":
            truncate(path, 0.5)
        elif case == "silent_wav":
            write_wav(path, np.zeros(FS_AUDIO * 20), FS_AUDIO)
        elif case == "nan_wav":
            audio = 0.1 * np.sin(np.arange(FS_AUDIO * 20) / 5.0)
            audio[1000] = np.nan
            write_wav(path, audio, FS_AUDIO, "float32")
        elif case == "empty_wav":
            path.write_bytes(b"")
        else:  # missing
            path.unlink()


WAV_CASES = {"truncated_wav": "truncated or damaged wav", "silent_wav": "audio is silent",
             "nan_wav": "first: NaN at index 1000", "empty_wav": "empty file", "missing_wav": "stimulus file not found"}


@pytest.mark.parametrize("case", list(WAV_CASES))
def test_se_train_refuses_bad_stimulus_wavs(case, refuse, kul_dataset, tiny_se_config, tmp_path):
    from speaker_extraction.train import main

    root = kul_copy(kul_dataset, tmp_path)
    _break_wavs(root, case)
    out = tmp_path / "run"
    line = refuse(main, ["--config", _config(tmp_path, tiny_se_config), "--data", root, "--out", out, "--no-progress"],
                  names=[root / "stimuli"], watch=[out, *_inputs(root)])
    assert WAV_CASES[case] in line


@pytest.mark.parametrize("case", ["nan_eeg", "ambiguous_ids", "silent_wav"])
def test_se_evaluate_refuses_bad_data(case, refuse, kul_dataset, tiny_se_run, tmp_path):
    from speaker_extraction.evaluate import main

    root = kul_copy(kul_dataset, tmp_path, subjects=(1, 2))
    bad = root / "S1.mat"
    if case == "nan_eeg":
        edit_mat(bad, _first_trial(MAT_CASES["nan_eeg"][0]))
    elif case == "ambiguous_ids":
        shutil.copy2(bad, root / "S01.mat")
    else:
        _break_wavs(root, "silent_wav")
        bad = root / "stimuli"
    out = tmp_path / "out"
    refuse(main, ["--run", tiny_se_run, "--data", root, "--out", out / "report.json", "--no-progress", "--no-aad"],
           names=[bad], watch=[out, *_inputs(root), tiny_se_run])


# --------------------------------------------------------------------------- predict.py
def _predict_inputs(tmp_path, seconds=3.0):
    rng = np.random.default_rng(0)
    mixture = tmp_path / "mix.wav"
    write_wav(mixture, 0.2 * rng.standard_normal(int(seconds * FS_AUDIO)), FS_AUDIO)
    eeg = tmp_path / "eeg.npy"
    save_npy(eeg, rng.standard_normal((int(seconds * FS_EEG), 64)).astype(np.float32))
    return mixture, eeg


def _npy(transform):
    def change(path):
        save_npy(path, transform(np.load(path)))
        return path
    return change


def _mixture(write):
    def change(mixture_path):
        write(mixture_path)
        return mixture_path
    return change


def _nan_mixture(path):
    audio = 0.1 * np.sin(np.arange(3 * FS_AUDIO) / 3.0)
    audio[5] = np.nan
    write_wav(path, audio, FS_AUDIO, "float32")


PREDICT_CASES = {
    # case: ("eeg" | "mixture", change(path) -> offending path, the text the message must hold)
    "nan_eeg": ("eeg", _npy(lambda e: _set((40, 2), np.nan)(e.copy())), "first: NaN at index (40, 2)"),
    "inf_eeg": ("eeg", _npy(lambda e: _set((0, 0), np.inf)(e.copy())), "first: Inf at index (0, 0)"),
    "complex_eeg": ("eeg", _npy(lambda e: e.astype(np.complex64)), "holds complex numbers"),
    "object_eeg": ("eeg", _npy(lambda e: np.array([e, None], dtype=object)), "not a readable .npy array"),
    "string_eeg": ("eeg", _npy(lambda e: e.astype(str)), "holds text"),
    "bool_eeg": ("eeg", _npy(lambda e: e > 0), "holds booleans"),
    "zero_eeg": ("eeg", _npy(np.zeros_like), "EEG is constant"),
    "one_d_eeg": ("eeg", _npy(lambda e: e[:, 0]), "EEG must be (time, 64)"),
    "eeg_63_channels": ("eeg", _npy(lambda e: e[:, :63]), "found 63 channels"),
    "empty_eeg": ("eeg", _npy(lambda e: e[:0]), "is empty"),
    "truncated_eeg": ("eeg", lambda p: truncate(p, 0.5), "not a readable .npy array"),
    "empty_eeg_file": ("eeg", lambda p: (p.write_bytes(b""), p)[1], "not a readable .npy array"),
    "truncated_mixture": ("mixture", lambda p: truncate(p, 0.5), "truncated or damaged wav"),
    "silent_mixture": ("mixture", _mixture(lambda p: write_wav(p, np.zeros(3 * FS_AUDIO), FS_AUDIO)), "audio is silent"),
    "nan_mixture": ("mixture", _mixture(_nan_mixture), "first: NaN at index 5"),
    "empty_mixture": ("mixture", lambda p: (p.write_bytes(b""), p)[1], "empty file"),
    "garbage_mixture": ("mixture", lambda p: (p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk"), p)[1],
                        "mix.wav"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_se_predict_refuses_bad_eeg_or_mixture(case, refuse, tiny_se_run, tmp_path):
    from speaker_extraction.predict import main

    mixture, eeg = _predict_inputs(tmp_path)
    which, change, text = PREDICT_CASES[case]
    bad = change(eeg if which == "eeg" else mixture)
    out = tmp_path / "out"
    line = refuse(main, ["--run", tiny_se_run, "--mixture", mixture, "--eeg", eeg, "--out", out / "target.wav"],
                  names=[bad], watch=[out, mixture, eeg, tiny_se_run])
    assert text in line


def test_kul_cache_truncated_is_rebuilt_not_memory_mapped(kul_dataset, tiny_se_config, tmp_path):
    """A truncated trial or audio cache file (an interrupted copy) is detected and rebuilt from the source."""
    from speaker_extraction.data import KULCorpus

    root = kul_copy(kul_dataset, tmp_path)
    corpus = KULCorpus(root, config=tiny_se_config["data"], progress=False)
    record = corpus.records()[0]
    eeg, audio = corpus.eeg(record), corpus.audio(record)["target"]
    trial_file = corpus.cache_dir / corpus._band_tag() / f"S{record.subject}" / record.eeg_file
    audio_file = corpus._audio_cache_path(record.target_wav)
    assert trial_file.is_file() and audio_file.is_file()
    del corpus  # drop its memory maps
    truncate(trial_file, 0.5)
    truncate(audio_file, 0.5)
    again = KULCorpus(root, config=tiny_se_config["data"], progress=False)
    np.testing.assert_array_equal(again.eeg(record), eeg)
    np.testing.assert_array_equal(again.audio(record)["target"], audio)
