"""Tests for task2_regression.data and task2_regression.stimulus_targets on tiny hand-made split_data folders."""
from __future__ import annotations

import numpy as np
import pytest

from task2_regression import data as split_data
from task2_regression import stimulus_targets
from util.errors import EEGKitError
from task2_regression.data import discover, load_recordings, stimuli_of

SUBJECTS = ("sub-001", "sub-002")
STIMULI = ("audiobook_2_2", "podcast_22")
SPLIT_LENGTHS = {"train": 400, "val": 50, "test": 50}


def make_dataset(root, seed=0, mel_short_by=2, envelope_1d=True):
    """Random split_data folder: eeg (T,64) float64, mel (T-2,10) float32, envelope (T,)."""
    rng = np.random.default_rng(seed)
    split_dir = root / "derivatives" / "split_data"
    split_dir.mkdir(parents=True)
    raw = {}
    for subject in SUBJECTS:
        for stimulus in STIMULI:
            for split, n in SPLIT_LENGTHS.items():
                eeg = rng.normal(3.0, 2.0, size=(n, 64)) * np.arange(1, 65)  # channel-dependent scale
                mel = rng.gamma(2.0, 1.0, size=(n - mel_short_by, 10)).astype(np.float32)
                envelope = rng.random(n)
                envelope = envelope if envelope_1d else envelope[:, None]
                for feature, array in (("eeg", eeg), ("mel", mel), ("envelope", envelope)):
                    np.save(split_dir / f"{split}_-_{subject}_-_{stimulus}_-_{feature}.npy", array)
                    raw[(split, subject, stimulus, feature)] = array
    return split_dir, raw


def test_discover_groups_stimuli_with_underscores(tmp_path):
    split_dir, _ = make_dataset(tmp_path)
    (split_dir / "notes.txt").write_text("ignored")
    groups = discover(split_dir)
    assert len(groups) == 3 * 2 * 2
    assert set(groups[("val", "sub-002", "audiobook_2_2")]) == {"eeg", "mel", "envelope"}
    assert split_data.parse_name(split_dir / "test_-_sub-001_-_audiobook_2_2_-_mel.npy") == (
        "test", "sub-001", "audiobook_2_2", "mel")
    assert split_data.parse_name(split_dir / "bogus_-_sub-001_-_x_-_mel.npy") is None


def test_load_cuts_casts_and_normalises_with_train_stats(tmp_path):
    split_dir, raw = make_dataset(tmp_path)
    train = load_recordings(tmp_path, "train", features=("eeg", "mel", "envelope"))
    val = load_recordings(split_dir, "val", features=("eeg", "mel", "envelope"))
    assert len(train) == 4 and len(val) == 4
    rec = train[0]
    assert rec.n_samples == SPLIT_LENGTHS["train"] - 2  # cut to the shorter mel
    eeg = rec.array("eeg")
    assert eeg.dtype == np.float32 and eeg.shape == (398, 64)
    assert rec.array("envelope").shape == (398, 1)
    np.testing.assert_allclose(eeg.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(eeg.std(axis=0), 1.0, atol=1e-4)

    # val windows use the statistics of the TRAIN part of the same (subject, stimulus)
    val_rec = next(r for r in val if r.subject == rec.subject and r.stimulus == rec.stimulus)
    train_raw = raw[("train", rec.subject, rec.stimulus, "eeg")][:398]
    val_raw = raw[("val", rec.subject, rec.stimulus, "eeg")][:48]
    expected = (val_raw - train_raw.mean(axis=0)) / train_raw.std(axis=0)
    np.testing.assert_allclose(val_rec.window("eeg", 0, 48), expected, rtol=1e-4, atol=1e-4)
    assert abs(val_rec.array("eeg").mean()) > 1e-3  # not re-centred on its own statistics

    mel_train = raw[("train", rec.subject, rec.stimulus, "mel")].astype(np.float64)
    mel_val = raw[("val", rec.subject, rec.stimulus, "mel")]
    expected_mel = (mel_val[5:15] - mel_train.mean(axis=0)) / mel_train.std(axis=0)
    np.testing.assert_allclose(val_rec.window("mel", 5, 10), expected_mel, rtol=1e-4, atol=1e-4)


def test_window_and_none_normalisation(tmp_path):
    split_dir, raw = make_dataset(tmp_path)
    rec = load_recordings(split_dir, "test", normalize="window")[0]
    window = rec.window("eeg", 10, 30)
    np.testing.assert_allclose(window.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(window.std(axis=0), 1.0, atol=1e-4)
    rec_raw = load_recordings(split_dir, "test", normalize="none")[0]
    expected = raw[("test", rec_raw.subject, rec_raw.stimulus, "eeg")][10:40].astype(np.float32)
    np.testing.assert_array_equal(rec_raw.window("eeg", 10, 30), expected)


def test_fortran_order_and_int_dtype_are_read(tmp_path):
    split_dir, raw = make_dataset(tmp_path)
    path = split_dir / "test_-_sub-001_-_podcast_22_-_eeg.npy"
    eeg = np.asfortranarray(raw[("test", "sub-001", "podcast_22", "eeg")])
    np.save(path, eeg)
    mel_path = split_dir / "test_-_sub-001_-_podcast_22_-_mel.npy"
    mel_int = (raw[("test", "sub-001", "podcast_22", "mel")] * 10).astype(np.int16)
    np.save(mel_path, mel_int)
    rec = next(r for r in load_recordings(split_dir, "test", normalize="none")
               if r.subject == "sub-001" and r.stimulus == "podcast_22")
    np.testing.assert_array_equal(rec.window("eeg", 3, 7), eeg[3:10].astype(np.float32))
    np.testing.assert_array_equal(rec.window("mel", 3, 7), mel_int[3:10].astype(np.float32))


@pytest.mark.parametrize("case, message", [
    ("missing_mel", "val_-_sub-001_-_podcast_22_-_mel.npy: file not found"),
    ("nan", "contains NaN or Inf"),
    ("channels", "found shape (450, 63)"),
    ("channels_first", "looks channels-first"),
    ("length", "differs from"),
    ("corrupt", "unreadable .npy"),
    ("truncated", "truncated .npy"),
])
def test_bad_input_gives_one_line_error_naming_the_file(tmp_path, case, message):
    split_dir, raw = make_dataset(tmp_path)
    target = split_dir / "val_-_sub-001_-_podcast_22_-_eeg.npy"
    if case == "missing_mel":
        target = split_dir / "val_-_sub-001_-_podcast_22_-_mel.npy"
        target.unlink()
    elif case == "nan":
        eeg = raw[("val", "sub-001", "podcast_22", "eeg")].copy()
        eeg[17, 3] = np.nan
        np.save(target, eeg)
    elif case == "channels":
        target = split_dir / "train_-_sub-001_-_podcast_22_-_eeg.npy"
        np.save(target, np.zeros((450, 63)))
    elif case == "channels_first":
        np.save(target, np.zeros((64, 50)))
    elif case == "length":
        target = split_dir / "val_-_sub-001_-_podcast_22_-_mel.npy"
        np.save(target, np.zeros((50 + 100, 10)))
    elif case == "corrupt":
        target.write_bytes(b"this is not a numpy file at all")
    elif case == "truncated":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    with pytest.raises(EEGKitError) as info:
        load_recordings(split_dir, "val" if case != "channels" else "train")
    text = str(info.value)
    assert "\n" not in text and message in text and target.name in text


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(EEGKitError, match="split_data folder not found"):
        load_recordings(tmp_path / "nope", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EEGKitError, match="no split_data files found"):
        load_recordings(tmp_path / "empty", "train")


def fake_targets(audio_path, names=("mel80", "mag")):
    """Stand-in for util.features: frame i of every band holds the value i (total 500 frames)."""
    frames = np.arange(500, dtype=np.float32)[:, None]
    return {name: np.repeat(frames, {"mel80": 80, "mag": 257}[name], axis=1) for name in names}


def test_stimulus_targets_offsets_cache_and_availability(tmp_path, monkeypatch):
    split_dir, _ = make_dataset(tmp_path, mel_short_by=0)
    audio_dir = tmp_path / "stimuli" / "eeg"
    (audio_dir / "nested").mkdir(parents=True)
    (audio_dir / "audiobook_2_2.wav").write_bytes(b"x")
    stimuli = stimuli_of(discover(split_dir))
    assert not stimulus_targets.audio_available(stimuli, audio_dir)
    assert stimulus_targets.missing_audio(stimuli, audio_dir) == ["podcast_22"]
    (audio_dir / "nested" / "podcast_22.npz.gz").write_bytes(b"x")
    assert stimulus_targets.audio_available(stimuli, audio_dir)
    assert not stimulus_targets.audio_available(stimuli, None)

    calls = []
    monkeypatch.setattr(stimulus_targets, "compute_targets",
                        lambda path, names: calls.append(path.name) or fake_targets(path, names))
    cache_dir = tmp_path / "cache"
    features = ("eeg", "mel", "mel80", "mag")
    recs = {split: load_recordings(split_dir, split, features=features, stimulus_audio_dir=audio_dir,
                                   cache_dir=cache_dir, normalize="none") for split in ("train", "val", "test")}
    assert sorted(calls) == ["audiobook_2_2.wav", "podcast_22.npz.gz"]  # computed once per stimulus
    assert (cache_dir / "podcast_22_-_mel80.npy").exists() and (cache_dir / "audiobook_2_2_-_mag.npy").exists()
    # val starts at len(train) = 400, test at 400 + 50 inside the stimulus
    assert recs["train"][0].window("mel80", 0, 2)[:, 0].tolist() == [0.0, 1.0]
    assert recs["val"][0].window("mel80", 0, 1)[0, 0] == 400.0
    assert recs["test"][0].window("mag", 3, 1)[0, 256] == 453.0
    assert recs["test"][0].n_samples == 50 and recs["test"][0].window("mel80", 0, 50).shape == (50, 80)
    # normalised with train-part statistics: train frames 0..399 have mean 199.5
    val_norm = load_recordings(split_dir, "val", features=features, stimulus_audio_dir=audio_dir,
                               cache_dir=cache_dir)
    expected = (400.0 - 199.5) / np.arange(400).std()
    assert val_norm[0].window("mel80", 0, 1)[0, 5] == pytest.approx(expected, rel=1e-4)
    assert len(calls) == 2  # cache reused


def test_stimulus_targets_missing_audio_is_an_error(tmp_path):
    split_dir, _ = make_dataset(tmp_path)
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    with pytest.raises(EEGKitError, match="no audio file for stimulus 'audiobook_2_2'"):
        load_recordings(split_dir, "train", features=("eeg", "mel80"), stimulus_audio_dir=audio_dir,
                        cache_dir=tmp_path / "cache")


def test_synthetic_dataset_with_audio_targets(task2_dataset, tmp_path):
    """End to end on the kit's synthetic dataset: mel80/mag from the real stimulus audio and util.features."""
    audio_dir = task2_dataset / "stimuli" / "eeg"
    split_dir = task2_dataset / "derivatives" / "split_data"
    assert stimulus_targets.audio_available(stimuli_of(discover(split_dir)), audio_dir)
    features = ("eeg", "envelope", "mel", "mel80", "mag")
    by_split = {split: load_recordings(task2_dataset, split, features=features, stimulus_audio_dir=audio_dir,
                                       cache_dir=tmp_path / "cache") for split in ("train", "val", "test")}
    groups = discover(split_dir)
    for split, recs in by_split.items():
        for rec in recs:
            eeg_rows = np.load(groups[rec.key]["eeg"], mmap_mode="r").shape[0]
            assert eeg_rows - 64 <= rec.n_samples <= eeg_rows
            assert rec.window("mel80", 0, 64).shape == (64, 80) and rec.window("mag", 0, 64).shape == (64, 257)
            assert np.isfinite(rec.window("mag", 0, rec.n_samples)).all()
    # the mel80 part of val continues where train's ended: frames agree with a direct computation
    from util import features as audio_features

    rec = by_split["val"][0]
    audio, fs = audio_features.load_audio(stimulus_targets.find_stimulus_audio(audio_dir)[rec.stimulus])
    full = audio_features.mel80(audio, fs)
    start = np.load(groups[("train", rec.subject, rec.stimulus)]["eeg"], mmap_mode="r").shape[0]
    mean, std = by_split["train"][[r.key[1:] for r in by_split["train"]].index(rec.key[1:])].stats["mel80"]
    np.testing.assert_allclose(rec.raw_window("mel80", 0, 10), full[start:start + 10], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.window("mel80", 0, 10), (full[start:start + 10] - mean) / std, rtol=1e-3, atol=1e-3)
