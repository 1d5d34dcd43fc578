"""Golden tests for the Task 2 scorer (evaluation/task2.py)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr

from evaluation.task2 import load_labels, load_predictions, main, pearson_per_band, score
from util.errors import EEGKitError

REPO = Path(__file__).resolve().parents[1]


def _labels(seed: int, subjects: dict[str, int], n_frames: int = 1920) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        subject: {f"{subject}_{i}": rng.standard_normal((n_frames, 10)) for i in range(n_segments)}
        for subject, n_segments in subjects.items()
    }


def test_labels_score_exactly_one():
    labels = _labels(0, {"sub-001": 3, "sub-002": 2})
    predictions = {sid: mel for per_subject in labels.values() for sid, mel in per_subject.items()}
    report = score(predictions, labels)
    assert report["score"] == pytest.approx(1.0, abs=1e-12)
    assert report["std_over_subjects"] == pytest.approx(0.0, abs=1e-12)
    assert report["per_band"] == pytest.approx([1.0] * 10, abs=1e-12)
    assert report["n_segments"] == 5 and report["n_missing"] == 0 and report["n_subjects"] == 2


def test_hand_computed_r_and_constant_prediction():
    label = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    pred = np.array([[1.0, 7.0], [3.0, 7.0], [2.0, 7.0], [4.0, 7.0]])
    # band 0: deviations (-1.5,-.5,.5,1.5) and (-1.5,.5,-.5,1.5): cov 4, variances 5 -> r = 0.8
    # band 1: constant prediction -> r = 0 by our convention (scipy would give NaN)
    np.testing.assert_allclose(pearson_per_band(pred, label), [0.8, 0.0], atol=1e-12)
    report = score({"a": pred}, {"sub-001": {"a": label}})
    assert report["score"] == pytest.approx(0.4, abs=1e-12)
    assert report["per_band"] == pytest.approx([0.8, 0.0], abs=1e-12)


def test_matches_scipy_pearsonr_on_random_data():
    rng = np.random.default_rng(3)
    label = rng.standard_normal((1920, 10))
    pred = 0.3 * label + rng.standard_normal((1920, 10))
    expected = np.mean([pearsonr(pred[:, b], label[:, b])[0] for b in range(10)])
    assert score({"x": pred}, {"sub-003": {"x": label}})["score"] == pytest.approx(expected, abs=1e-12)


def test_missing_segment_scores_zero():
    labels = _labels(1, {"sub-001": 2, "sub-002": 2})
    predictions = {sid: mel for per_subject in labels.values() for sid, mel in per_subject.items()}
    del predictions["sub-002_1"]
    predictions["sub-999_0"] = np.ones((1920, 10))  # an unknown id is ignored
    report = score(predictions, labels)
    assert report["per_subject"] == pytest.approx({"sub-001": 1.0, "sub-002": 0.5})
    assert report["score"] == pytest.approx(0.75)
    assert report["std_over_subjects"] == pytest.approx(0.25)
    assert report["per_band"] == pytest.approx([0.75] * 10)
    assert report["n_missing"] == 1 and report["missing_ids"] == ["sub-002_1"] and report["n_extra"] == 1


def test_short_prediction_zero_padded_long_truncated():
    rng = np.random.default_rng(2)
    label = rng.standard_normal((50, 10))
    short = label[:30] + 0.1 * rng.standard_normal((30, 10))
    padded = np.concatenate([short, np.zeros((20, 10))])
    expected = np.mean([pearsonr(padded[:, b], label[:, b])[0] for b in range(10)])
    assert score({"s": short}, {"sub-001": {"s": label}})["score"] == pytest.approx(expected, abs=1e-12)
    long = np.concatenate([label, 1e3 * rng.standard_normal((40, 10))])
    assert score({"s": long}, {"sub-001": {"s": label}})["score"] == pytest.approx(1.0, abs=1e-12)


def test_shuffled_assignment_scores_about_zero():
    labels = _labels(4, {"sub-001": 10, "sub-002": 10})
    ids = [sid for per_subject in labels.values() for sid in per_subject]
    mels = [labels[sid.split("_")[0]][sid] for sid in ids]
    rotated = {sid: mels[(i + 1) % len(mels)] for i, sid in enumerate(ids)}
    report = score(rotated, labels)
    assert abs(report["score"]) < 0.01
    assert max(abs(v) for v in report["per_band"]) < 0.02


def test_bad_predictions_raise_one_line_errors():
    labels = {"sub-001": {"a": np.ones((4, 10)) * np.arange(4)[:, None]}}
    nan = np.zeros((4, 10))
    nan[2, 3] = np.nan
    with pytest.raises(EEGKitError, match=r"prediction a: contains NaN or Inf \(first: NaN at index \(2, 3\)"):
        score({"a": nan}, labels)
    with pytest.raises(EEGKitError, match="prediction a: values must be JSON numbers, found strings"):
        score({"a": [["x"] * 10] * 4}, labels)
    with pytest.raises(EEGKitError, match="expected 10 bands"):
        score({"a": np.zeros((10, 4))}, labels)


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_cli_folder_and_zip_with_report_and_plot(tmp_path, capsys):
    labels = _labels(5, {"sub-001": 2, "sub-002": 1}, n_frames=64)
    (tmp_path / "labels").mkdir()
    for subject, segments in labels.items():
        _write(tmp_path / "labels" / f"{subject}.json", {k: v.tolist() for k, v in segments.items()})
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    _write(pred_dir / "sub-001.json", {k: v.tolist() for k, v in labels["sub-001"].items()})
    zip_path = tmp_path / "sub.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        for subject, segments in labels.items():
            archive.writestr(f"{subject}.json", json.dumps({k: v.tolist() for k, v in segments.items()}))

    assert main(["--predictions", str(pred_dir), "--labels", str(tmp_path / "labels"),
                 "--out", str(tmp_path / "r1.json"), "--plot", str(tmp_path / "r1.png")]) == 0
    report = json.loads((tmp_path / "r1.json").read_text())
    assert report["score"] == pytest.approx(0.5) and report["n_missing"] == 1  # sub-002 missing
    assert (tmp_path / "r1.png").read_bytes()[:4] == b"\x89PNG"
    assert "sub-002" in capsys.readouterr().out

    assert main(["--predictions", str(zip_path), "--labels", str(tmp_path / "labels"), "--out",
                 str(tmp_path / "r2.json")]) == 0
    assert json.loads((tmp_path / "r2.json").read_text())["score"] == pytest.approx(1.0)
    assert sorted(load_predictions(zip_path)) == sorted(k for s in labels.values() for k in s)


def test_2023_envelope_labels(tmp_path):
    rng = np.random.default_rng(6)
    envelope = rng.standard_normal((3840, 1))
    _write(tmp_path / "sub-002_labels.json", {"sub-002_0": [envelope.tolist(), "podcast_1"]})
    labels = load_labels(tmp_path)
    assert list(labels) == ["sub-002"] and labels["sub-002"]["sub-002_0"].shape == (3840, 1)
    report = score({"sub-002_0": envelope[:, 0] * 2 + 1}, labels)  # (time,) prediction accepted
    assert report["score"] == pytest.approx(1.0) and len(report["per_band"]) == 1


def test_file_errors_name_the_file(tmp_path):
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    _write(labels_dir / "sub-001.json", {"a": np.ones((8, 10)).tolist()})
    with pytest.raises(EEGKitError, match="nope: predictions folder or zip not found"):
        main(["--predictions", str(tmp_path / "nope"), "--labels", str(labels_dir)])
    with pytest.raises(EEGKitError, match="missing: labels folder not found"):
        main(["--predictions", str(labels_dir), "--labels", str(tmp_path / "missing")])
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    (pred_dir / "bad.json").write_text("{not json")
    with pytest.raises(EEGKitError, match=r"bad\.json: invalid JSON"):
        main(["--predictions", str(pred_dir), "--labels", str(labels_dir)])
    (pred_dir / "bad.json").write_text('{"a": [[NaN, 1]]}')
    with pytest.raises(EEGKitError, match=r"bad\.json: segment a: contains NaN or Inf"):
        main(["--predictions", str(pred_dir), "--labels", str(labels_dir)])
    (pred_dir / "bad.json").write_text('{"a": [["x", "y"]]}')
    with pytest.raises(EEGKitError, match=r"bad\.json: segment a: values must be JSON numbers, found strings"):
        main(["--predictions", str(pred_dir), "--labels", str(labels_dir)])


def test_cli_exit_status_and_single_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "evaluation.task2", "--predictions", str(tmp_path / "x"), "--labels", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path}: no .json label files in this folder"]
    assert not list(tmp_path.iterdir())


def test_default_shifts_let_holm_reach_significance_over_18_subjects(tmp_path, capsys):
    """18 subjects scored with the defaults: the scorer picks enough shifts (ceil(20 x 18 / 0.05) = 7200), the
    16 subjects whose predictions follow their labels are Holm-significant, the 2 pure-noise ones are not, and
    the report states the count. With the old fixed 100 shifts Holm over 18 subjects could not reach 0.05."""
    rng = np.random.default_rng(11)
    subjects = [f"sub-{i:03d}" for i in range(1, 19)]
    labels = _labels(12, {s: 2 for s in subjects}, n_frames=640)
    (tmp_path / "labels").mkdir()
    (tmp_path / "pred").mkdir()
    for index, subject in enumerate(subjects):
        segments = labels[subject]
        _write(tmp_path / "labels" / f"{subject}.json", {k: v.tolist() for k, v in segments.items()})
        noise_only = index >= 16
        preds = {k: (rng.standard_normal(v.shape) if noise_only else v + 2.0 * rng.standard_normal(v.shape)).tolist()
                 for k, v in segments.items()}
        _write(tmp_path / "pred" / f"{subject}.json", preds)
    assert main(["--predictions", str(tmp_path / "pred"), "--labels", str(tmp_path / "labels"),
                 "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_shifts"] == 7200
    assert "chosen by the scorer" in report["shifts_rule"] and "18 subjects" in report["shifts_rule"]
    assert report["significance"]["significant"] == subjects[:16]
    assert not any("cannot reach" in w for w in report["warnings"])
    assert "7200 circular shifts per subject, chosen by the scorer" in capsys.readouterr().out

    assert main(["--predictions", str(tmp_path / "pred"), "--labels", str(tmp_path / "labels"),
                 "--out", str(tmp_path / "r100.json"), "--n-shifts", "100"]) == 0
    fixed = json.loads((tmp_path / "r100.json").read_text())
    assert fixed["significance"]["significant"] == [] and "set by --n-shifts" in fixed["shifts_rule"]
    assert any("cannot reach" in w for w in fixed["warnings"])
