"""Crafted checkpoints: a pickle that would create a marker file must never run, in any tool.

In-process: every payload of `tests.hostile.payloads` through Task 2 predict (weights_only refuses
each before any object is built). As real processes (`refuse_subprocess`): one payload fed to both
predict.py, both evaluate.py (the within-subject and the speaker-extraction one) and
``train.py --resume`` of both tasks. Each asserts exit 2, one line naming the file, the marker absent.
"""
from __future__ import annotations

import shutil

import pytest

from tests.hostile.payloads import write_all

NAMES = ["os_system_zip", "builtins_open_zip", "builtins_exec_zip", "builtins_eval_zip", "subprocess_popen_zip",
         "os_system_raw", "os_system_legacy", "builtins_open_raw", "builtins_open_legacy", "hidden_in_weights"]


@pytest.mark.parametrize("name", NAMES)
def test_every_payload_is_refused_in_process(refuse, crafted_checkpoints, task2_tiny_run, task2_dataset, tmp_path,
                                             name):
    from task2_regression.predict import main

    path, marker = crafted_checkpoints[name]
    run = tmp_path / "run"
    shutil.copytree(task2_tiny_run, run)
    shutil.copy(path, run / "best.pt")
    out = tmp_path / "pred"
    line = refuse(main, ["--run", run, "--test-set", task2_dataset / "test_set" / "TASK2_regression", "--out", out],
                  names=["best.pt"], watch=[out, run])
    assert "refused" in line
    assert not marker.exists() and not (run.parent / marker.name).exists()


@pytest.fixture
def evil(tmp_path):
    """(crafted .pt, marker) with a fresh marker path under tmp_path."""
    (tmp_path / "crafted").mkdir()
    made = write_all(tmp_path / "crafted")
    return made["os_system_zip"]


def test_task2_predict_process(refuse_subprocess, evil, task2_tiny_run, task2_dataset, tmp_path):
    path, marker = evil
    run = tmp_path / "run"
    shutil.copytree(task2_tiny_run, run)
    shutil.copy(path, run / "best.pt")
    refuse_subprocess("task2_regression.predict", ["--run", run, "--test-set",
                                                   task2_dataset / "test_set" / "TASK2_regression",
                                                   "--out", tmp_path / "pred"], names=["best.pt"],
                      watch=[tmp_path / "pred", run])
    assert not marker.exists()


def test_task2_evaluate_process(refuse_subprocess, evil, task2_tiny_run, task2_dataset, tmp_path):
    path, marker = evil
    run = tmp_path / "run"
    shutil.copytree(task2_tiny_run, run)
    shutil.copy(path, run / "best.pt")
    refuse_subprocess("task2_regression.evaluate", ["--run", run, "--data", task2_dataset, "--segment-s", "5",
                                                    "--out", tmp_path / "within.json"], names=["best.pt"],
                      watch=[tmp_path / "within.json", run])
    assert not marker.exists()


def test_se_predict_process(refuse_subprocess, evil, tmp_path):
    import numpy as np
    import scipy.io.wavfile

    path, marker = evil
    wav, npy = tmp_path / "mix.wav", tmp_path / "eeg.npy"
    scipy.io.wavfile.write(wav, 8000, np.zeros(16000, dtype=np.float32))
    np.save(npy, np.zeros((256, 64), dtype=np.float32))
    refuse_subprocess("speaker_extraction.predict", ["--run", path, "--mixture", wav, "--eeg", npy,
                                                     "--out", tmp_path / "out.wav"], names=[path.name],
                      watch=[tmp_path / "out.wav", path])
    assert not marker.exists()


def test_se_evaluate_process(refuse_subprocess, evil, kul_dataset, tmp_path):
    path, marker = evil
    refuse_subprocess("speaker_extraction.evaluate", ["--run", path, "--data", kul_dataset, "--no-aad",
                                                      "--out", tmp_path / "report.json"], names=[path.name],
                      watch=[tmp_path / "report.json", path])
    assert not marker.exists()


def test_task2_train_resume_process(refuse_subprocess, evil, task2_tiny_run, task2_dataset, task2_tiny_config,
                                    tmp_path):
    path, marker = evil
    run = tmp_path / "run"
    shutil.copytree(task2_tiny_run, run)
    shutil.copy(path, run / "last.pt")
    refuse_subprocess("task2_regression.train", ["--config", task2_tiny_config, "--data", task2_dataset,
                                                 "--out", run, "--resume"], names=["last.pt"], watch=[run])
    assert not marker.exists()


def test_se_train_resume_process(refuse_subprocess, evil, tiny_se_run, kul_dataset, se_tiny_config, tmp_path):
    path, marker = evil
    run = tmp_path / "run"
    shutil.copytree(tiny_se_run, run)
    shutil.copy(path, run / "last.pt")
    refuse_subprocess("speaker_extraction.train", ["--config", se_tiny_config, "--data", kul_dataset,
                                                   "--out", run, "--resume", "--no-progress"], names=["last.pt"],
                      watch=[run])
    assert not marker.exists()
