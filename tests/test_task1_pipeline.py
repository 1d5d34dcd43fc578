"""Task 1 runs end to end on a tiny split_data folder: train (gradient and closed form), resume, evaluate
within-subject and on held-out subjects with the controls, and a model that ignores the EEG flagged."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from tests.test_task1_data import write_split_data

TINY = {"model": {"type": "dilated_conv"},
        "data": {"feature": "envelope", "window_s": 2.0, "hop_s": 1.0, "n_imposters": 2, "batch_size": 16,
                 "max_val_windows": 20},
        "train": {"epochs": 1, "max_steps_per_epoch": 4, "patience": 0, "seed": 0}}
RIDGE = {"model": {"type": "ridge", "n_taps": 8, "alphas": [0.01, 1.0]},
         "data": {"feature": "envelope", "window_s": 2.0, "hop_s": 1.0, "n_imposters": 4}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_split_data(tmp_path_factory.mktemp("task1_runs_data"))


@pytest.fixture(scope="module")
def ridge_run(data, tmp_path_factory):
    from task1_match_mismatch.train import train

    run = tmp_path_factory.mktemp("task1_ridge") / "run"
    result = train(RIDGE, data, run, say=lambda message: None)
    assert result["epochs_run"] == 0
    return run


def test_train_writes_a_task1_run_and_resumes(data, tmp_path):
    from task1_match_mismatch.train import train
    from util.training import load_checkpoint

    run = tmp_path / "run"
    result = train(TINY, data, run, say=lambda message: None)
    assert result["epochs_run"] == 1 and result["select_on"] == "loss"
    assert {"best.pt", "last.pt", "config.yaml", "log.csv", "curves.png"} <= {p.name for p in run.iterdir()}
    state = load_checkpoint(run / "best.pt", task="task1")
    assert state["config"]["model"] == {"type": "dilated_conv", "stimulus_bands": 1}
    assert state["config"]["data"]["n_imposters"] == 2 and state["config"]["train"]["lr"] == 1e-3
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [row["epoch"] for row in rows] == ["0"]
    row = rows[0]
    assert float(row["val_neg_loss"]) == -float(row["val_loss"]) and 0 <= float(row["val_accuracy"]) <= 1
    assert 0 <= float(row["val_noise_eeg"]) <= 1
    result = train(TINY, data, run, epochs=2, resume=True, say=lambda message: None)
    assert result["epochs_run"] == 1
    assert [row["epoch"] for row in csv.DictReader(open(run / "log.csv"))] == ["0", "1"]


def test_mel_feature_sets_ten_stimulus_bands(data, tmp_path):
    from task1_match_mismatch.train import train
    from util.training import load_checkpoint

    config = {**TINY, "data": {**TINY["data"], "feature": "mel"}}
    train(config, data, tmp_path / "mel", say=lambda message: None)
    assert load_checkpoint(tmp_path / "mel" / "best.pt")["config"]["model"]["stimulus_bands"] == 10


def test_ridge_run_far_above_chance_with_the_controls_near_it(ridge_run, data):
    from task1_match_mismatch.evaluate import evaluate_run

    report = evaluate_run(ridge_run, data)
    assert report["mode"] == "within_subject" and report["n_candidates"] == 5
    assert set(report["per_subject"]) == {"sub-001", "sub-002", "sub-003"}
    overall = report["overall"]
    assert overall["n_segments"] == 3 * 2 * 15  # 30-s test parts, 2-s trials every 2 s, 2 stories per subject
    assert overall["chance"] == pytest.approx(0.2) and overall["significant"]
    assert report["score"] > 0.8
    lo, hi = overall["chance_range95"]
    assert lo < 0.2 < hi < overall["significance_threshold"] + 0.05
    for name in ("noise EEG", "mismatched EEG"):
        assert report["controls"][name]["overall"]["accuracy"] < 0.45  # chance is 0.2; the model is at > 0.8


def test_evaluate_other_window_and_imposters_and_heldout(data, tmp_path):
    from task1_match_mismatch.evaluate import evaluate_run
    from task1_match_mismatch.train import train

    run = tmp_path / "held"
    train(RIDGE, data, run, holdout="sub-002", say=lambda message: None)
    within = evaluate_run(run, data, window_s=3.0, n_imposters=1)
    assert within["n_candidates"] == 2 and within["overall"]["chance"] == 0.5 and within["window_s"] == 3.0
    assert set(within["per_subject"]) == {"sub-001", "sub-003"}
    held = evaluate_run(run, data, heldout=True)
    assert held["mode"] == "heldout_subjects" and set(held["per_subject"]) == {"sub-002"}
    assert held["overall"]["n_segments"] == 2 * 55  # whole recordings (110 s) of both stories in 2-s trials
    assert held["score"] > held["overall"]["significance_threshold"]  # the subject's own pattern is unseen


class _StimulusOnly(torch.nn.Module):
    """Ignores the EEG: each candidate's score is its mean (a stimulus property)."""

    def forward(self, eeg, stimuli):  # (batch, T, 64), (batch, K, T, bands) -> (batch, K)
        return stimuli.mean(dim=(2, 3))


def test_a_model_that_ignores_the_eeg_beats_chance_only_where_stimuli_give_it_away_and_is_flagged():
    """Where the matched stimulus window can be recognised without the EEG (here: every matched segment
    is louder than the others, as when imposters come from segments that are never matched), a model that
    never reads the EEG scores above chance, and the report says so through the no-EEG controls."""
    from task1_match_mismatch.data import ArrayRecording, MatchMismatchWindows
    from task1_match_mismatch.evaluate import score_trials

    rng = np.random.default_rng(0)
    recs = [ArrayRecording(f"sub-00{s}", f"story{r}", {"eeg": rng.standard_normal((3000, 64)),
                                                       "envelope": rng.standard_normal((3000, 1))},
                           per_window_zscore=False) for s in (1, 2) for r in (1, 2)]

    class Leaky(MatchMismatchWindows):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            item["stimuli"][item["label"]] += 0.5  # the matched segment gives itself away
            return item

    leaky = Leaky(recs, "envelope", 128, 128, 4, seed=0, all_positions=False)
    report = score_trials(_StimulusOnly(), leaky, seed=0)
    assert report["score"] > 0.9 and report["overall"]["significant"]
    assert report["controls"]["noise EEG"]["score"] > 0.9
    assert any(w.startswith("noise EEG control") and "without the EEG" in w for w in report["warnings"])
    assert any(w.startswith("mismatched EEG control") for w in report["warnings"])
    # the same model on the kit's trials (every imposter is a matched segment; nothing given away): chance, no flag
    fair = MatchMismatchWindows(recs, "envelope", 128, 128, 4, seed=0, all_positions=False)
    report = score_trials(_StimulusOnly(), fair, seed=0)
    assert not report["overall"]["significant"] and not report["warnings"]


def test_evaluate_cli_writes_report_and_plot(ridge_run, data, tmp_path, capsys):
    from task1_match_mismatch.evaluate import main

    out, png = tmp_path / "report.json", tmp_path / "report.png"
    assert main(["--run", str(ridge_run), "--data", str(data), "--out", str(out), "--plot", str(png),
                 "--no-controls"]) == 0
    report = json.loads(out.read_text())
    assert report["controls"] == {} and report["model_type"] == "ridge" and png.stat().st_size > 1000
    assert "pooled:" in capsys.readouterr().out
