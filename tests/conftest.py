"""Shared pytest fixtures: tiny synthetic datasets (generated once per session) and the real excerpt."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EXCERPT = REPO.parent / "shared" / "data" / "sparrkulee_excerpt"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def task2_dataset(tmp_path_factory) -> Path:
    """A tiny synthetic Task 2 dataset in the real on-disk layout.

    Easier than the default (-10 dB instead of -25 dB) so that three training subjects
    generalise to the held-out ones and score assertions are not at chance level.
    """
    from synthetic.task2 import generate

    out = tmp_path_factory.mktemp("task2_data")
    generate(out, subjects=3, minutes=2, seed=0, test_subjects=2, snr_db=-10, progress=False)
    return out


@pytest.fixture(scope="session")
def kul_dataset(tmp_path_factory) -> Path:
    """A tiny synthetic KU Leuven AAD dataset (S*.mat + stimuli/*.wav)."""
    from synthetic.kul import generate

    out = tmp_path_factory.mktemp("kul_data")
    generate(out, subjects=2, trials=4, minutes=0.25, seed=0)
    return out


@pytest.fixture(scope="session")
def sparrkulee_excerpt() -> Path:
    """The real SparrKULee excerpt beside the project; skips cleanly where it is absent."""
    if not EXCERPT.is_dir():
        pytest.skip(f"real-data excerpt not present at {EXCERPT}")
    return EXCERPT


TINY_SE_CONFIG = {
    "model": {"type": "neurospex", "N": 16, "L": 32, "B": 16, "H": 32, "P": 3, "X": 2, "R": 1, "eeg_channels": 64,
              "eeg_dim": 16, "adc_blocks": 1, "eeg_heads": 1, "attn_heads": 2},
    "data": {"window_s": 1.0, "hop_s": 1.0, "split": {"protocol": "trial"}},
    "train": {"epochs": 1, "batch_size": 4, "lr": 1.0e-3, "patience": 3, "grad_clip": 5.0, "seed": 0,
              "max_steps_per_epoch": 2, "max_val_windows": 4},
}


@pytest.fixture
def tiny_se_config() -> dict:
    """A tiny NeuroSpex config with 1-s windows (short attention maps), 1 epoch of 2 steps."""
    import copy

    return copy.deepcopy(TINY_SE_CONFIG)


@pytest.fixture(scope="session")
def tiny_se_run(kul_dataset, tmp_path_factory) -> Path:
    """A run folder of the tiny NeuroSpex trained on `kul_dataset` (trained once per session; read only)."""
    import yaml

    from speaker_extraction.train import main

    folder = tmp_path_factory.mktemp("se_run")
    config_path = folder / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(TINY_SE_CONFIG))
    run = folder / "run"
    assert main(["--config", str(config_path), "--data", str(kul_dataset), "--out", str(run), "--no-progress"]) == 0
    return run
