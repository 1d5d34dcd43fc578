"""Task 2 protocols: held-out subjects (--holdout-subjects + evaluate --heldout), the envelope path with
one override (train -> predict -> submit -> score), and per-subject models (--per-subject).

All on the session's tiny synthetic dataset (3 training subjects, 2 test subjects, -10 dB) with the
closed-form ridge (no gradient descent) or one tiny epoch of the linear model.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RIDGE = str(REPO / "task2_regression" / "configs" / "ridge.yaml")
LINEAR = str(REPO / "task2_regression" / "configs" / "linear.yaml")


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "submit.py"] if module == "submit" else [sys.executable, "-m", module]
    return subprocess.run(command + list(args), cwd=REPO, capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess, expect: str) -> None:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], proc.stderr


# --------------------------------------------------------------------------- held-out subjects
@pytest.fixture(scope="module")
def heldout_run(task2_dataset, tmp_path_factory) -> Path:
    from task2_regression.train import main

    run = tmp_path_factory.mktemp("heldout") / "ridge"
    assert main(["--config", RIDGE, "--data", str(task2_dataset), "--out", str(run), "--holdout-subjects", "1"]) == 0
    return run


def test_choose_holdout_names_and_seeded_count():
    from task2_regression.train import choose_holdout
    from util.errors import EEGKitError

    subjects = ["sub-001", "sub-002", "sub-003", "sub-004", "sub-005"]
    assert choose_holdout("sub-005,sub-002", subjects, 0) == ["sub-002", "sub-005"]
    expected = sorted(np.random.default_rng(7).choice(subjects, size=2, replace=False).tolist())
    assert choose_holdout("2", subjects, 7) == expected == choose_holdout("2", subjects, 7)
    picks = {tuple(choose_holdout("2", subjects, seed)) for seed in range(20)}
    assert len(picks) > 1  # the seed chooses
    with pytest.raises(EEGKitError, match="need 1 to 4 of the 5"):
        choose_holdout("5", subjects, 0)
    with pytest.raises(EEGKitError, match="sub-009 not among the training subjects"):
        choose_holdout("sub-001,sub-009", subjects, 0)


def test_holdout_subjects_stay_out_of_train_and_val(task2_dataset, heldout_run):
    from task2_regression.train import choose_holdout, load_split
    from util.training import load_checkpoint

    config = yaml.safe_load((heldout_run / "config.yaml").read_text())
    held = config["data"]["holdout_subjects"]
    assert held == choose_holdout("1", ["sub-001", "sub-002", "sub-003"], 0)
    assert load_checkpoint(heldout_run / "best.pt")["config"]["data"]["holdout_subjects"] == held
    for split in ("train", "val"):
        subjects = {r.subject for r in load_split(config, task2_dataset, split)}
        assert subjects == {"sub-001", "sub-002", "sub-003"} - set(held)


def test_heldout_evaluation_equals_the_test_set_path(task2_dataset, heldout_run, tmp_path):
    """evaluate --heldout at 30 s = predict.py on a test set cut from the same recordings + the official scorer."""
    from evaluation.task2 import score
    from task2_regression.data import whole_recordings
    from task2_regression.evaluate import evaluate_heldout
    from task2_regression.predict import predict_test_set

    report = evaluate_heldout(heldout_run, task2_dataset, 30.0, (5, 10, 20, 30), n_shifts=20)
    held = report["heldout_subjects"]
    # the same segments as a challenge test set: mapping + npz of raw EEG, labels = raw mel
    test_dir = tmp_path / "test_set"
    labels: dict = {}
    eeg: dict = {}
    for subject, stimulus, arrays in whole_recordings(task2_dataset, held, ("eeg", "mel")):
        for k in range(len(arrays["eeg"]) // 1920):
            segment_id = f"{subject}_{stimulus}_{k}"
            labels.setdefault(subject, {})[segment_id] = arrays["mel"][k * 1920:(k + 1) * 1920]
            eeg.setdefault(subject, {})[segment_id] = arrays["eeg"][k * 1920:(k + 1) * 1920]  # raw (1920, 64)
    (test_dir / "preprocessed_eeg").mkdir(parents=True)
    for subject, segments in eeg.items():
        np.savez(test_dir / "preprocessed_eeg" / f"{subject}_eeg.npz", **{f"e_{sid}": x for sid, x in segments.items()})
        (test_dir / f"{subject}_mapping.json").write_text(json.dumps({sid: {"eeg": f"e_{sid}"} for sid in segments}))
    predictions = predict_test_set(heldout_run, test_dir, progress=False)
    official = score({sid: p for subject in predictions.values() for sid, p in subject.items()}, labels)
    assert report["score"] == pytest.approx(official["score"], abs=1e-6)
    assert report["per_subject"] == pytest.approx(official["per_subject"], abs=1e-6)
    assert report["n_segments"] == official["n_segments"] > 0
    # the controls block and the curve
    assert set(report["controls"]) == {"noise_eeg", "circular_shift", "mismatched_eeg"}
    assert report["score_above_noise"] == pytest.approx(report["score"] - report["controls"]["noise_eeg"]["score"])
    assert list(report["curve"]) == ["5", "10", "20", "30"]
    assert report["curve"]["30"]["score"] == pytest.approx(report["score"])
    assert report["curve"]["5"]["n_segments"] > 5 * report["curve"]["30"]["n_segments"]
    assert report["score"] > report["controls"]["circular_shift"]["p95"]  # ridge decodes the unseen subject


def test_heldout_cli_writes_json_and_png(task2_dataset, heldout_run, tmp_path):
    out, png = tmp_path / "heldout.json", tmp_path / "curve.png"
    proc = _cli("task2_regression.evaluate", "--heldout", "--run", str(heldout_run), "--data", str(task2_dataset),
                "--n-shifts", "20", "--no-costly-controls", "--out", str(out), "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["mode"] == "heldout_subjects" and report["controls"]["noise_eeg"]["score"] is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "score vs segment length" in proc.stdout and "circular shift" in proc.stdout


def test_heldout_bad_inputs(task2_dataset, tmp_path):
    from task2_regression.train import main

    run = tmp_path / "plain"
    assert main(["--config", RIDGE, "--data", str(task2_dataset), "--out", str(run)]) == 0
    _one_error_line(_cli("task2_regression.evaluate", "--heldout", "--run", str(run), "--data", str(task2_dataset)),
                    "the run has no held-out subjects")
    for spec, expect in (("3", "--holdout-subjects 3: need 1 to 2 of the 3"),
                         ("sub-042", "sub-042 not among the training subjects")):
        out = tmp_path / f"refused_{spec}"
        _one_error_line(_cli("task2_regression.train", "--config", RIDGE, "--data", str(task2_dataset), "--out", str(out),
                             "--holdout-subjects", spec), expect)
        assert not out.exists()


# --------------------------------------------------------------------------- the envelope path
def test_envelope_path_with_one_override(task2_dataset, tmp_path):
    """train target=envelope (nothing else) -> predict -> submit (flat 1920 lists) -> official score."""
    from evaluation.task2 import load_labels, load_predictions, score

    run, pred, subs = tmp_path / "run", tmp_path / "pred", tmp_path / "subs"
    test_set = task2_dataset / "test_set" / "TASK2_regression"
    proc = _cli("task2_regression.train", "--config", RIDGE, "--data", str(task2_dataset), "--out", str(run),
                "target=envelope")
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["target"] == "envelope" and config["targets"] == ["envelope"]
    assert _cli("task2_regression.predict", "--run", str(run), "--test-set", str(test_set), "--out",
                str(pred)).returncode == 0
    first = json.loads(next(pred.glob("*.json")).read_text())
    assert np.asarray(next(iter(first.values()))).shape == (1920, 1)
    proc = _cli("submit", "--task", "2", "--predictions", str(pred), "--test-set", str(test_set), "--group", "env",
                "--out", str(subs))
    assert proc.returncode == 0, proc.stderr
    assert "envelope" in proc.stdout
    zipped = subs / "task_2_group_env_submission_1.zip"
    with zipfile.ZipFile(zipped) as archive:
        content = json.loads(archive.read(archive.namelist()[0]))
    value = next(iter(content.values()))
    assert isinstance(value[0], float) and len(value) == 1920  # the flat envelope layout
    labels_dir = task2_dataset / "test_set" / "labels_envelope"
    raw = json.loads(next(labels_dir.glob("*.json")).read_text())
    label = next(iter(raw.values()))
    assert len(label) == 2 and isinstance(label[1], str) and np.asarray(label[0]).shape == (1920, 1)  # 2023 format
    proc = _cli("evaluation.task2", "--predictions", str(zipped), "--labels", str(labels_dir), "--out",
                str(tmp_path / "score.json"))
    assert proc.returncode == 0, proc.stderr
    reported = json.loads((tmp_path / "score.json").read_text())
    direct = score(load_predictions(pred), load_labels(labels_dir))
    assert reported["score"] == pytest.approx(direct["score"]) and reported["n_missing"] == 0
    assert len(reported["per_band"]) == 1 and reported["score"] > 0.1


def test_target_rules_and_cat_wavenet_single_stage_warning(task2_dataset):
    from task2_regression.train import resolve_config
    from util import config as config_util
    from util.errors import EEGKitError

    configs = REPO / "task2_regression" / "configs"
    for name in ("linear", "ridge", "vlaai_small", "dprnn_small"):
        cfg = resolve_config(config_util.load_config(configs / f"{name}.yaml", ["target=envelope"]), task2_dataset,
                             say=lambda m: None)
        assert cfg["targets"] == ["envelope"], name
    messages: list[str] = []
    cat = config_util.load_config(configs / "cat_wavenet_small.yaml", ["target=envelope"])
    cfg = resolve_config(cat, task2_dataset, say=messages.append)
    assert cfg["target"] == "envelope" and cfg["targets"][:2] == ["envelope", "mel"]
    assert not any("single-stage" in m for m in messages)
    messages.clear()
    one = config_util.load_config(configs / "cat_wavenet_small.yaml", ["target=envelope", "targets=[envelope]"])
    resolve_config(one, task2_dataset, say=messages.append)
    assert any("single-stage WaveNet with no cross-attention" in m and "at least two stages" in m for m in messages)
    with pytest.raises(EEGKitError, match=r"'mel' is not in targets \['envelope'\].*targets=\[mel, envelope\]"):
        resolve_config(config_util.load_config(configs / "cat_wavenet_small.yaml", ["targets=[envelope]"]),
                       task2_dataset, say=lambda m: None)


def test_submit_envelope_shapes(tmp_path):
    from submit import main
    from util.errors import EEGKitError

    test_set = tmp_path / "test_set"
    test_set.mkdir()
    (test_set / "sub-001_mapping.json").write_text(json.dumps({"sub-001_0": {"eeg": "a"}, "sub-001_1": {"eeg": "b"}}))
    rng = np.random.default_rng(0)
    flat, column = rng.standard_normal(1920).round(4), rng.standard_normal((1920, 1)).round(4)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "sub-001.json").write_text(json.dumps({"sub-001_0": flat.tolist(), "sub-001_1": column.tolist()}))
    assert main(["--task", "2", "--predictions", str(pred), "--test-set", str(test_set), "--group", "g",
                 "--out", str(tmp_path / "out")]) == 0
    with zipfile.ZipFile(tmp_path / "out" / "task_2_group_g_submission_1.zip") as archive:
        written = json.loads(archive.read("sub-001.json"))
    assert written == {"sub-001_0": flat.tolist(), "sub-001_1": column[:, 0].tolist()}
    # a mel prediction among envelopes, and an envelope under --target mel, are refused; nothing written
    (pred / "sub-001.json").write_text(json.dumps({"sub-001_0": flat.tolist(),
                                                   "sub-001_1": rng.standard_normal((1920, 10)).tolist()}))
    with pytest.raises(EEGKitError, match="1 problem"):
        main(["--task", "2", "--predictions", str(pred), "--test-set", str(test_set), "--group", "h",
              "--out", str(tmp_path / "out")])
    (pred / "sub-001.json").write_text(json.dumps({"sub-001_0": flat.tolist(), "sub-001_1": flat.tolist()}))
    with pytest.raises(EEGKitError, match="2 problem"):
        main(["--task", "2", "--predictions", str(pred), "--test-set", str(test_set), "--group", "h",
              "--target", "mel", "--out", str(tmp_path / "out")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["task_2_group_g_submission_1.zip"]


# --------------------------------------------------------------------------- per-subject models
@pytest.fixture(scope="module")
def per_subject_run(task2_dataset, tmp_path_factory) -> Path:
    from task2_regression.train import main

    run = tmp_path_factory.mktemp("per_subject") / "ridge"
    assert main(["--config", RIDGE, "--data", str(task2_dataset), "--out", str(run), "--per-subject"]) == 0
    return run


def _within_subject_test_set(task2_dataset, folder: Path, subjects) -> Path:
    """A challenge-layout test set whose subjects are training subjects (their split_data test parts)."""
    from task2_regression.data import load_recordings

    (folder / "preprocessed_eeg").mkdir(parents=True)
    for subject in subjects:
        recs = load_recordings(task2_dataset, "test", ("eeg",), normalize="none", subjects=[subject])
        segments = {f"{subject}_{k}": r.array("eeg")[:320] for k, r in enumerate(recs)}  # 5-s segments
        np.savez(folder / "preprocessed_eeg" / f"{subject}_eeg.npz", **segments)
        (folder / f"{subject}_mapping.json").write_text(json.dumps({sid: {"eeg": sid} for sid in segments}))
    return folder


def test_per_subject_runs_and_predict_uses_each_subjects_model(task2_dataset, per_subject_run, tmp_path):
    from task2_regression.predict import load_run_model, predict_segments, predict_test_set, read_test_subject
    from util.training import load_checkpoint

    index = json.loads((per_subject_run / "per_subject.json").read_text())
    assert index["subjects"] == {s: s for s in ("sub-001", "sub-002", "sub-003")}
    for subject in index["subjects"]:
        assert load_checkpoint(per_subject_run / subject / "best.pt")["config"]["data"]["subjects"] == [subject]
    test_set = _within_subject_test_set(task2_dataset, tmp_path / "ts", ["sub-001", "sub-002"])
    predicted = predict_test_set(per_subject_run, test_set, progress=False)
    for subject in ("sub-001", "sub-002"):
        ids, segments = read_test_subject(test_set / f"{subject}_mapping.json")
        own = predict_segments(load_run_model(per_subject_run / subject)[0], "mel", segments)
        other = predict_segments(load_run_model(per_subject_run / "sub-003")[0], "mel", segments)
        for sid, p_own, p_other in zip(ids, own, other):
            np.testing.assert_allclose(predicted[subject][sid], p_own, rtol=1e-6)
            assert not np.allclose(predicted[subject][sid], p_other)
    # test subjects without their own model: refused, or the mean of all subject models
    unseen_set = task2_dataset / "test_set" / "TASK2_regression"
    _one_error_line(_cli("task2_regression.predict", "--run", str(per_subject_run), "--test-set", str(unseen_set),
                         "--out", str(tmp_path / "p")), "no per-subject model for test subject(s) sub-101, sub-102")
    assert not (tmp_path / "p").exists()
    averaged = predict_test_set(per_subject_run, unseen_set, progress=False, unseen="average")
    assert sorted(averaged) == ["sub-101", "sub-102"]


def test_within_subject_evaluation_of_the_parent_folder(task2_dataset, per_subject_run):
    from task2_regression.evaluate import evaluate_within_subject

    combined = evaluate_within_subject(per_subject_run, task2_dataset, segment_s=2.0, progress=False,
                                       costly_controls=False, n_shifts=20)
    assert sorted(combined["per_subject"]) == ["sub-001", "sub-002", "sub-003"]
    for subject in combined["per_subject"]:
        alone = evaluate_within_subject(per_subject_run / subject, task2_dataset, segment_s=2.0, progress=False,
                                        costly_controls=False, n_shifts=20)
        assert combined["per_subject"][subject] == pytest.approx(alone["per_subject"][subject], abs=1e-9)
    assert combined["score"] == pytest.approx(np.mean(list(combined["per_subject"].values())))
    assert set(combined["controls"]) == {"noise_eeg", "circular_shift", "mismatched_eeg"}


def test_per_subject_linear(task2_dataset, tmp_path):
    from task2_regression.train import main

    run = tmp_path / "linear"
    assert main(["--config", LINEAR, "--data", str(task2_dataset), "--out", str(run), "--per-subject", "--epochs", "1",
                 "data.window_s=20", "data.hop_s=20", "data.val_window_s=10"]) == 0
    index = json.loads((run / "per_subject.json").read_text())
    assert sorted(index["subjects"]) == ["sub-001", "sub-002", "sub-003"]
    assert all((run / s / "best.pt").is_file() and (run / s / "log.csv").is_file() for s in index["subjects"])
