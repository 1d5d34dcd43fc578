"""Hostile flags for the data generators (python -m synthetic) and the benchmark scripts.

NaN/Inf durations and SNRs, negative seeds and zero or negative counts are refused naming the flag
before anything is generated or measured; the --out folder stays absent."""
from __future__ import annotations

import pytest

SYNTHETIC = [
    ("task2", "--snr-db", "nan"), ("task2", "--snr-db", "inf"), ("task2", "--minutes", "nan"),
    ("task2", "--minutes", "0.2"), ("task2", "--seed", "-1"), ("task2", "--subjects", "0"),
    ("task2", "--test-subjects", "-3"), ("task2", "--test-minutes", "inf"), ("task2", "--test-minutes", "0.1"),
    ("kul", "--minutes", "nan"), ("kul", "--minutes", "0"), ("kul", "--seed", "-1"), ("kul", "--trials", "0"),
    ("kul", "--subjects", "-2"),
]


@pytest.mark.parametrize("dataset, flag, value", SYNTHETIC, ids=[f"{d}{f}={v}" for d, f, v in SYNTHETIC])
def test_synthetic_refuses_bad_flags(dataset, flag, value, refuse, tmp_path):
    import synthetic

    out = tmp_path / "data"
    line = refuse(synthetic.main, [dataset, "--out", out, flag, value, "--no-progress"], names=[flag], watch=[out])
    assert line.startswith(f"error: {flag} ")


@pytest.mark.parametrize("dataset", ["task2", "kul"])
def test_synthetic_refuses_an_out_that_is_a_file(dataset, refuse, tmp_path):
    import synthetic

    out = tmp_path / "data"
    out.write_text("my notes")
    refuse(synthetic.main, [dataset, "--out", out, "--no-progress"], names=["--out"], watch=[out])


BENCHMARKS = [
    ("synthetic_calibration", "--snr-db", "nan"), ("synthetic_calibration", "--seed", "-1"),
    ("synthetic_calibration", "--lag-step", "0"), ("synthetic_calibration", "--minutes", "nan"),
    ("task2_data", "--factor", "0"), ("task2_data", "--minutes", "nan"), ("task2_data", "--batch-size", "-1"),
    ("task2_data", "--max-windows", "0"),
    ("task2_excerpt", "--shifts", "0"), ("task2_excerpt", "--seed", "-5"), ("task2_excerpt", "--vlaai-steps", "-1"),
    ("task2_models", "--iters", "0"), ("task2_models", "--compile-timeout", "nan"), ("task2_models", "--threads", "0"),
    ("speaker_extraction", "--window-s", "nan"), ("speaker_extraction", "--repeats", "0"),
    ("speaker_extraction", "--train-batch", "-4"), ("speaker_extraction", "--window-s", "-1"),
]


@pytest.mark.parametrize("module, flag, value", BENCHMARKS, ids=[f"{m}{f}={v}" for m, f, v in BENCHMARKS])
def test_benchmarks_refuse_bad_flags(module, flag, value, refuse, tmp_path, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(f"benchmarks.{module}").main
    line = refuse(main, [flag, value], names=[flag], watch=[tmp_path])
    assert line.startswith(f"error: {flag} ")
