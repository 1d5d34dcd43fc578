"""Hostile inputs for the Task 1 train.py and evaluate.py CLIs: config schema, flags, folders, runs, data.

Every case goes through the `refuse` harness: exit 2, no traceback, one line naming the key, flag or
file, nothing changed under the watched paths (--out, the config, the run, the data).
"""
from __future__ import annotations

import shutil

import pytest
import yaml

from tests.test_task1_data import write_split_data

TINY = {"model": {"type": "dilated_conv"},
        "data": {"feature": "envelope", "window_s": 2.0, "hop_s": 1.0, "n_imposters": 2, "batch_size": 8,
                 "max_val_windows": 8},
        "train": {"epochs": 1, "max_steps_per_epoch": 2, "patience": 0, "seed": 0}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_split_data(tmp_path_factory.mktemp("task1_hostile_data"), seconds=(30, 10, 10))


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("task1_hostile_cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    """A trained tiny Task 1 run (read only: copy it before changing anything)."""
    from task1_match_mismatch.train import train

    folder = tmp_path_factory.mktemp("task1_hostile_run") / "run"
    train(TINY, data, folder, say=lambda message: None)
    return folder


def _train():
    from task1_match_mismatch.train import main

    return main


def _evaluate():
    from task1_match_mismatch.evaluate import main

    return main


# (override, words the message must name): task1_match_mismatch/configs/schema.yaml and the model registry
OVERRIDES = [
    ("data.feature=audio", "data.feature"),
    ("data.feature=null", "data.feature"),
    ("data.n_imposters=0", "data.n_imposters"),
    ("data.n_imposters=2.5", "data.n_imposters"),
    ("data.n_imposters=1000", "data.n_imposters"),
    ("data.n_imposter=3", "data.n_imposters"),  # the nearest valid key is named
    ("data.window_s=0", "data.window_s"),
    ("data.window_s=nan", "data.window_s"),
    ("data.window_s=0.3", "data.window_s"),  # 19 frames: the baseline needs more than 26
    ("data.hop_s=-1", "data.hop_s"),
    ("data.hop_s=0.001", "data.hop_s"),  # under one frame
    ("data.batch_size=0", "data.batch_size"),
    ("data.max_val_windows=-1", "data.max_val_windows"),
    ("train.lr=0", "train.lr"),
    ("train.lr=inf", "train.lr"),
    ("train.betas=[0.9]", "train.betas"),
    ("train.epochs=-1", "train.epochs"),
    ("train.select_on=auc", "train.select_on"),
    ("train.precision=fp8", "train.precision"),
    ("train.lrr=1", "train.lrr"),
    ("model.type=transformer", "model.type"),
    ("model.type=null", "model.type"),
    ("model.filters=0", "model.filters"),
    ("model.filtres=8", "model.filtres"),
    ("model.stimulus_bands=10", "model.stimulus_bands"),  # the envelope has 1 band
    ("data.window_s=20", "data.window_s"),  # no recording has windows for 2 imposters: nothing to train
    ("data.subjects=[sub-009]", "data.subjects"),
]


@pytest.mark.parametrize("override,names", OVERRIDES, ids=[o for o, _ in OVERRIDES])
def test_train_refuses_bad_config(refuse, data, config, tmp_path, override, names):
    out = tmp_path / "run"
    refuse(_train(), ["--config", config, "--data", data, "--out", out, override], names=[names],
           watch=[out, config, data])


def _train_case(case: str, tmp_path, data, config):
    """(argv, names, watch) of a train case, after setting it up."""
    out = tmp_path / "run"
    base = ["--config", config, "--data", data, "--out", out]
    if case == "config_missing":
        return ["--config", tmp_path / "none.yaml", "--data", data, "--out", out], ["none.yaml"], [out]
    if case == "config_invalid_yaml":
        bad = tmp_path / "bad.yaml"
        bad.write_text("model: [unclosed\n")
        return ["--config", bad, "--data", data, "--out", out], ["bad.yaml"], [out, bad]
    if case == "data_missing":
        return ["--config", config, "--data", tmp_path / "no_data", "--out", out], ["no_data"], [out]
    if case == "data_without_split_data":
        empty = tmp_path / "empty"
        empty.mkdir()
        return ["--config", config, "--data", empty, "--out", out], ["empty"], [out, empty]
    if case == "out_not_empty":
        out.mkdir()
        (out / "notes.txt").write_text("someone's work")
        return base, ["--out"], [out]
    if case == "out_is_the_data":
        return ["--config", config, "--data", data, "--out", data], ["input"], [data]
    if case == "epochs_negative":
        return base + ["--epochs", "-2"], ["--epochs"], [out]
    if case == "resume_without_run":
        return base + ["--resume"], ["last.pt"], [out]
    if case == "holdout_unknown_subject":
        return base + ["--holdout-subjects", "sub-042"], ["--holdout-subjects"], [out]
    if case == "holdout_all_subjects":
        return base + ["--holdout-subjects", "3"], ["--holdout-subjects"], [out]
    if case == "override_without_equals":
        return base + ["train.lr"], ["train.lr"], [out]
    raise AssertionError(case)


TRAIN_CASES = ["config_missing", "config_invalid_yaml", "data_missing", "data_without_split_data", "out_not_empty",
               "out_is_the_data", "epochs_negative", "resume_without_run", "holdout_unknown_subject",
               "holdout_all_subjects", "override_without_equals"]


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_refuses_bad_flags_and_folders(refuse, data, config, tmp_path, case):
    argv, names, watch = _train_case(case, tmp_path, data, config)
    refuse(_train(), argv, names=names, watch=watch + [data, config])


def test_resume_with_another_config_is_refused(refuse, run, data, config, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    refuse(_train(), ["--config", config, "--data", data, "--out", copy, "--resume", "data.n_imposters=3"],
           names=["data.n_imposters"], watch=[copy])


def _evaluate_case(case: str, tmp_path, run, data):
    """(argv, names, watch) of an evaluate case, after setting it up."""
    out = tmp_path / "report.json"
    base = ["--run", run, "--data", data, "--out", out]
    if case == "run_missing":
        return ["--run", tmp_path / "no_run", "--data", data, "--out", out], ["no_run"], [out]
    if case == "run_without_checkpoint":
        empty = tmp_path / "empty_run"
        empty.mkdir()
        return ["--run", empty, "--data", data, "--out", out], ["best.pt"], [out, empty]
    if case == "checkpoint_of_task2":
        other = tmp_path / "task2_run"
        shutil.copytree(run, other)
        import torch

        state = torch.load(other / "best.pt", weights_only=True)
        state["task"] = "task2"
        torch.save(state, other / "best.pt")
        return ["--run", other, "--data", data, "--out", out], ["best.pt", "Task 2"], [out, other]
    if case == "checkpoint_truncated":
        broken = tmp_path / "broken_run"
        shutil.copytree(run, broken)
        (broken / "best.pt").write_bytes((run / "best.pt").read_bytes()[:200])
        return ["--run", broken, "--data", data, "--out", out], ["best.pt"], [out, broken]
    if case == "data_missing":
        return ["--run", run, "--data", tmp_path / "no_data", "--out", out], ["no_data"], [out]
    if case == "out_exists":
        out.write_text("{}")
        return base, ["report.json"], [out]
    if case == "out_is_an_input":
        return ["--run", run, "--data", data, "--out", run / "best.pt", "--overwrite"], ["input"], []
    if case == "plot_exists":
        png = tmp_path / "plot.png"
        png.write_bytes(b"png")
        return base + ["--plot", png], ["plot.png"], [out, png]
    if case == "n_imposters_zero":
        return base + ["--n-imposters", "0"], ["--n-imposters"], [out]
    if case == "n_imposters_too_many":
        return base + ["--n-imposters", "12"], ["--n-imposters"], [out]
    if case == "window_nan":
        return base + ["--window-s", "nan"], ["--window-s"], [out]
    if case == "window_too_short":
        return base + ["--window-s", "0.25"], ["--window-s"], [out]
    if case == "hop_negative":
        return base + ["--hop-s", "-1"], ["--hop-s"], [out]
    if case == "seed_negative":
        return base + ["--seed", "-3"], ["--seed"], [out]
    if case == "heldout_without_holdout":
        return base + ["--heldout"], ["held-out", "--holdout-subjects"], [out]
    if case == "checkpoint_unknown":
        return base + ["--checkpoint", "newest"], ["--checkpoint"], [out]
    raise AssertionError(case)


EVALUATE_CASES = ["run_missing", "run_without_checkpoint", "checkpoint_of_task2", "checkpoint_truncated",
                  "data_missing", "out_exists", "out_is_an_input", "plot_exists", "n_imposters_zero",
                  "n_imposters_too_many", "window_nan", "window_too_short", "hop_negative", "seed_negative",
                  "heldout_without_holdout", "checkpoint_unknown"]


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_refuses_bad_input(refuse, run, data, tmp_path, case):
    argv, names, watch = _evaluate_case(case, tmp_path, run, data)
    refuse(_evaluate(), argv, names=names, watch=watch + [run, data])
