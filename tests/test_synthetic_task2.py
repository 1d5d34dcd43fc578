"""Tests for the synthetic Task 2 generator, its CLI and the shared EEG forward model."""
import json

import numpy as np
import pytest
from scipy import signal
from scipy.io import wavfile

import synthetic
from synthetic import eeg_forward
from synthetic import task2 as synthetic_task2
from util import features
from util.errors import EEGKitError

# conftest's task2_dataset: generate(out, subjects=3, minutes=2, seed=0, test_subjects=2)
TRAIN_SUBJECTS = ["sub-001", "sub-002", "sub-003"]
# pool of min(4, 3) = 3 stories of 1 min; subject i hears pool items i and i+1 (mod 3)
HEARD = {"sub-001": ["audiobook_1_1", "audiobook_1_2"], "sub-002": ["audiobook_1_2", "podcast_1"],
         "sub-003": ["podcast_1", "audiobook_1_1"]}
TEST_SUBJECTS = ["sub-101", "sub-102"]


def _split_files(root):
    return sorted(p.name for p in (root / "derivatives" / "split_data").iterdir())


def test_split_data_file_names(task2_dataset):
    expected = sorted(f"{split}_-_{sub}_-_{stim}_-_{feat}.npy" for sub, stims in HEARD.items() for stim in stims
                      for split in ("train", "val", "test") for feat in ("eeg", "envelope", "mel"))
    assert _split_files(task2_dataset) == expected
    assert sorted(p.name for p in (task2_dataset / "stimuli" / "eeg").iterdir()) == \
        ["audiobook_1_1.wav", "audiobook_1_2.wav", "podcast_1.wav"]


def test_split_data_shapes_dtypes_and_80_10_10(task2_dataset):
    split_dir = task2_dataset / "derivatives" / "split_data"
    for sub, stims in HEARD.items():
        for stim in stims:
            lengths = {}
            for split in ("train", "val", "test"):
                arrays = {f: np.load(split_dir / f"{split}_-_{sub}_-_{stim}_-_{f}.npy")
                          for f in ("eeg", "envelope", "mel")}
                assert {f: a.dtype for f, a in arrays.items()} == {f: np.float32 for f in arrays}
                n = len(arrays["eeg"])
                assert arrays["eeg"].shape == (n, 64)
                assert arrays["envelope"].shape == (n, 1)
                assert arrays["mel"].shape == (n, 10)
                lengths[split] = n
            total = sum(lengths.values())
            assert abs(total - 60 * 64) <= 4  # 1-min story at 64 Hz
            assert lengths["train"] == round(0.8 * total) and lengths["val"] == round(0.9 * total) - lengths["train"]
            eeg = np.load(split_dir / f"train_-_{sub}_-_{stim}_-_eeg.npy")
            assert 2.0 < eeg.std() < 200.0  # unnormalised, microvolt scale


def test_saved_features_come_from_the_wav(task2_dataset):
    split_dir = task2_dataset / "derivatives" / "split_data"
    audio, fs = features.load_audio(task2_dataset / "stimuli" / "eeg" / "podcast_1.wav")
    assert fs == 22050 and abs(audio.size - 60 * fs) <= 1 and audio.std() > 0.02
    parts = {f: np.concatenate([np.load(split_dir / f"{s}_-_sub-002_-_podcast_1_-_{f}.npy")
                                for s in ("train", "val", "test")]) for f in ("mel", "envelope")}
    n = len(parts["mel"])
    np.testing.assert_allclose(parts["mel"], features.mel10(audio, fs)[:n], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(parts["envelope"], features.gammatone_envelope(audio, fs)[:n], rtol=1e-4, atol=1e-5)
    # the same story gives the same features for another subject
    other = np.load(split_dir / "train_-_sub-003_-_podcast_1_-_mel.npy")
    np.testing.assert_array_equal(other, np.load(split_dir / "train_-_sub-002_-_podcast_1_-_mel.npy"))


def test_test_set_structure(task2_dataset):
    test_dir = task2_dataset / "test_set" / "TASK2_regression"
    mappings = sorted(p.name for p in test_dir.glob("*_mapping.json"))
    assert mappings == [f"{s}_mapping.json" for s in TEST_SUBJECTS]
    assert not set(TEST_SUBJECTS) & set(TRAIN_SUBJECTS)
    train_subjects = {name.split("_-_")[1] for name in _split_files(task2_dataset)}
    assert train_subjects == set(TRAIN_SUBJECTS)
    all_labels = []
    for sid in TEST_SUBJECTS:
        mapping = json.loads((test_dir / f"{sid}_mapping.json").read_text())
        labels = json.loads((task2_dataset / "test_set" / "labels" / f"{sid}.json").read_text())
        assert len(mapping) == 2  # 1 min of EEG -> two 30-s segments
        assert set(labels) == set(mapping)
        assert all(segment_id.startswith(sid) for segment_id in mapping)
        eeg_ids = [entry["eeg"] for entry in mapping.values()]
        assert all(set(entry) == {"eeg"} for entry in mapping.values())
        assert not set(eeg_ids) & set(mapping) and len(set(eeg_ids)) == len(eeg_ids)
        with np.load(test_dir / "preprocessed_eeg" / f"{sid}_eeg.npz") as arrays:
            assert sorted(arrays.files) == sorted(eeg_ids)
            for eeg_id in eeg_ids:
                eeg = arrays[eeg_id]
                assert eeg.shape == (1920, 64) and eeg.dtype == np.float32
                assert abs(eeg.mean()) < 5 and eeg.std() > 2.0  # not z-scored
        for label in labels.values():
            mel = np.asarray(label)
            # power mel; polyphase resampling to 64 Hz may ring slightly below zero
            assert mel.shape == (1920, 10) and mel.min() > -0.05 * mel.max() and mel.std() > 0
            all_labels.append(mel)
    assert not np.allclose(all_labels[0], all_labels[1])
    # the test stories are not training stories
    meta = json.loads((task2_dataset / "synthetic_task2.json").read_text())
    assert not set(meta["test_stimuli"]) & set(meta["train_stimuli"])
    assert not any((task2_dataset / "stimuli" / "eeg" / f"{s}.wav").exists() for s in meta["test_stimuli"])


def _tree(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tmp_path):
    kwargs = dict(subjects=1, minutes=0.5, test_subjects=1, test_minutes=0.5, progress=False)
    a = _tree(synthetic_task2.generate(tmp_path / "a", seed=3, **kwargs))
    b = _tree(synthetic_task2.generate(tmp_path / "b", seed=3, **kwargs))
    c = _tree(synthetic_task2.generate(tmp_path / "c", seed=4, **kwargs))
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert a.keys() == c.keys()
    eeg_key = "derivatives/split_data/train_-_sub-001_-_audiobook_1_1_-_eeg.npy"
    assert a[eeg_key] != c[eeg_key]


def test_cli_help_and_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        synthetic.build_parser().parse_args(["task2", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--out", "--subjects", "--minutes", "--seed", "--test-subjects", "--snr-db"):
        assert flag in help_text
    with pytest.raises(SystemExit):
        synthetic.build_parser().parse_args(["kul", "--help"])
    assert "--trials" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        synthetic.run_cli(synthetic.main, ["task2", "--out", str(tmp_path / "x"), "--minutes", "0.1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--minutes 0.1: must be >= 0.5" in err[0]
    assert not (tmp_path / "x").exists()
    with pytest.raises(EEGKitError, match="test subject"):
        synthetic_task2.generate(tmp_path / "y", subjects=1, test_subjects=0)


# ---------------------------------------------------------------- forward model
def test_forward_snr_is_exact_and_any_fs_works():
    for fs in (64, 128):
        head = eeg_forward.make_subject(1, fs, 3)
        drivers = np.random.default_rng(0).standard_normal((fs * 60, 3))
        eeg = eeg_forward.simulate_eeg(drivers, head, fs, -5.0, np.random.default_rng(9))
        assert eeg.shape == (fs * 60, 64) and eeg.dtype == np.float32
        background = eeg_forward.background_eeg(fs * 60, fs, np.random.default_rng(9), head=head)
        response = eeg.astype(np.float64) - background
        snr = 10 * np.log10(np.mean(response ** 2) / np.mean(background.astype(np.float64) ** 2))
        assert snr == pytest.approx(-5.0, abs=0.01)
        # the stimulus-driven part is the noise-free response (CAR), up to the SNR scale
        clean = eeg_forward.stimulus_response(drivers, head, fs)
        clean -= clean.mean(axis=1, keepdims=True)
        assert np.corrcoef(clean.ravel(), response.ravel())[0, 1] > 0.999
        np.testing.assert_allclose(eeg.mean(axis=1), 0.0, atol=1e-3)  # common average reference


def test_forward_trf_and_subject_variability():
    heads = [eeg_forward.make_subject(s, 64, 2) for s in range(6)]
    for head in heads:
        kernel = eeg_forward.trf_kernels(head, 128)  # (65, 3)
        assert kernel.shape == (65, 3)
        n1_latency = np.argmin(kernel[:, 0]) / 128  # N1 ~100 ms (+-10 % per subject, narrow P1 nearby)
        assert 0.06 <= n1_latency <= 0.14
        assert kernel[:, 0].max() > 0 and kernel[:, 0].min() < 0
    patterns = np.stack([h.patterns[0] for h in heads])  # (6, 64)
    corr = np.corrcoef(patterns)
    assert corr[np.triu_indices(6, 1)].min() > 0.5  # same auditory topography ...
    assert not np.allclose(patterns[0], patterns[1])  # ... but subject-specific
    names, _ = eeg_forward.biosemi64_positions()
    fc = heads[0].patterns[0]
    assert fc[names.index("FCz")] > 0 > fc[names.index("TP7")]  # frontocentral with temporal reversal


def test_background_spectrum_alpha_and_blinks():
    fs = 64
    head = eeg_forward.make_subject(2, fs, 1)
    names, _ = eeg_forward.biosemi64_positions()
    bg = eeg_forward.background_eeg(fs * 240, fs, np.random.default_rng(0), head=head, blink_rate_hz=0.0)
    freqs, psd = signal.welch(bg[:, names.index("Cz")], fs, nperseg=512)
    assert psd[np.argmin(abs(freqs - 2))] > 5 * psd[np.argmin(abs(freqs - 20))]  # 1/f
    freqs, psd_oz = signal.welch(bg[:, names.index("Oz")], fs, nperseg=512)
    alpha = psd_oz[np.argmin(abs(freqs - head.alpha_hz))]
    assert alpha > 2 * psd_oz[np.argmin(abs(freqs - (head.alpha_hz + 4)))]  # occipital alpha peak
    blinky = eeg_forward.background_eeg(fs * 240, fs, np.random.default_rng(0), head=head, blink_rate_hz=0.5)
    extra = blinky.var(axis=0) - bg.var(axis=0)
    assert extra[names.index("Fpz")] > 10 * abs(extra[names.index("Oz")])  # blinks are frontal
    with pytest.raises(EEGKitError, match="drivers must be"):
        eeg_forward.simulate_eeg(np.zeros((100, 2)), head, fs, 0.0, np.random.default_rng(0))


def test_cli_dispatches_kul(monkeypatch, tmp_path, capsys):
    import synthetic.kul as synthetic_kul

    calls = []
    monkeypatch.setattr(synthetic_kul, "generate", lambda out, **kw: calls.append((out, kw)) or tmp_path)
    assert synthetic.main(["kul", "--out", str(tmp_path), "--subjects", "3", "--trials", "4",
                           "--minutes", "0.5", "--seed", "7", "--no-progress"]) == 0
    from pathlib import Path

    from util.atomic import parse_temp

    # generated into a kit temporary beside --out (util.outdir.staged_dir), which then replaces --out whole
    [(staged, kw)] = calls
    assert Path(staged).parent == tmp_path.parent and parse_temp(Path(staged).name)[0] == tmp_path.name
    assert kw == dict(subjects=3, trials=4, minutes=0.5, seed=7, progress=False)
    assert tmp_path.is_dir() and not Path(staged).exists()
    assert "3 subjects x 4 trials" in capsys.readouterr().out
