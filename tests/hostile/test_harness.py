"""The harness itself: it must catch each broken promise, or the suite could not fail."""
from __future__ import annotations

import pytest

from util.errors import EEGKitError


def _ok(argv):
    return 0


def _refuses(argv):
    raise EEGKitError(f"--flag {argv[0]}: bad value")


def _writes_then_refuses(argv):
    from pathlib import Path

    Path(argv[1]).write_text("partial")
    raise EEGKitError(f"--out {argv[1]}: refused after writing")


def test_harness_accepts_a_clean_refusal(refuse, tmp_path):
    assert refuse(_refuses, ["x"], names=["--flag"], watch=[tmp_path]).startswith("error: --flag x")


def test_harness_catches_exit_0(refuse, tmp_path):
    with pytest.raises(AssertionError, match="exit status 0"):
        refuse(_ok, ["x"], names=["x"], watch=[tmp_path])


def test_harness_catches_a_message_naming_nothing(refuse, tmp_path):
    with pytest.raises(AssertionError, match="names none"):
        refuse(_refuses, ["x"], names=["--other"], watch=[tmp_path])


def test_harness_catches_partial_output(refuse, tmp_path):
    with pytest.raises(AssertionError, match="files changed"):
        refuse(_writes_then_refuses, ["x", tmp_path / "new.txt"], names=["--out"], watch=[tmp_path])
