"""Synthetic KUL generator: real on-disk layout, design of the trials, determinism, EEG tracks attention."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import scipy.io.wavfile

from speaker_extraction.data import KULCorpus
from speaker_extraction.kul_format import BIOSEMI64
from util.errors import EEGKitError
from synthetic.kul import generate, speech_envelope


def test_mat_layout_matches_real_field_access(kul_dataset):
    trials = scipy.io.loadmat(kul_dataset / "S1.mat")["trials"]
    assert trials.shape == (1, 4) and trials.dtype == object
    first = trials[0, 0]
    assert set(first.dtype.names) == {"RawData", "FileHeader", "TrialID", "attended_ear", "stimuli", "condition",
                                      "experiment", "part", "attended_track", "repetition", "subject"}
    eeg = first["RawData"][0, 0]["EegData"][0, 0]
    assert eeg.shape == (1920, 64)
    assert first["FileHeader"][0, 0]["SampleRate"][0, 0][0, 0] == 128
    assert [int(trials[0, k]["attended_track"][0, 0][0, 0]) for k in range(4)] == [1, 2, 1, 2]
    assert [str(trials[0, k]["attended_ear"][0, 0][0]) for k in range(4)] == ["L", "L", "R", "R"]
    assert str(first["subject"][0, 0][0]) == "S1"
    channels = [str(c[0]) for c in first["RawData"][0, 0]["Channels"][0, 0].reshape(-1)]
    assert channels == BIOSEMI64
    # stimuli cell = (left-ear file, right-ear file): the attended track sits at the attended ear
    left, right = (str(s[0]) for s in first["stimuli"][0, 0].reshape(-1))
    assert left == "part1_track1_dry.wav" and right == "part1_track2_dry.wav"
    third = trials[0, 2]
    left, right = (str(s[0]) for s in third["stimuli"][0, 0].reshape(-1))
    assert right.startswith("part2_track1") and left.startswith("part2_track2")


def test_stimuli_wavs(kul_dataset):
    for part in (1, 2):
        for track in (1, 2):
            fs, dry = scipy.io.wavfile.read(kul_dataset / "stimuli" / f"part{part}_track{track}_dry.wav")
            assert fs == 44100 and dry.dtype == np.int16 and dry.ndim == 1
            assert len(dry) / fs == pytest.approx(15.0 + 1.0, abs=0.01)  # EEG length + extra_s
            fs_h, hrtf = scipy.io.wavfile.read(kul_dataset / "stimuli" / f"part{part}_track{track}_hrtf.wav")
            assert fs_h == 44100 and hrtf.shape == (len(dry), 2)
            assert np.abs(hrtf[:, 1]).mean() < np.abs(hrtf[:, 0]).mean()  # far ear quieter
    _, track1 = scipy.io.wavfile.read(kul_dataset / "stimuli" / "part1_track1_dry.wav")
    _, track2 = scipy.io.wavfile.read(kul_dataset / "stimuli" / "part1_track2_dry.wav")
    assert abs(np.corrcoef(track1.astype(float), track2.astype(float))[0, 1]) < 0.2  # two different talkers


def test_deterministic_and_subject_specific(tmp_path):
    a = generate(tmp_path / "a", subjects=2, trials=2, minutes=0.05, seed=3, progress=False)
    b = generate(tmp_path / "b", subjects=2, trials=2, minutes=0.05, seed=3, progress=False)
    assert a == tmp_path / "a"
    eeg = {}
    for name, root in (("a", a), ("b", b)):
        for subject in (1, 2):
            cells = scipy.io.loadmat(root / f"S{subject}.mat")["trials"]
            eeg[name, subject] = cells[0, 0]["RawData"][0, 0]["EegData"][0, 0]
    assert eeg["a", 1].shape == (384, 64)  # 3 s at 128 Hz
    np.testing.assert_array_equal(eeg["a", 1], eeg["b", 1])
    assert not np.allclose(eeg["a", 1], eeg["a", 2])
    assert (a / "stimuli" / "part1_track2_dry.wav").read_bytes() == (b / "stimuli" / "part1_track2_dry.wav").read_bytes()


def test_repetition_trials(tmp_path):
    root = generate(tmp_path, subjects=1, trials=2, minutes=0.05, seed=0, repetitions=2, progress=False)
    trials = scipy.io.loadmat(root / "S1.mat")["trials"]
    assert trials.shape == (1, 4)
    assert [int(trials[0, k]["repetition"][0, 0][0, 0]) for k in range(4)] == [0, 0, 1, 1]
    assert trials[0, 2]["RawData"][0, 0]["EegData"][0, 0].shape[0] == 128  # a third of 384 samples


def test_eeg_tracks_attended_more_than_unattended(kul_dataset, tmp_path):
    """Backward-free sanity check: best lagged |r| of frontocentral EEG with each talker's envelope."""
    corpus = KULCorpus(kul_dataset, cache_dir=tmp_path, progress=False)
    picks = [BIOSEMI64.index(name) for name in ("FCz", "Cz", "FC1", "FC2")]

    def best_r(eeg, envelope):
        signal = eeg[:, picks].mean(axis=1)
        return max(abs(np.corrcoef(envelope[: len(envelope) - lag], signal[lag:])[0, 1]) for lag in range(0, 40))

    margins = []
    for record in corpus.records():
        arrays = corpus.trial_arrays(record.subject, record.trial)
        n = len(arrays["eeg"])
        r_att = best_r(arrays["eeg"], speech_envelope(arrays["target"], 8000)[:n])
        r_unatt = best_r(arrays["eeg"], speech_envelope(arrays["interferer"], 8000)[:n])
        margins.append(r_att - r_unatt)
    assert min(margins) > 0.1, margins


def test_bad_arguments(tmp_path):
    with pytest.raises(EEGKitError, match="need subjects >= 1"):
        generate(tmp_path, subjects=0)
    with pytest.raises(EEGKitError, match="shorter than 2 s"):
        generate(tmp_path, subjects=1, trials=1, minutes=0.01, progress=False)
