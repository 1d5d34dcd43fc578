"""DistributedDataParallel check: 2 gloo CPU processes (torchrun) == 1 process on the same global batch.

A tiny linear model (no dropout, fixed seed) trains for one epoch of exactly two optimizer steps
on a tiny hand-made split_data folder. Under torchrun each rank gets half of every global batch
(util.distributed.shard_indices); DDP averages the gradients, so the weights after training must
equal those of one process that sees the whole global batch.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
FS = 64


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_split_data(root: Path) -> Path:
    """2 subjects x 1 stimulus; train part = 8 windows of 2 s each; mel partly encoded in the EEG."""
    split_dir = root / "derivatives" / "split_data"
    split_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((10, 64))
    for subject in ("sub-001", "sub-002"):
        lengths = {"train": 8 * 2 * FS, "val": 2 * 2 * FS, "test": 2 * 2 * FS}
        for split, length in lengths.items():
            mel = rng.standard_normal((length, 10)).cumsum(axis=0)  # (time, 10)
            eeg = mel @ mixing + 5.0 * rng.standard_normal((length, 64))  # (time, 64)
            np.save(split_dir / f"{split}_-_{subject}_-_audiobook_1_-_eeg.npy", eeg.astype(np.float32))
            np.save(split_dir / f"{split}_-_{subject}_-_audiobook_1_-_mel.npy", mel.astype(np.float32))
    return root


def _config(path: Path) -> Path:
    cfg = {
        "target": "mel",
        "model": {"type": "linear", "n_taps": 16},
        "data": {"window_s": 2.0, "hop_s": 2.0, "sampling": "fixed", "normalize": "recording",
                 "batch_size": 8, "val_window_s": 2.0},
        "train": {"epochs": 1, "lr": 1.0e-2, "betas": [0.9, 0.999], "patience": 5, "seed": 3, "mixup": 0,
                  "grad_clip": 1.0},
        "loss": {"pearson": 1.0, "l1": 0.1, "kl": 0.0},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_gloo_ranks_match_one_process(tmp_path):
    data = _make_split_data(tmp_path / "data")
    config = _config(tmp_path / "tiny.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "task2_regression.train",
               "--config", str(config), "--data", str(data), "--out", str(tmp_path / "ddp")]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 2" in result.stdout

    from task2_regression.train import train
    from util import config as config_util
    from util.training import load_checkpoint

    train(config_util.load_config(config), data, tmp_path / "single", say=lambda message: None)

    ddp_state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    single_state = load_checkpoint(tmp_path / "single" / "last.pt")
    assert ddp_state["model"].keys() == single_state["model"].keys()
    for name, single_weight in single_state["model"].items():
        torch.testing.assert_close(ddp_state["model"][name], single_weight, atol=1e-5, rtol=1e-4)
    # training really happened: two Adam steps of lr 1e-2 move every conv weight
    from task2_regression.models import build_model
    torch.manual_seed(3)
    fresh = build_model({"type": "linear", "n_taps": 16}, {"mel": 10}).state_dict()
    moved = (single_state["model"]["convs.mel.weight"] - fresh["convs.mel.weight"]).abs()
    assert float(moved.min()) > 1e-3
    # same validation metric (averaged over ranks) and only rank 0 wrote one log row
    ddp_rows = (tmp_path / "ddp" / "log.csv").read_text().strip().splitlines()
    single_rows = (tmp_path / "single" / "log.csv").read_text().strip().splitlines()
    assert len(ddp_rows) == len(single_rows) == 2
    header = ddp_rows[0].split(",")
    col = header.index("val_pearson")
    assert float(ddp_rows[1].split(",")[col]) == pytest.approx(float(single_rows[1].split(",")[col]), abs=1e-5)
    assert ddp_state["config"]["data"]["batch_size"] == 8
