"""The output rule (`util.outdir`) on the Task 1 (match-mismatch) CLIs: never an input, a run, a FIFO or a
folder of other files, even with ``--overwrite``; the prediction folder under its lock file. Each case
asserts exit 2, one line naming the flag, no traceback and an unchanged hash listing (`refuse`)."""
from __future__ import annotations

import importlib
import os
import shutil
from pathlib import Path

import pytest

TASK1 = Path("task1_match_mismatch/configs/ridge.yaml")


def _main(module: str):
    return importlib.import_module(module).main


@pytest.fixture
def task1_copy(task2_dataset, tmp_path) -> Path:
    """The synthetic Task 1 test set and its labels (copied: these tests point --out into them)."""
    test_set = tmp_path / "test_set"
    for name in ("TASK1_match_mismatch", "labels_task1"):
        shutil.copytree(task2_dataset / "test_set" / name, test_set / name)
    return test_set


def test_task1_scorer_out_inside_the_labels_is_refused(refuse, task1_copy, tmp_path):
    labels = task1_copy / "labels_task1"
    target = sorted(labels.glob("sub-*.json"))[0]
    refuse(_main("evaluation.task1"), ["--predictions", labels, "--labels", labels, "--out", target, "--overwrite"],
           names=["--out"], watch=[tmp_path])


def test_task1_scorer_out_a_fifo_is_refused(refuse, task1_copy, tmp_path):
    fifo = tmp_path / "report.json"
    os.mkfifo(fifo)
    line = refuse(_main("evaluation.task1"), ["--predictions", task1_copy / "labels_task1", "--labels",
                                              task1_copy / "labels_task1", "--out", fifo, "--overwrite"],
                  names=["--out"], watch=[task1_copy])
    assert "FIFO" in line and fifo.exists()


def test_task1_predict_out_inside_the_test_set_is_refused(refuse, task1_copy, tmp_path):
    test_set = task1_copy / "TASK1_match_mismatch"
    refuse(_main("task1_match_mismatch.predict"), ["--run", tmp_path / "run", "--test-set", test_set,
                                                   "--out", test_set / "pred", "--overwrite"],
           names=["--out"], watch=[tmp_path])


def test_task1_predict_overwrite_never_replaces_a_run(refuse, task1_copy, task2_tiny_run, tmp_path):
    other = tmp_path / "other_run"
    shutil.copytree(task2_tiny_run, other)  # a run folder (best.pt, last.pt, ...) that is not the --run
    refuse(_main("task1_match_mismatch.predict"), ["--run", tmp_path / "run", "--test-set",
                                                   task1_copy / "TASK1_match_mismatch", "--out", other,
                                                   "--overwrite"], names=["--out"], watch=[tmp_path])


def test_task1_predict_overwrite_refuses_a_folder_of_other_files(refuse, task1_copy, tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (out / "sub-101.json").write_text("{}")
    (out / "thesis.tex").write_text("years of work")
    refuse(_main("task1_match_mismatch.predict"), ["--run", tmp_path / "run", "--test-set",
                                                   task1_copy / "TASK1_match_mismatch", "--out", out, "--overwrite"],
           names=["thesis.tex"], watch=[tmp_path])


def test_task1_evaluate_out_onto_a_split_data_file_is_refused(refuse, task2_dataset, task2_tiny_run):
    target = sorted((task2_dataset / "derivatives" / "split_data").glob("test_-_*_-_eeg.npy"))[0]
    refuse(_main("task1_match_mismatch.evaluate"), ["--run", task2_tiny_run, "--data", task2_dataset,
                                                    "--out", target, "--overwrite"], names=["--out"], watch=[target])


@pytest.mark.parametrize("inside", [False, True])
def test_task1_train_out_in_the_dataset_is_refused(refuse, task2_dataset, inside):
    out = task2_dataset / "runs" if inside else task2_dataset
    refuse(_main("task1_match_mismatch.train"), ["--config", TASK1, "--data", task2_dataset, "--out", out,
                                                 "--overwrite"], names=["--out"], watch=[task2_dataset])


def test_task1_accuracy_grid_out_inside_the_dataset_is_refused(refuse, task2_dataset):
    refuse(_main("task1_match_mismatch.experiments.accuracy_grid"),
           ["--config", TASK1, "--data", task2_dataset, "--out", task2_dataset / "results", "--overwrite"],
           names=["--out"], watch=[task2_dataset])


def test_task1_submit_out_inside_the_test_set_is_refused(refuse, task1_copy):
    test_set = task1_copy / "TASK1_match_mismatch"
    refuse(_main("submit"), ["--task", "1", "--predictions", task1_copy / "labels_task1", "--test-set", test_set,
                             "--group", "g", "--out", test_set / "zips"], names=["--out"], watch=[task1_copy])


def test_task1_submit_writes_under_the_lock_and_counts_on(task1_copy, tmp_path):
    """Two submissions into one --out: _1 then _2 (the number is taken under the lock), no lock file left."""
    from util.errors import run_cli

    out = tmp_path / "zips"
    argv = ["--task", "1", "--predictions", str(task1_copy / "labels_task1"), "--test-set",
            str(task1_copy / "TASK1_match_mismatch"), "--group", "g", "--out", str(out)]
    for _ in range(2):
        with pytest.raises(SystemExit) as done:
            run_cli(_main("submit"), argv)
        assert done.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == [".eegkit-output", "task_1_group_g_submission_1.zip",
                                                     "task_1_group_g_submission_2.zip"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_set", "zips"]
