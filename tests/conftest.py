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
