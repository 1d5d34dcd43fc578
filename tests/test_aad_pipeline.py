"""Stimulus-reconstruction AAD pipeline (speaker_extraction.experiments.aad) and the cocktail-party reader.

Fast: ridge on the session's tiny synthetic KUL data (2 subjects x 4 trials of 15 s), a hand-made
lagged-copy case, the linear model through the training engine for 1 epoch, the real cocktail-party
sample at a 32-Hz working rate (skipped when ../shared/data is absent), and bad inputs via the CLI.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io

REPO = Path(__file__).resolve().parents[1]
COCKTAIL = REPO.parent / "shared" / "data" / "cocktail_party_sample"


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "speaker_extraction.experiments.aad", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def cocktail() -> Path:
    if not COCKTAIL.is_dir():
        pytest.skip(f"cocktail-party sample not present at {COCKTAIL}")
    return COCKTAIL


# --------------------------------------------------------------------------- hand-made data
def _smooth_noise(rng, n: int, fs: int) -> np.ndarray:
    """Low-passed noise, like a speech envelope at fs (float64, (n,))."""
    import scipy.signal

    sos = scipy.signal.butter(4, 6.0, btype="lowpass", fs=fs, output="sos")
    return np.ascontiguousarray(scipy.signal.sosfiltfilt(sos, rng.standard_normal(n + 200))[100:-100])


def _lagged_copy_trials(n_trials: int = 4, seconds: float = 30.0, fs: int = 64, noise: float = 0.1, seed: int = 0):
    """EEG channel c = attended envelope delayed by DELAYS[c] samples + noise; the unattended talker is independent."""
    from speaker_extraction.experiments.aad import Trial

    rng = np.random.default_rng(seed)
    delays = (2, 5, 8)  # samples: 31, 78, 125 ms at 64 Hz, inside the 0-250 ms lags
    n = int(seconds * fs)
    trials = []
    for k in range(n_trials):
        attended = _smooth_noise(rng, n + 16, fs)
        unattended = _smooth_noise(rng, n + 16, fs)
        eeg = np.stack([attended[16 - d: 16 - d + n] for d in delays], axis=1)  # eeg(t + d) = env(t)
        eeg = eeg + noise * eeg.std() * rng.standard_normal(eeg.shape)
        trials.append(Trial("S1", k + 1, eeg.astype(np.float32), attended[16:16 + n], unattended[16:16 + n], fs, "hand"))
    return trials


def test_lagged_copy_recovers_envelope_and_lambda_ignores_held_out():
    from dataclasses import replace

    from speaker_extraction.experiments.aad import Lags, loto_folds, ridge_fold, window_rows
    from util.metrics import pearson_np

    trials = _lagged_copy_trials()
    lags = Lags.from_ms((0, 250), 64)
    assert (lags.lo, lags.hi, lags.n_taps) == (0, 16, 17)
    folds = loto_folds(trials)
    assert len(folds) == 4 and [f.test[0].trial for f in folds] == [1, 2, 3, 4]
    assert all(len(f.train) + len(f.val) == 3 and f.test[0] not in f.train + f.val for f in folds)
    fold = folds[0]
    predictions, info = ridge_fold(fold, lags)
    held_out = fold.test[0]
    recon = predictions[held_out.key]
    assert recon.shape == held_out.attended.shape  # the whole trial is reconstructed
    assert pearson_np(recon, held_out.attended) > 0.97
    assert abs(pearson_np(recon, held_out.unattended)) < 0.15
    rows = window_rows(held_out, recon, (1.0, 10.0, 30.0), "ridge")
    assert len(rows) == 30 + 3 + 1
    assert all(r["r_attended"] > r["r_unattended"] for r in rows if r["window_s"] != "1")

    # corrupting the held-out trial (EEG and both envelopes) leaves lambda and the inner CV untouched ...
    rng = np.random.default_rng(1)
    corrupted = replace(held_out, eeg=rng.standard_normal(held_out.eeg.shape).astype(np.float32),
                        attended=rng.standard_normal(held_out.attended.shape),
                        unattended=rng.standard_normal(held_out.unattended.shape))
    fold_corrupted = replace(fold, test=[corrupted])
    predictions_c, info_c = ridge_fold(fold_corrupted, lags)
    assert info_c["alpha"] == info["alpha"]
    assert info_c["inner_cv_scores"] == info["inner_cv_scores"]
    assert abs(pearson_np(predictions_c[held_out.key], corrupted.attended)) < 0.15  # ... but its score changes
    # ... while corrupting a TRAINING trial does change the inner CV scores
    train = fold.train[0]
    noisy = replace(train, eeg=(train.eeg + 3 * rng.standard_normal(train.eeg.shape)).astype(np.float32))
    _, info_t = ridge_fold(replace(fold, train=[noisy] + fold.train[1:]), lags)
    assert info_t["inner_cv_scores"] != info["inner_cv_scores"]


def test_inner_cv_equals_ridge_decoder_on_zscored_data():
    """The closed-form inner CV (covariance sums, z-scoring by scaling) = RidgeDecoder.select_alpha on z-scored data."""
    from speaker_extraction.experiments.aad import ALPHAS, Lags, _channel_stats, _RidgeCV
    from task2_regression.models.linear import RidgeDecoder

    trials = _lagged_copy_trials(n_trials=3, seconds=20.0, noise=2.0, seed=3)  # noisy: lambda matters
    lags = Lags.from_ms((0, 125), 64)
    cv = _RidgeCV(lags, ALPHAS)
    val, train = trials[0], trials[1:]
    fast = cv.score(cv.grid_weights(train), val)  # (n_alphas,)
    mean, std = _channel_stats(train)
    decoder = RidgeDecoder({"envelope": 1}, n_channels=3, n_taps=lags.n_taps)
    for t in train:
        decoder.partial_fit((t.eeg - mean) / std, t.attended[:, None])
    reference = decoder.select_alpha(list(ALPHAS), [((val.eeg - mean) / std, val.attended[:, None])])
    np.testing.assert_allclose(fast, [reference[a] for a in ALPHAS], atol=1e-6)
    assert np.ptp(fast) > 1e-3  # the grid is not flat (1000 x the tolerance), so the comparison means something


# --------------------------------------------------------------------------- synthetic KUL, ridge
def test_ridge_loto_on_synthetic_kul(kul_dataset, tmp_path):
    from speaker_extraction.experiments.aad import run_aad

    out = tmp_path / "aad"
    messages = []
    result = run_aad(kul_dataset, "ridge", out, windows="1,5,15,30", progress=False, say=messages.append)
    header, rows = _read_csv(out / "correlations.csv")
    assert header[:4] == ["subject", "window_s", "r_attended", "r_unattended"]
    assert header[4:] == ["trial", "model", "start_s"]
    # 2 subjects x 4 trials of 15 s: 15 + 3 + 1 windows each; 30 s does not fit and is said once
    assert len(rows) == 8 * (15 + 3 + 1)
    assert {r["window_s"] for r in rows} == {"1", "5", "15"}
    assert sum("windows 30 s are longer" in m for m in messages) == 1
    assert sorted({(r["subject"], r["trial"]) for r in rows}) == [(s, str(t)) for s in ("S1", "S2") for t in range(1, 5)]
    r_att = np.array([float(r["r_attended"]) for r in rows])
    r_unatt = np.array([float(r["r_unattended"]) for r in rows])
    assert r_att.mean() > r_unatt.mean() + 0.1
    report = json.loads((out / "report.json").read_text())
    for subject in ("S1", "S2"):
        assert report["subjects"][subject]["accuracy"]["15"] >= 0.75  # 4 windows; chance is 0.5
        assert report["subjects"][subject]["accuracy"]["1"] > report["subjects"][subject]["significance_threshold"]["1"]
    assert report["pipeline"]["model"] == "ridge" and len(report["pipeline"]["trials"]) == 8
    assert result["report"]["mean_accuracy"] == report["mean_accuracy"]
    assert (out / "report.png").stat().st_size > 1000
    assert (out / "COMMAND.txt").read_text().strip()
    _, trial_rows = _read_csv(out / "trials.csv")
    assert len(trial_rows) == 8 and all(float(t["alpha"]) > 0 for t in trial_rows)
    assert any("lambda" in m and "S2 trial 4" in m for m in messages)  # per-trial lines with the fold's lambda


def test_linear_model_through_engine(kul_dataset, tmp_path):
    out = tmp_path / "linear"
    proc = _cli("--data", str(kul_dataset), "--model", "linear", "--out", str(out), "--epochs", "1",
                "--windows", "1,5", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    header, rows = _read_csv(out / "correlations.csv")
    assert header[:4] == ["subject", "window_s", "r_attended", "r_unattended"]
    assert len(rows) == 8 * (15 + 3) and {r["model"] for r in rows} == {"linear"}
    assert all(np.isfinite(float(r["r_attended"])) for r in rows)
    assert sorted(p.name for p in out.iterdir()) == ["COMMAND.txt", "correlations.csv", "report.json", "report.png",
                                                     "trials.csv"]  # fold folders removed
    assert "1 epoch(s)" in proc.stdout and "S1 trial 1: r(attended)" in proc.stdout
    assert (out / "COMMAND.txt").read_text().startswith("python -m speaker_extraction.experiments.aad --data")


def test_engine_fold_layout(tmp_path, monkeypatch):
    """The fold's split_data folder: train/val recordings per trial, float32 time first; held-out trial absent."""
    from speaker_extraction.experiments.aad import engine_config, loto_folds
    from task2_regression.data import discover

    trials = _lagged_copy_trials(n_trials=4, seconds=20.0)
    fold = loto_folds(trials)[0]
    config = engine_config("linear", 3, fold.train)
    assert config["target"] == "envelope" and "targets" not in config  # target=envelope alone switches it
    assert config["model"]["n_channels"] == 3 and config["data"]["window_s"] == 20.0  # cut from 60 s to the trial
    from speaker_extraction.experiments import aad

    written = {}

    def fake_train(cfg, data_dir, out_dir, epochs=None, **_):  # capture the layout, skip the training
        written.update(discover(Path(data_dir) / "derivatives" / "split_data"))
        raise RuntimeError("stop after the layout")

    import task2_regression.train as engine

    monkeypatch.setattr(engine, "train", fake_train)
    with pytest.raises(RuntimeError, match="stop after the layout"):
        aad.engine_fold(fold, "linear", tmp_path / "fold")
    assert sorted(written) == [("train", "S1", "trial003"), ("train", "S1", "trial004"), ("val", "S1", "trial002")]
    eeg = np.load(written[("train", "S1", "trial003")]["eeg"])
    envelope = np.load(written[("train", "S1", "trial003")]["envelope"])
    assert eeg.dtype == np.float32 and eeg.shape == (20 * 64, 3) and envelope.shape == (20 * 64, 1)


# --------------------------------------------------------------------------- cocktail-party sample
def test_cocktail_reader_pairs_as_the_readme_says(cocktail):
    from speaker_extraction.cocktail import read_cocktail

    trials = read_cocktail(cocktail)
    assert [t.trial for t in trials] == [1, 2, 3, 4, 5]
    female = scipy.io.loadmat(cocktail / "F_env.mat")["stim1"]
    male = scipy.io.loadmat(cocktail / "M_env.mat")["stim1"]
    order = scipy.io.loadmat(cocktail / "competing_speaker_order.mat")["blk1_M_Order"]
    for t in trials:
        assert t.eeg.shape == (7680, 128) and t.eeg.dtype == np.float32 and t.fs == 128
        np.testing.assert_array_equal(t.attended, female[0, t.trial - 1][:, 0])
        np.testing.assert_array_equal(t.unattended, male[0, int(order[0, t.trial - 1]) - 1][:, 0])
    assert trials[2].unattended_ref == "M_env.mat stim1{36}"  # blk1_M_Order(3) = 36, 1-based


def test_ridge_loto_on_cocktail_sample(cocktail, tmp_path):
    from speaker_extraction.experiments.aad import run_aad

    out = tmp_path / "cocktail"
    run_aad(cocktail, "ridge", out, windows=(10, 30, 60), fs=32, progress=False, say=lambda m: None)
    header, rows = _read_csv(out / "correlations.csv")
    assert header[:4] == ["subject", "window_s", "r_attended", "r_unattended"]
    assert len(rows) == 5 * (6 + 2 + 1)
    report = json.loads((out / "report.json").read_text())
    entry = report["subjects"]["cocktail"]
    assert entry["n_windows"]["60"] == 5
    lo, hi = entry["ci95"]["60"]
    assert 0.0 <= lo < entry["accuracy"]["60"] <= hi <= 1.0
    _, trial_rows = _read_csv(out / "trials.csv")
    assert len(trial_rows) == 5
    assert np.mean([float(t["r_attended"]) for t in trial_rows]) > np.mean([float(t["r_unattended"]) for t in trial_rows])


# --------------------------------------------------------------------------- bad inputs (CLI)
def _fake_cocktail(folder: Path, channels: int = 64) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    cells = np.empty((1, 2), dtype=object)
    for k in range(2):
        cells[0, k] = rng.random((1280, 1))
    scipy.io.savemat(folder / "F_env.mat", {"stim1": cells})
    scipy.io.savemat(folder / "M_env.mat", {"stim1": cells})
    scipy.io.savemat(folder / "competing_speaker_order.mat", {"blk1_M_Order": np.array([[2, 1]], dtype=np.uint8)})
    for i in (1, 2):
        scipy.io.savemat(folder / f"trial_{i}.mat", {"eeg": rng.standard_normal((1280, channels)).astype(np.float32)})
    return folder


@pytest.mark.parametrize("case", ["missing_data", "unknown_model", "windows_x", "windows_zero", "windows_negative",
                                  "nonempty_out", "cocktail_channels", "band_reversed", "band_text", "lags_reversed",
                                  "fs_too_low", "epochs_with_ridge", "split_from_missing_run"])
def test_bad_inputs_exit_2_with_one_line(case, kul_dataset, tmp_path):
    out = tmp_path / "out"
    data = str(kul_dataset)
    args = ["--model", "ridge", "--out", str(out), "--no-progress"]
    expect = ""
    if case == "missing_data":
        data, expect = str(tmp_path / "nope"), "nope: data folder not found"
    elif case == "unknown_model":
        args[1], expect = "lasso", "--model"
    elif case == "windows_x":
        args += ["--windows", "1,x"]
        expect = "--windows 1,x: 'x' is not a number"
    elif case == "windows_zero":
        args += ["--windows", "0"]
        expect = "--windows 0"
    elif case == "windows_negative":
        args += ["--windows=-5"]
        expect = "--windows -5"
    elif case == "nonempty_out":
        out.mkdir()
        (out / "keep.txt").write_text("old")
        expect = "--overwrite"
    elif case == "cocktail_channels":
        data = str(_fake_cocktail(tmp_path / "fake"))
        expect = "trial_1.mat: 'eeg' must have 128 channels"
    elif case == "band_reversed":
        args += ["--band", "9,1"]
        expect = "--band 9,1: need 0 < LOW < HIGH Hz"
    elif case == "band_text":
        args += ["--band", "low,high"]
        expect = "--band low,high: expected two numbers LOW,HIGH"
    elif case == "lags_reversed":
        args += ["--lags-ms", "250,0"]
        expect = "--lags-ms 250,0: need 0 <= LOW <= HIGH"
    elif case == "fs_too_low":
        args += ["--fs", "4"]
        expect = "--fs 4: the working rate must be at least 8 Hz"
    elif case == "epochs_with_ridge":
        args += ["--epochs", "3"]
        expect = "--epochs: only for the trained models"
    elif case == "split_from_missing_run":
        args += ["--split-from-run", str(tmp_path / "no_run")]
        expect = "--split-from-run"
    proc = _cli("--data", data, *args)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], proc.stderr
    if case == "nonempty_out":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]
    else:
        assert not out.exists()


def test_split_from_run_uses_the_runs_held_out_trials(kul_dataset, tmp_path):
    """--split-from-run replays the trial split stored in a NeuroSpex run's checkpoint config."""
    import torch

    from speaker_extraction.experiments.aad import folds_from_run, load_trials, run_aad
    from speaker_extraction.data import KULCorpus, make_split

    run = tmp_path / "run"
    run.mkdir()
    config = {"model": {"type": "neurospex"}, "data": {"split": {"protocol": "trial", "val_trials": 1,
                                                                 "test_trials": 1, "seed": 3}}}
    torch.save({"config": config, "model": {}}, run / "best.pt")
    _, trials = load_trials(kul_dataset)
    folds, info = folds_from_run(run, kul_dataset, trials)
    expected = make_split(KULCorpus(kul_dataset, config["data"], progress=False))
    assert sorted(tuple(k) for k in info["test_trials"]) == sorted((f"S{s}", t) for s, t in expected["test"])
    assert len(folds) == 2  # one per subject (protocol trial)
    for fold in folds:
        (held_out,) = fold.test
        assert {t.subject for t in fold.train + fold.val} == {held_out.subject}
        assert sorted(t.trial for t in fold.train + fold.val + fold.test) == [1, 2, 3, 4]
    out = tmp_path / "aad"
    result = run_aad(kul_dataset, "ridge", out, windows=(5,), split_from_run=run, progress=False, say=lambda m: None)
    assert sorted((t["subject"], t["trial"]) for t in result["trials"]) == sorted(
        (f"S{s}", t) for s, t in expected["test"])


# --------------------------------------------------------------------------- reconstruction r and controls
def test_controls_on_lagged_copy_trials():
    """Ridge on lagged-copy EEG: r(attended) near 1, r(unattended) and all three controls near 0, p at its floor."""
    from speaker_extraction.experiments import aad

    trials = _lagged_copy_trials(n_trials=4, seconds=30.0)
    lags = aad.Lags.from_ms((0, 250), 64)
    donors = aad._mismatched_donors(trials)
    assert donors[("S1", 1)].trial == 2 and donors[("S1", 4)].trial == 1  # the next trial, cyclically
    blocks = {}
    for fold in aad.loto_folds(trials):
        extra = aad._control_eeg(fold, donors, seed=0)
        assert set(extra) == {f"noise|S1|{fold.test[0].trial}", f"mismatched|S1|{fold.test[0].trial}"}
        noise = extra[f"noise|S1|{fold.test[0].trial}"]
        np.testing.assert_allclose(noise.mean(axis=0), fold.test[0].eeg.mean(axis=0), atol=0.05 * noise.std())
        np.testing.assert_allclose(noise.std(axis=0), fold.test[0].eeg.std(axis=0), rtol=0.05)
        predictions, info = aad.ridge_fold(fold, lags, extra=extra)
        trial = fold.test[0]
        recon = predictions[trial.key]
        r_att = float(aad.pearson_np(recon, trial.attended))
        r_unatt = float(aad.pearson_np(recon, trial.unattended))
        blocks[trial.name] = aad._trial_controls(trial, recon, info["extra"], donors, 100, 0, r_att, r_unatt)
    for block in blocks.values():
        assert block["r_attended"] > 0.9 and abs(block["r_unattended"]) < 0.2
        controls = block["controls"]
        assert abs(controls["noise_eeg"]["score"]) < 0.15 and abs(controls["mismatched_eeg"]["score"]) < 0.2
        assert controls["circular_shift"]["p95"] < 0.3 and controls["circular_shift"]["p_value"] == 1 / 101
        assert block["score_above_noise"] == pytest.approx(block["r_attended"] - controls["noise_eeg"]["score"])
        assert block["warnings"] == []
    overall = aad._overall_controls(blocks, 100, [])
    rec = overall["reconstruction"]
    assert rec["n_trials"] == 4
    assert rec["r_attended"] == pytest.approx(np.mean([b["r_attended"] for b in blocks.values()]))
    assert rec["r_unattended"] == pytest.approx(np.mean([b["r_unattended"] for b in blocks.values()]))
    assert overall["controls"]["noise_eeg"]["score"] == pytest.approx(
        np.mean([b["controls"]["noise_eeg"]["score"] for b in blocks.values()]))
    assert set(overall["controls"]) == {"noise_eeg", "circular_shift", "mismatched_eeg"}
    assert rec["significance"]["correction"] == "holm" and len(rec["significance"]["significant"]) == 4
    json.dumps(overall)  # no numpy arrays left (the null draws stay out of the report)
    text = aad.format_reconstruction(overall)
    assert "mean over trials" in text and "noise EEG" in text and "mismatched" in text


def test_constant_reconstruction_is_flagged_by_the_noise_control():
    """A reconstruction that ignores the EEG (the same pattern on any input) scores the same on noise EEG."""
    from speaker_extraction.experiments import aad

    trials = _lagged_copy_trials(n_trials=3, seconds=30.0)
    donors = aad._mismatched_donors(trials)
    trial = trials[0]
    pattern = trial.attended + 0.5 * np.random.default_rng(1).standard_normal(len(trial.attended))  # "learned" fixed
    extra = {"noise|S1|1": pattern, "mismatched|S1|1": pattern}
    r_att = float(aad.pearson_np(pattern, trial.attended))
    block = aad._trial_controls(trial, pattern, extra, donors, 100, 0, r_att, 0.0)
    assert block["controls"]["noise_eeg"]["score"] == pytest.approx(r_att)
    assert block["controls"]["mismatched_eeg"]["score"] == pytest.approx(r_att)
    assert block["score_above_noise"] == pytest.approx(0.0)
    assert any("EEG-independent" in w for w in block["warnings"])


def test_ridge_on_cocktail_sample_reports_both_envelopes_and_controls(cocktail, tmp_path):
    from speaker_extraction.experiments.aad import run_aad

    out = tmp_path / "cocktail_controls"
    lines: list[str] = []
    result = run_aad(cocktail, "ridge", out, windows=(60,), fs=32, progress=False, say=lines.append, n_shifts=50)
    report = json.loads((out / "report.json").read_text())
    rec = report["reconstruction"]
    assert sorted(rec["per_trial"]) == [f"cocktail trial {k}" for k in range(1, 6)]
    for block in rec["per_trial"].values():
        assert -1 < block["r_attended"] < 1 and -1 < block["r_unattended"] < 1
        assert set(block["controls"]) == {"noise_eeg", "circular_shift", "mismatched_eeg"}
    trial_rows = {f"cocktail trial {t['trial']}": t for t in result["trials"]}
    for name, block in rec["per_trial"].items():
        assert block["r_attended"] == pytest.approx(trial_rows[name]["r_attended"])
    assert report["controls"] == rec["controls"] and report["score_above_noise"] == rec["score_above_noise"]
    # real EEG: the attended talker is reconstructed above the unattended one and above the shifted null
    assert rec["r_attended"] > rec["r_unattended"]
    assert rec["r_attended"] > rec["controls"]["circular_shift"]["p95"]
    assert any("mean over trials" in line for line in lines)
