"""SIGKILL mid-training, then --resume: final weights bit-identical to an uninterrupted run (both tasks).

(tests/test_train_predict.py::test_resume_continues_from_last_epoch checks the in-process resume;
this one kills a real process, leaves its temporaries behind, and resumes in a new one.)
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from tests.hostile.conftest import REPO, TASK2_TINY


def _cmd(task, config, data, out, *extra):
    module = "task2_regression.train" if task == "task2" else "speaker_extraction.train"
    return [sys.executable, "-m", module, "--config", str(config), "--data", str(data), "--out", str(out), *extra]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


@pytest.mark.parametrize("task", ["task2", "se"])
def test_sigkill_then_resume_is_bit_identical(task, task2_dataset, kul_dataset, tiny_se_run, tmp_path):
    from tests.conftest import TINY_SE_CONFIG
    from util.training import load_checkpoint

    if task == "task2":
        config = {**TASK2_TINY, "train": {**TASK2_TINY["train"], "epochs": 12}}
        data = task2_dataset
    else:
        config = {**TINY_SE_CONFIG, "train": {**TINY_SE_CONFIG["train"], "epochs": 4, "patience": 0, "threads": 1}}
        data = kul_dataset
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    process = subprocess.Popen(_cmd(task, path, data, killed), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "last.pt").is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    epoch_at_kill = load_checkpoint(killed / "last.pt")["extra"]["epoch"]
    assert epoch_at_kill < config["train"]["epochs"] - 1
    from util.atomic import temp_name

    # what a kill mid-write leaves: a temporary named for the killed process
    (killed / temp_name("last.pt", ".pt", pid=process.pid)).write_bytes(b"half a checkpoint")
    resumed = subprocess.run(_cmd(task, path, data, killed, "--resume"), cwd=REPO, env=_env(), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(killed.glob(".*.eegkit-tmp-*"))
    done = subprocess.run(_cmd(task, path, data, straight), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    a, b = load_checkpoint(killed / "last.pt"), load_checkpoint(straight / "last.pt")
    assert a["extra"]["epoch"] == b["extra"]["epoch"] == config["train"]["epochs"] - 1
    for name, weight in b["model"].items():
        assert torch.equal(weight, a["model"][name]), name
