"""Speaker-extraction DDP check: 2 gloo CPU processes (torchrun) == 1 process on the same global batch.

A tiny NeuroSpex (no dropout, fixed seed) trains for two epochs of two optimizer
steps each on the session `kul_dataset` fixture, with random training crops on.
``train.batch_size`` is the global batch: under torchrun each rank takes half of
every global batch (``util.distributed.shard_indices``), the crop offsets are
drawn per window from ``[seed, epoch]`` (the same on every rank), and DDP
averages the gradients -- so the final weights must equal those of one process.
"""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]

CONFIG = {
    "model": {"type": "neurospex", "N": 16, "L": 32, "B": 16, "H": 32, "P": 3, "X": 2, "R": 1, "eeg_channels": 64,
              "eeg_dim": 16, "adc_blocks": 1, "eeg_heads": 1, "attn_heads": 2},
    "data": {"window_s": 1.0, "hop_s": 1.0, "split": {"protocol": "trial"}},
    "train": {"epochs": 2, "batch_size": 4, "crop_s": 0.5, "lr": 3.0e-3, "patience": 5, "grad_clip": 1.0,
              "seed": 5, "max_steps_per_epoch": 2, "max_val_windows": 6, "threads": 1},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_two_gloo_ranks_match_one_process(tmp_path, kul_dataset):
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(CONFIG))
    # the dataset cache is written by the single-process run first, so the two ranks only read it
    from speaker_extraction.train import train

    single = train(yaml.safe_load(config_path.read_text()), kul_dataset, tmp_path / "single", progress=False)
    assert single["epochs_run"] == 2

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "speaker_extraction.train", "--config", str(config_path),
               "--data", str(kul_dataset), "--out", str(tmp_path / "ddp"), "--no-progress"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 2, global batch 4" in result.stdout

    from util.training import load_checkpoint

    ddp_state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    single_state = load_checkpoint(tmp_path / "single" / "last.pt")
    assert ddp_state["model"].keys() == single_state["model"].keys()
    checked = 0
    for name, single_weight in single_state["model"].items():
        ddp_weight = ddp_state["model"][name]
        # A bias on the attention *keys* adds the same score to every key of a query, so softmax
        # cancels it: its true gradient is exactly 0 and what backward returns is rounding noise
        # (~1e-10), which Adam's normalisation turns into +-lr steps of arbitrary sign. Those
        # entries are not comparable between any two runs that sum in a different order.
        if name.endswith("attention.qkv_proj.bias"):
            dim = single_weight.shape[0] // 3
            keep = torch.cat([torch.arange(dim), torch.arange(2 * dim, 3 * dim)])
            single_weight, ddp_weight = single_weight[keep], ddp_weight[keep]
        elif name.endswith("cross_attention.key_proj.bias"):
            continue
        torch.testing.assert_close(ddp_weight, single_weight, atol=1e-5, rtol=1e-4, msg=name)
        checked += single_weight.numel()
    assert checked > 0.99 * sum(w.numel() for w in single_state["model"].values())
    # training really happened: four Adam steps move the weights away from the seeded initialisation
    from speaker_extraction.models import build_model

    torch.manual_seed(CONFIG["train"]["seed"])
    fresh = build_model(CONFIG["model"]).state_dict()
    moved = (single_state["model"]["decoder.weight"] - fresh["decoder.weight"]).abs()
    assert float(moved.mean()) > 1e-3
    # the same losses and validation metrics (reduced over ranks); only rank 0 wrote the log
    ddp_rows, single_rows = _rows(tmp_path / "ddp" / "log.csv"), _rows(tmp_path / "single" / "log.csv")
    assert len(ddp_rows) == len(single_rows) == 2
    for ddp_row, single_row in zip(ddp_rows, single_rows):
        for key in ("loss_total", "val_si_sdr", "val_si_sdri"):
            assert float(ddp_row[key]) == pytest.approx(float(single_row[key]), abs=1e-4), key
    assert ddp_state["config"]["train"]["batch_size"] == 4 and ddp_state["extra"]["epoch"] == 1


def test_global_batch_must_divide_over_ranks(tmp_path, kul_dataset):
    """A global batch that does not split over the ranks is refused with one clear line (checked in-process)."""
    from speaker_extraction import train as train_module
    from util.errors import EEGKitError

    class FakeInfo:
        rank, world_size, local_rank, device, is_main, distributed = 0, 3, 0, torch.device("cpu"), True, False

    original = train_module.init_distributed
    train_module.init_distributed = lambda device=None: FakeInfo()
    try:
        with pytest.raises(EEGKitError, match="batch_size 4 is not divisible by world size 3"):
            train_module.train(CONFIG, kul_dataset, tmp_path / "bad", progress=False)
    finally:
        train_module.init_distributed = original
