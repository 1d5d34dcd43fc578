"""Tests for submit.py: validation against the test-set mapping files and zip packaging."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from submit import main
from util.errors import EEGKitError

REPO = Path(__file__).resolve().parents[1]
SUBJECTS = {"sub-001": ["sub-001_0", "sub-001_1"], "sub-002": ["sub-002_0"]}


@pytest.fixture()
def setup(tmp_path):
    """A test-set folder with mapping files and a valid per-subject predictions folder."""
    rng = np.random.default_rng(0)
    test_set = tmp_path / "test_set" / "TASK2_regression"
    test_set.mkdir(parents=True)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    predictions = {}
    for subject, ids in SUBJECTS.items():
        mapping = {sid: {"eeg": f"eeg_{sid}"} for sid in ids}
        (test_set / f"{subject}_mapping.json").write_text(json.dumps(mapping))
        predictions[subject] = {sid: rng.standard_normal((1920, 10)).round(4).tolist() for sid in ids}
        (pred_dir / f"{subject}.json").write_text(json.dumps(predictions[subject]))
    return {"test_set": test_set, "pred": pred_dir, "out": tmp_path / "out", "predictions": predictions}


def _run(setup, group="team-a"):
    return main(["--task", "2", "--predictions", str(setup["pred"]), "--test-set", str(setup["test_set"]),
                 "--group", group, "--out", str(setup["out"])])


def test_valid_round_trip_and_numbering(setup):
    assert _run(setup) == 0
    first = setup["out"] / "task_2_group_team-a_submission_1.zip"
    with zipfile.ZipFile(first) as archive:
        assert sorted(archive.namelist()) == ["sub-001.json", "sub-002.json"]
        for subject, expected in setup["predictions"].items():
            assert json.loads(archive.read(f"{subject}.json")) == expected
    assert _run(setup) == 0
    assert (setup["out"] / "task_2_group_team-a_submission_2.zip").is_file()
    with pytest.raises(EEGKitError, match="submissions 1 and 2 for group team-a already exist"):
        _run(setup)
    assert sorted(p.name for p in setup["out"].iterdir() if p.name != ".eegkit-output") == [
        "task_2_group_team-a_submission_1.zip", "task_2_group_team-a_submission_2.zip"]


def _edit(setup, subject: str, change) -> Path:
    path = setup["pred"] / f"{subject}.json"
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    return path


def _nan(obj):
    obj["sub-001_1"][100][3] = float("nan")


@pytest.mark.parametrize(
    "subject, change, message",
    [
        ("sub-001", lambda o: o.pop("sub-001_1"), r"sub-001_mapping\.json: segment sub-001_1: no prediction"),
        ("sub-002", lambda o: o.update({"sub-777_3": o["sub-002_0"]}),
         r"sub-002\.json: segment sub-777_3: unknown id"),
        ("sub-002", lambda o: o.update({"sub-002_0": np.array(o["sub-002_0"]).T.tolist()}),
         r"sub-002\.json: segment sub-002_0: shape \(10, 1920\), expected \(1920, 10\) \(transposed"),
        ("sub-002", lambda o: o.update({"sub-002_0": o["sub-002_0"][:1900]}),
         r"sub-002\.json: segment sub-002_0: shape \(1900, 10\)"),
        ("sub-001", _nan, r"sub-001\.json: segment sub-001_1: contains NaN or Inf"),
        ("sub-001", lambda o: o.update({"sub-001_0": "mel"}), r"sub-001\.json: segment sub-001_0: not a numeric"),
    ],
    ids=["missing", "unknown", "transposed", "short", "nan", "non-numeric"],
)
def test_each_problem_refused_and_nothing_written(setup, capsys, subject, change, message):
    _edit(setup, subject, change)
    with pytest.raises(EEGKitError, match="1 problem\\(s\\) found; no submission written"):
        _run(setup)
    problems = capsys.readouterr().err.strip().splitlines()
    assert len(problems) == 1 and re.search(message, problems[0]), problems
    assert not setup["out"].exists()


def test_invalid_json_and_duplicate_ids_listed_together(setup, capsys):
    (setup["pred"] / "extra.json").write_text("{broken")
    (setup["pred"] / "zz_dup.json").write_text(json.dumps({"sub-002_0": setup["predictions"]["sub-002"]["sub-002_0"]}))
    with pytest.raises(EEGKitError, match="2 problem"):
        _run(setup)
    err = capsys.readouterr().err
    assert "extra.json: invalid JSON" in err
    assert "zz_dup.json: segment sub-002_0: also in" in err
    assert not setup["out"].exists()


def test_bad_arguments(setup, tmp_path):
    with pytest.raises(EEGKitError, match="--group"):
        _run(setup, group="a b/c")
    setup["test_set"] = tmp_path / "nowhere"
    with pytest.raises(EEGKitError, match="nowhere: test set folder not found"):
        _run(setup)


def test_cli_exit_status(setup):
    setup["pred"].joinpath("sub-002.json").write_text("[]")
    result = subprocess.run(
        [sys.executable, "submit.py", "--task", "2", "--predictions", str(setup["pred"]), "--test-set",
         str(setup["test_set"]), "--group", "g", "--out", str(setup["out"])],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "no submission written" in lines[-1]
    assert any("sub-002.json: expected a JSON object" in line for line in lines)
    assert any("sub-002_0: no prediction" in line for line in lines)
    assert not setup["out"].exists()
