"""Real-EEG check on the SparrKULee excerpt: ridge envelope decoding beats a circular-shift null.

Skips cleanly when ../shared/data/sparrkulee_excerpt is absent (a fresh clone).
The full benchmark (alpha selection, VLAAI) is ``python -m benchmarks.task2_excerpt``.
"""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.task2_excerpt import DEFAULT_DIR, circular_null, load_excerpt, ridge_fit_predict, split_halves
from util.metrics import pearson_np


@pytest.fixture(scope="module")
def excerpt():
    if not DEFAULT_DIR.is_dir():
        pytest.skip(f"SparrKULee excerpt not found at {DEFAULT_DIR}")
    return load_excerpt(DEFAULT_DIR)


def test_excerpt_layout(excerpt):
    assert sorted(excerpt) == ["sub-027", "sub-031"]
    for eeg, envelope in excerpt.values():
        assert eeg.shape == (7642, 64) and envelope.shape == (7642, 1)


def test_split_halves_uses_train_statistics_only(excerpt):
    eeg, envelope = excerpt["sub-031"]
    eeg_train, env_train, eeg_test, env_test = split_halves(eeg, envelope)
    np.testing.assert_allclose(eeg_train.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(eeg_train.std(axis=0), 1.0, atol=1e-9)
    half = len(eeg) // 2
    expected = (eeg[half:] - eeg[:half].mean(axis=0)) / eeg[:half].std(axis=0)
    np.testing.assert_allclose(eeg_test, expected)


def test_ridge_reconstructs_real_envelope_above_null(excerpt):
    # alpha fixed a priori (1.0 x mean eigenvalue) to keep the test fast; the benchmark selects it
    for subject, (eeg, envelope) in excerpt.items():
        eeg_train, env_train, eeg_test, env_test = split_halves(eeg, envelope)
        prediction, target, _ = ridge_fit_predict(eeg_train, env_train, eeg_test, env_test, alphas=(1.0,))
        r = float(pearson_np(prediction[:, 0], target[:, 0]))
        null = circular_null(prediction, target, n_shifts=100, seed=0)
        assert r > 0.1, f"{subject}: ridge r={r:.3f}"
        assert abs(null.mean()) < 0.05, f"{subject}: null mean {null.mean():.3f}"
        assert r > np.percentile(null, 95), f"{subject}: r={r:.3f} inside the null"


def test_benchmark_reports_ridge_with_its_three_controls(excerpt):
    """The benchmark's report: real EEG beats noise EEG, the null and the mismatched (other-half) EEG."""
    from benchmarks.task2_excerpt import format_run, run

    result = run(DEFAULT_DIR, vlaai_steps=0, n_shifts=100, seed=0, alphas=(1.0,))  # alpha fixed: fast
    report = result["models"]["ridge"]
    assert set(report["controls"]) == {"noise_eeg", "circular_shift", "mismatched_eeg"}
    for subject, block in report["per_subject_controls"].items():
        score = report["per_subject"][subject]
        assert score > 0.1
        assert abs(block["controls"]["noise_eeg"]["score"]) < 0.05, subject
        assert block["controls"]["mismatched_eeg"]["score"] < score - 0.1, subject
        assert block["controls"]["circular_shift"]["p_value"] == pytest.approx(1 / 101)
        assert block["warnings"] == []
    assert report["significance"]["significant"] == ["sub-027", "sub-031"]  # Holm over 2: 2/101 < 0.05
    assert "mismatch" in format_run(result)
