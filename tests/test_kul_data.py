"""KUL loader: round trip from the synthetic generator, 0-dB mixtures, alignment, splits, cache, errors."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.io.wavfile
import scipy.signal
import torch

from speaker_extraction import data as kul
from speaker_extraction.data import KULCorpus, KULWindows, load_data_config, make_split, split_by_trial, \
    split_leave_one_subject_out, zscore_per_channel
from speaker_extraction.kul_format import RawTrial, write_subject_mat
from util.errors import EEGKitError


@pytest.fixture(scope="module")
def corpus(kul_dataset, tmp_path_factory) -> KULCorpus:
    return KULCorpus(kul_dataset, cache_dir=tmp_path_factory.mktemp("kul_cache"), progress=False)


def _trial(n_eeg=640, n_channels=64, trial_id=1, track=1, part=1, repetition=0, seed=0) -> RawTrial:
    rng = np.random.default_rng(seed)
    return RawTrial(eeg=rng.standard_normal((n_eeg, n_channels)).astype(np.float32), fs=128.0, trial_id=trial_id,
                    attended_ear="L", attended_track=track, condition="dry", experiment=1, part=part,
                    repetition=repetition,
                    stimuli=(f"part{part}_track{track}_dry.wav", f"part{part}_track{3 - track}_dry.wav"),
                    subject="S1")


def _dataset_with(tmp_path: Path, kul_dataset: Path, trials: list[RawTrial]) -> Path:
    """A dataset folder with a hand-made S1.mat and the fixture's stimuli (symlinked)."""
    root = tmp_path / "data"
    root.mkdir()
    os.symlink(kul_dataset / "stimuli", root / "stimuli")
    write_subject_mat(root / "S1.mat", trials)
    return root


def test_round_trip_fields(corpus):
    records = corpus.records()
    assert corpus.subjects == [1, 2]
    assert len(records) == 8
    for subject in (1, 2):
        subject_records = corpus.records([subject])
        assert [r.attended_track for r in subject_records] == [1, 2, 1, 2]
        assert [r.attended_ear for r in subject_records] == ["L", "L", "R", "R"]
        assert [r.part for r in subject_records] == [1, 1, 2, 2]
    for record in records:
        assert record.n_eeg == 1920  # 0.25 min at 128 Hz
        assert record.n_audio == record.n_eeg * 62.5
        assert record.target_wav == f"part{record.part}_track{record.attended_track}_dry.wav"
        assert record.interferer_wav == f"part{record.part}_track{3 - record.attended_track}_dry.wav"
    arrays = corpus.trial_arrays(1, 2)
    assert arrays["eeg"].shape == (1920, 64) and arrays["eeg"].dtype == np.float32
    assert arrays["target"].shape == (120000,) and arrays["mixture"].dtype == np.float32


def test_target_is_attended_dry_wav_at_8k(corpus, kul_dataset):
    record = corpus.record(1, 2)  # attends track 2
    fs, pcm = scipy.io.wavfile.read(kul_dataset / "stimuli" / "part1_track2_dry.wav")
    assert fs == 44100
    expected = scipy.signal.resample_poly(pcm / 32768.0, 80, 441)[: record.n_audio]
    target = corpus.trial_arrays(1, 2)["target"]
    assert np.corrcoef(expected, target)[0, 1] > 0.9999
    other = scipy.signal.resample_poly(scipy.io.wavfile.read(kul_dataset / "stimuli" / "part1_track1_dry.wav")[1]
                                       / 32768.0, 80, 441)[: record.n_audio]
    assert abs(np.corrcoef(other, target)[0, 1]) < 0.2


def test_mixture_is_0db(corpus, kul_dataset, tmp_path):
    arrays = corpus.trial_arrays(2, 3)
    rms_t = np.sqrt(np.mean(arrays["target"].astype(np.float64) ** 2))
    rms_i = np.sqrt(np.mean(arrays["interferer"].astype(np.float64) ** 2))
    assert 20 * np.log10(rms_t / rms_i) == pytest.approx(0.0, abs=0.01)
    assert rms_t == pytest.approx(0.05, rel=1e-3)
    np.testing.assert_allclose(arrays["mixture"], arrays["target"] + arrays["interferer"], atol=1e-6)
    # per-window scope: every window is 0 dB on its own
    windowed = KULCorpus(kul_dataset, config={"mix_scope": "window"}, cache_dir=tmp_path, progress=False)
    for item in KULWindows(windowed, [(1, 1), (1, 4)]):
        ratio = item["target"].pow(2).mean().sqrt() / item["interferer"].pow(2).mean().sqrt()
        assert float(20 * torch.log10(ratio)) == pytest.approx(0.0, abs=0.01)


def test_windows_aligned_with_whole_trial(corpus, kul_dataset, tmp_path):
    dataset = KULWindows(corpus, [(1, 1), (2, 4)])
    assert len(dataset) == 6  # 15 s trials -> 3 windows of 4 s each
    item = dataset[4]
    assert (item["subject"], item["trial"], item["window"]) == (2, 4, 1)
    assert item["mixture"].shape == (32000,) and item["eeg"].shape == (512, 64)
    whole = corpus.trial_arrays(2, 4)
    np.testing.assert_array_equal(item["eeg"].numpy(), whole["eeg"][512:1024])
    np.testing.assert_array_equal(item["target"].numpy(), whole["target"][32000:64000])
    # overlapping windows with a 1-s hop: window 3 starts at EEG sample 384 <-> audio 24000
    hop_corpus = KULCorpus(kul_dataset, config={"hop_s": 1.0}, cache_dir=tmp_path, progress=False)
    hop_set = KULWindows(hop_corpus, [(1, 1)])
    assert len(hop_set) == 12  # (1920 - 512) // 128 + 1
    whole = hop_corpus.trial_arrays(1, 1)
    np.testing.assert_array_equal(hop_set[3]["eeg"].numpy(), whole["eeg"][384:896])
    np.testing.assert_array_equal(hop_set[3]["mixture"].numpy(), whole["mixture"][24000:56000])
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2)))
    assert batch["mixture"].shape == (2, 32000) and batch["eeg"].shape == (2, 512, 64)


def test_eeg_bandpass_and_trial_zscore(corpus, kul_dataset):
    eeg = corpus.trial_arrays(1, 1)["eeg"]  # (1920, 64)
    np.testing.assert_allclose(eeg.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(eeg.std(axis=0), 1.0, atol=1e-3)
    freqs, power = scipy.signal.welch(eeg, fs=128, nperseg=512, axis=0)
    power = power.mean(axis=1)
    passband = power[(freqs >= 4) & (freqs <= 20)].mean()
    assert power[freqs >= 45].mean() < 0.01 * passband
    raw = scipy.io.loadmat(kul_dataset / "S1.mat")["trials"][0, 0]["RawData"][0, 0]["EegData"][0, 0]
    _, raw_power = scipy.signal.welch(zscore_per_channel(raw), fs=128, nperseg=512, axis=0)
    assert raw_power.mean(axis=1)[freqs >= 45].mean() > 5 * power[freqs >= 45].mean()


def test_channel_subset_by_name_and_index(corpus, kul_dataset, tmp_path):
    subset = KULCorpus(kul_dataset, config={"channels": ["Cz", 0]}, cache_dir=tmp_path, progress=False)
    eeg = subset.trial_arrays(1, 1)["eeg"]
    full = corpus.trial_arrays(1, 1)["eeg"]
    assert eeg.shape == (1920, 2)
    np.testing.assert_array_equal(eeg[:, 0], full[:, 47])  # Cz is BioSemi B16 (index 47)
    np.testing.assert_array_equal(eeg[:, 1], full[:, 0])
    with pytest.raises(EEGKitError, match="unknown channel 'Cq'"):
        KULCorpus(kul_dataset, config={"channels": ["Cq"]}, cache_dir=tmp_path, progress=False)


def test_trial_split_disjoint_and_deterministic(corpus):
    split = split_by_trial(corpus, val_trials=1, test_trials=1, seed=0)
    sets = {name: set(keys) for name, keys in split.items()}
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert sets["train"] | sets["val"] | sets["test"] == {r.key for r in corpus.records()}
    for subject in (1, 2):
        assert sum(s == subject for s, _ in split["test"]) == 1
        assert sum(s == subject for s, _ in split["val"]) == 1
    assert split_by_trial(corpus, seed=0) == split
    assert any(split_by_trial(corpus, seed=s) != split for s in range(1, 6))
    assert make_split(corpus, {"protocol": "trial", "seed": 0}) == split
    with pytest.raises(EEGKitError, match="cannot fill"):
        split_by_trial(corpus, val_trials=2, test_trials=2)


def test_leave_one_subject_out(corpus):
    split = split_leave_one_subject_out(corpus, test_subject=2, val_trials=1)
    assert {s for s, _ in split["train"] + split["val"]} == {1}
    assert split["test"] == [(2, 1), (2, 2), (2, 3), (2, 4)]
    assert len(split["val"]) == 1 and len(split["train"]) == 3
    with pytest.raises(EEGKitError, match="S7.mat is not in the dataset"):
        split_leave_one_subject_out(corpus, test_subject=7)
    with pytest.raises(EEGKitError, match="needs split.test_subject"):
        make_split(corpus, {"protocol": "loso"})


def test_repetitions_excluded_by_default(kul_dataset, tmp_path):
    trials = [_trial(trial_id=1), _trial(trial_id=2, track=2), _trial(trial_id=3, repetition=1)]
    root = _dataset_with(tmp_path, kul_dataset, trials)
    default = KULCorpus(root, cache_dir=tmp_path / "c", progress=False)
    assert [r.trial for r in default.records()] == [1, 2]
    with_rep = KULCorpus(root, config=load_data_config(overrides=["include_repetitions=true"]),
                         cache_dir=tmp_path / "c", progress=False)
    assert [r.trial for r in with_rep.records()] == [1, 2, 3]


def test_cache_reused_and_invalidated(kul_dataset, tmp_path, monkeypatch):
    root = _dataset_with(tmp_path, kul_dataset, [_trial(trial_id=1), _trial(trial_id=2, track=2)])
    first = KULCorpus(root, cache_dir=tmp_path / "c", progress=False)
    expected = first.trial_arrays(1, 2)["eeg"]

    def fail(path):
        raise AssertionError("the .mat file was read again although the cache is valid")

    monkeypatch.setattr(kul, "read_subject_mat", fail)
    second = KULCorpus(root, cache_dir=tmp_path / "c", progress=False)
    np.testing.assert_array_equal(second.trial_arrays(1, 2)["eeg"], expected)
    monkeypatch.undo()
    write_subject_mat(root / "S1.mat", [_trial(trial_id=1), _trial(trial_id=2, track=2, seed=5)])
    os.utime(root / "S1.mat", ns=(1, 1))  # a different mtime invalidates the cache
    third = KULCorpus(root, cache_dir=tmp_path / "c", progress=False)
    assert not np.array_equal(third.trial_arrays(1, 2)["eeg"], expected)


def test_subject_lru(kul_dataset, tmp_path):
    corpus = KULCorpus(kul_dataset, config={"subject_cache": 1}, cache_dir=tmp_path, progress=False)
    KULWindows(corpus, [(1, 1)])[0]
    KULWindows(corpus, [(2, 1)])[0]
    assert list(corpus._eeg_maps) == [2]
    assert isinstance(corpus._eeg_maps[2][1], np.memmap)


# ---------------------------------------------------------------------------
# Bad input: one-line errors naming the file
def test_error_mat_without_trials(kul_dataset, tmp_path):
    root = _dataset_with(tmp_path, kul_dataset, [_trial()])
    scipy.io.savemat(root / "S1.mat", {"data": np.zeros(3)})
    with pytest.raises(EEGKitError, match=r"S1\.mat: no variable 'trials' \(found: data\)"):
        KULCorpus(root, cache_dir=tmp_path / "c", progress=False)


def test_error_63_channels(kul_dataset, tmp_path):
    root = _dataset_with(tmp_path, kul_dataset, [_trial()])
    cells = scipy.io.loadmat(root / "S1.mat")["trials"]
    raw = cells[0, 0]["RawData"][0, 0]
    raw["EegData"][0, 0] = raw["EegData"][0, 0][:, :63]
    scipy.io.savemat(root / "S1.mat", {"trials": cells})
    with pytest.raises(EEGKitError, match=r"S1\.mat: trial 1: expected 64 channels, found 63") as info:
        KULCorpus(root, cache_dir=tmp_path / "c", progress=False)
    assert "\n" not in str(info.value)


def test_error_missing_stimulus(kul_dataset, tmp_path):
    root = _dataset_with(tmp_path, kul_dataset, [_trial(part=3)])
    with pytest.raises(EEGKitError, match=r"part3_track1_dry\.wav: stimulus file not found \(needed by S1\.mat"):
        KULCorpus(root, cache_dir=tmp_path / "c", progress=False)


def test_error_audio_shorter_than_eeg(kul_dataset, tmp_path):
    root = _dataset_with(tmp_path, kul_dataset, [_trial(n_eeg=128 * 20)])  # 20 s EEG vs 16 s audio
    with pytest.raises(EEGKitError, match=r"part1_track1_dry\.wav: stimulus \(16\.00 s\) is shorter than the EEG "
                                          r"of S1\.mat trial 1 \(20\.00 s\)"):
        KULCorpus(root, cache_dir=tmp_path / "c", progress=False)


def test_error_unreadable_mat(kul_dataset, tmp_path):
    root = _dataset_with(tmp_path, kul_dataset, [_trial()])
    (root / "S1.mat").write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(EEGKitError, match=r"S1\.mat: cannot read MATLAB file"):
        KULCorpus(root, cache_dir=tmp_path / "c", progress=False)


def test_error_no_subject_files(tmp_path):
    with pytest.raises(EEGKitError, match="no subject files"):
        KULCorpus(tmp_path, progress=False)


def test_error_hop_not_whole_audio_samples(kul_dataset, tmp_path):
    with pytest.raises(EEGKitError, match="hop_s"):
        KULCorpus(kul_dataset, config={"hop_s": 1 / 128}, cache_dir=tmp_path, progress=False)


def test_yaml_config_and_build_datasets(kul_dataset, tmp_path):
    path = Path(kul.__file__).parent / "configs" / "defaults.yaml"
    config = load_data_config(path, ["split.protocol=loso", "split.test_subject=1"])
    assert {k: v for k, v in config.items() if k != "split"} == {k: v for k, v in kul.data_defaults().items()
                                                                 if k != "split"}
    corpus, datasets = kul.build_datasets(kul_dataset, config, cache_dir=tmp_path, progress=False)
    assert {item["subject"] for item in datasets["test"]} == {1}
    assert {datasets["train"][k]["subject"] for k in range(len(datasets["train"]))} == {2}
    assert len(datasets["train"]) == 9 and len(datasets["val"]) == 3 and len(datasets["test"]) == 12
