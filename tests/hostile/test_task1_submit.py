"""Hostile inputs for the Task 1 (match-mismatch) test-set path: submit.py --task 1, evaluation.task1 and
task1_match_mismatch.predict. Each case breaks one input of a small valid set (the synthetic Task 1 test
set of conftest's task2_dataset) and asserts the harness's four promises: exit 2, no traceback, one
line naming the file or flag, nothing changed under the watched inputs and outputs."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from data_faults import edit_json, edit_npz, truncate


def _t1(task2_dataset: Path) -> Path:
    return task2_dataset / "test_set" / "TASK1_match_mismatch"


def _setup(task2_dataset: Path, tmp_path: Path):
    """(test set copy, predictions folder = the labels, a valid submission; submissions folder)."""
    test_dir = tmp_path / "TASK1_match_mismatch"
    shutil.copytree(_t1(task2_dataset), test_dir)
    pred = tmp_path / "pred"
    shutil.copytree(task2_dataset / "test_set" / "labels_task1", pred)
    return test_dir, pred, tmp_path / "submissions"


def _first(obj):
    return sorted(obj)[0]


def _set(value):
    def change(obj):
        obj[_first(obj)] = value
    return change


# --------------------------------------------------------------------------- submit.py --task 1
SUBMIT_VALUES = {
    # case: (change to the first subject's file, text of the error line)
    "missing_segment": (lambda o: o.pop(_first(o)), "no prediction"),
    "index_5": (_set(5), "index 5 is out of range, expected 0..4"),
    "index_minus_1": (_set(-1), "index -1 is out of range"),
    "float": (_set(2.0), "2.0 is a float, expected an integer index 0..4"),
    "boolean": (_set(True), "True is a boolean"),
    "string": (_set("1"), "'1' is a string"),
    "null": (_set(None), "None is null"),
    "list": (_set([0, 1]), "found a list, expected an integer index 0..4"),
    "extra_key": (lambda o: o.update({"sub-999_0": 1}), "sub-999_0: extra key (in no mapping file"),
    "other_subjects_key": (lambda o: o.update({"sub-102_0": 1}), "sub-102_0: extra key (belongs to sub-102"),
    "top_level_list": (lambda o: None, "expected a JSON object"),
}


@pytest.mark.parametrize("case", list(SUBMIT_VALUES))
def test_submit_refuses_bad_values(case, refuse, task2_dataset, tmp_path):
    import submit

    test_dir, pred, out = _setup(task2_dataset, tmp_path)
    change, text = SUBMIT_VALUES[case]
    first = pred / "sub-101.json"
    if case == "top_level_list":
        first.write_text("[0, 1, 2]")
    else:
        edit_json(first, change)
    named = test_dir / "sub-101_mapping.json" if case == "missing_segment" else first
    line = refuse(submit.main, ["--task", "1", "--predictions", pred, "--test-set", test_dir, "--group", "g",
                                "--out", out], names=[named], watch=[out, pred, test_dir])
    assert text in line and "no submission written" in line


def _extra_file(pred):
    (pred / "notes.txt").write_text("hello")


def _extra_subject(pred):
    (pred / "sub-999.json").write_text(json.dumps({"sub-999_0": 0}))


def _sub_folder(pred):
    (pred / "more").mkdir()


def _missing_file(pred):
    (pred / "sub-102.json").unlink()


def _malformed(pred):
    (pred / "sub-102.json").write_text('{"sub-102_0": 1,')


SUBMIT_FILES = {
    "extra_file": (_extra_file, "notes.txt", "extra file"),
    "extra_subject_file": (_extra_subject, "sub-999.json", "the test set has no sub-999_mapping.json"),
    "sub_folder": (_sub_folder, "more", "a folder"),
    "missing_subject_file": (_missing_file, "sub-102.json", "missing (12 segments of sub-102_mapping.json"),
    "malformed_json": (_malformed, "sub-102.json", "invalid JSON"),
}


@pytest.mark.parametrize("case", list(SUBMIT_FILES))
def test_submit_refuses_bad_files(case, refuse, task2_dataset, tmp_path):
    import submit

    test_dir, pred, out = _setup(task2_dataset, tmp_path)
    change, name, text = SUBMIT_FILES[case]
    change(pred)
    line = refuse(submit.main, ["--task", "1", "--predictions", pred, "--test-set", test_dir, "--group", "g",
                                "--out", out], names=[pred / name], watch=[out, pred, test_dir])
    assert text in line


def test_submit_lists_several_problems_before_one_error_line(refuse, task2_dataset, tmp_path, capsys):
    import submit

    test_dir, pred, out = _setup(task2_dataset, tmp_path)
    edit_json(pred / "sub-101.json", lambda o: o.update({"sub-101_0": 5, "sub-101_1": 1.0}))
    line = refuse(submit.main, ["--task", "1", "--predictions", pred, "--test-set", test_dir, "--group", "g",
                                "--out", out], names=[pred], watch=[out, pred, test_dir])
    assert "2 problem(s) found; no submission written" in line
    _, problems = submit.validate_task1(pred, submit.load_task1_mappings(test_dir))
    assert [p.split(": ", 2)[1] for p in problems] == ["segment sub-101_0", "segment sub-101_1"]


def test_submit_refuses_a_task2_test_set_and_task2_flags(refuse, task2_dataset, tmp_path):
    import submit

    _, pred, out = _setup(task2_dataset, tmp_path)
    t2 = task2_dataset / "test_set" / "TASK2_regression"
    line = refuse(submit.main, ["--task", "1", "--predictions", pred, "--test-set", t2, "--group", "g", "--out", out],
                  names=[t2 / "sub-101_mapping.json"], watch=[out, pred])
    assert "no 'stimulus' list" in line
    refuse(submit.main, ["--task", "1", "--predictions", pred, "--test-set", _t1(task2_dataset), "--group", "g",
                         "--target", "mel", "--out", out], names=["--target"], watch=[out, pred])


def test_submit_refuses_a_third_task1_submission(refuse, task2_dataset, tmp_path):
    import submit

    test_dir, pred, out = _setup(task2_dataset, tmp_path)
    argv = ["--task", "1", "--predictions", pred, "--test-set", test_dir, "--group", "g", "--out", out]
    for _ in range(2):
        assert submit.main([str(a) for a in argv]) == 0
    line = refuse(submit.main, argv, names=[out], watch=[out, pred, test_dir])
    assert "Task 1 submissions 1 and 2 for group g already exist" in line


# --------------------------------------------------------------------------- evaluation.task1
def _zip(pred: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(pred.glob("*.json")):
            archive.writestr(file.name, file.read_text())
    return path


@pytest.mark.parametrize("name", ["submission.zip", "task_2_group_g_submission_1.zip",
                                  "task_1_group_g_submission_3.zip", "task_1_group_g_submission_1.ZIP",
                                  "task_1_group_g!_submission_1.zip"])
def test_scorer_refuses_a_wrong_zip_name(name, refuse, task2_dataset, tmp_path):
    from evaluation.task1 import main

    _, pred, _ = _setup(task2_dataset, tmp_path)
    bad = _zip(pred, tmp_path / "zips" / name)
    labels = task2_dataset / "test_set" / "labels_task1"
    line = refuse(main, ["--predictions", bad, "--labels", labels, "--out", tmp_path / "r" / "report.json"],
                  names=[bad], watch=[tmp_path / "r", tmp_path / "zips"])
    assert "task_1_group_<name>_submission_<n>.zip" in line


SCORER_PRED = {
    "float": (_set(1.0), "1.0 is a float"),
    "index_5": (_set(5), "index 5 is out of range"),
    "boolean": (_set(False), "False is a boolean"),
}


@pytest.mark.parametrize("case", list(SCORER_PRED))
def test_scorer_refuses_bad_values_in_a_zip(case, refuse, task2_dataset, tmp_path):
    from evaluation.task1 import main

    _, pred, _ = _setup(task2_dataset, tmp_path)
    change, text = SCORER_PRED[case]
    edit_json(pred / "sub-102.json", change)
    good = _zip(pred, tmp_path / "zips" / "task_1_group_g_submission_1.zip")
    line = refuse(main, ["--predictions", good, "--labels", task2_dataset / "test_set" / "labels_task1"],
                  names=[f"{good}:sub-102.json"], watch=[tmp_path / "zips"])
    assert text in line


def test_scorer_refuses_bad_labels_flags_and_outputs(refuse, task2_dataset, tmp_path):
    from evaluation.task1 import main

    _, pred, _ = _setup(task2_dataset, tmp_path)
    labels = tmp_path / "labels"
    shutil.copytree(task2_dataset / "test_set" / "labels_task1", labels)
    watch = [pred, labels]
    refuse(main, ["--predictions", pred, "--labels", tmp_path / "nowhere"], names=[tmp_path / "nowhere"], watch=watch)
    refuse(main, ["--predictions", tmp_path / "nopred", "--labels", labels], names=[tmp_path / "nopred"], watch=watch)
    refuse(main, ["--predictions", pred, "--labels", labels, "--candidates", "1"], names=["--candidates"], watch=watch)
    refuse(main, ["--predictions", pred, "--labels", labels, "--alpha", "1.5"], names=["--alpha"], watch=watch)
    refuse(main, ["--predictions", pred, "--labels", labels, "--alpha", "nan"], names=["--alpha"], watch=watch)
    report = tmp_path / "report.json"
    report.write_text("{}")
    refuse(main, ["--predictions", pred, "--labels", labels, "--out", report], names=["--out"],
           watch=watch + [report])
    corrupt = tmp_path / "zips" / "task_1_group_g_submission_1.zip"
    truncate(_zip(pred, corrupt))
    refuse(main, ["--predictions", corrupt, "--labels", labels], names=[corrupt], watch=watch + [corrupt])
    edit_json(labels / "sub-101.json", _set(2.5))
    refuse(main, ["--predictions", pred, "--labels", labels], names=[labels / "sub-101.json"], watch=watch)


# --------------------------------------------------------------------------- task1_match_mismatch.predict
class EnvelopeCosine(torch.nn.Module):
    """Stand-in model: cosine similarity of the channel-mean EEG with each candidate's first band."""

    def __init__(self, value=None):
        super().__init__()
        self.value = value

    def forward(self, eeg, stimuli):
        e = eeg.mean(dim=-1) - eeg.mean(dim=(1, 2))[:, None]  # (batch, T)
        s = stimuli[..., 0] - stimuli[..., 0].mean(dim=-1, keepdim=True)  # (batch, K, T)
        scores = torch.nn.functional.cosine_similarity(e[:, None, :], s, dim=-1)  # (batch, K)
        return scores if self.value is None else torch.full_like(scores, self.value)


@pytest.fixture
def stand_in(monkeypatch):
    """Point predict.load_run at the stand-in model (feature from ``stand_in.feature``)."""
    from task1_match_mismatch import predict

    state = {"feature": "envelope", "value": None}
    monkeypatch.setattr(predict, "load_run", lambda run, checkpoint="best": (
        EnvelopeCosine(state["value"]), {"data": {"feature": state["feature"]}}))
    return state


def _stimulus(test_dir: Path, feature: str = "envelope") -> Path:
    return test_dir / "stimulus" / f"{feature}_chunks_test.npz"


def _first_ids(test_dir: Path) -> tuple[str, str]:
    mapping = json.loads((test_dir / "sub-101_mapping.json").read_text())
    entry = mapping[sorted(mapping)[0]]
    return entry["eeg"], entry["stimulus"][0]


def _eeg(test_dir):
    return test_dir / "preprocessed_eeg" / "sub-101_eeg.npz"


def _set_npz(path_of, key_of, value):
    def change(test_dir):
        key = key_of(test_dir)
        path = path_of(test_dir)
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        arrays[key] = value(arrays[key])
        np.savez(path, **arrays)
        return path
    return change


def _eeg_key(test_dir):
    return _first_ids(test_dir)[0]


def _stim_key(test_dir):
    return _first_ids(test_dir)[1]


def _pickled_eeg(test_dir):
    path = _eeg(test_dir)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays[_eeg_key(test_dir)] = np.array([{"a": 1}, None], dtype=object)
    np.savez(path, **arrays)
    return path


def _drop(path_of, key_of):
    def change(test_dir):
        path = path_of(test_dir)
        edit_npz(path, lambda arrays, first: arrays.pop(key_of(test_dir)))
        return path
    return change


def _mapping_edit(change):
    def apply(test_dir):
        path = test_dir / "sub-101_mapping.json"
        edit_json(path, lambda o: change(o[sorted(o)[0]]))
        return path
    return apply


def _nan_row(a):
    a = a.copy()
    a[7, 0] = np.nan
    return a


PREDICT_CASES = {
    # case: (break the test-set copy -> the path the error line must name, text in the line)
    "no_eeg_file": (lambda d: (_eeg(d).unlink(), _eeg(d))[1], "EEG file not found"),
    "eeg_id_absent": (_drop(_eeg, _eeg_key), "not found (named by sub-101_mapping.json"),
    "stimulus_id_absent": (_drop(_stimulus, _stim_key), "not found (named by sub-101_mapping.json"),
    "eeg_63_channels": (_set_npz(_eeg, _eeg_key, lambda a: a[:, :63]), "found 63 channels"),
    "eeg_transposed": (_set_npz(_eeg, _eeg_key, lambda a: a.T), "looks transposed"),
    "eeg_nan": (_set_npz(_eeg, _eeg_key, _nan_row), "contains NaN or Inf"),
    "eeg_constant": (_set_npz(_eeg, _eeg_key, lambda a: np.zeros_like(a)), "is constant"),
    "eeg_pickled": (_pickled_eeg, "object array"),
    "stimulus_nan": (_set_npz(_stimulus, _stim_key, _nan_row), "contains NaN or Inf"),
    "stimulus_two_bands": (_set_npz(_stimulus, _stim_key, lambda a: np.concatenate([a, a], 1)), "found 2 columns"),
    "stimulus_short": (_set_npz(_stimulus, _stim_key, lambda a: a[:300]), "has 300 frames, its EEG segment 320"),
    "stimulus_truncated_npz": (lambda d: truncate(_stimulus(d)), "not a readable .npz"),
    "no_stimulus_list": (_mapping_edit(lambda e: e.pop("stimulus")), "no 'stimulus' list"),
    "four_candidates": (_mapping_edit(lambda e: e["stimulus"].pop()),
                        "segment 'sub-101_0' 4 (every segment needs the same number)"),
    "no_eeg_id": (_mapping_edit(lambda e: e.pop("eeg")), "has no 'eeg' id"),
    "no_stimulus_folder": (lambda d: (shutil.rmtree(d / "stimulus"), d / "stimulus")[1], "stimulus folder not found"),
    "no_mapping": (lambda d: ([p.unlink() for p in d.glob("sub-*_mapping.json")], d)[1],
                   "no sub-XXX_mapping.json files"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict_refuses_bad_test_sets(case, refuse, stand_in, task2_dataset, tmp_path):
    from task1_match_mismatch import predict

    test_dir, _, _ = _setup(task2_dataset, tmp_path)
    change, text = PREDICT_CASES[case]
    named = change(test_dir)
    out = tmp_path / "out"
    line = refuse(predict.main, ["--run", tmp_path / "run", "--test-set", test_dir, "--out", out],
                  names=[named], watch=[out, test_dir])
    assert text in line


def test_predict_refuses_a_test_set_without_the_runs_feature(refuse, stand_in, task2_dataset, tmp_path):
    from task1_match_mismatch import predict

    test_dir, _, _ = _setup(task2_dataset, tmp_path)
    _stimulus(test_dir, "mel").unlink()
    stand_in["feature"] = "mel"
    out = tmp_path / "out"
    line = refuse(predict.main, ["--run", tmp_path / "run", "--test-set", test_dir, "--out", out],
                  names=[test_dir / "stimulus"], watch=[out, test_dir])
    assert "for the run's feature (data.feature = mel)" in line and "envelope_chunks_test.npz" in line
    # a mel file with one band does not pass for mel
    shutil.copy(_stimulus(test_dir), _stimulus(test_dir, "mel"))
    line = refuse(predict.main, ["--run", tmp_path / "run", "--test-set", test_dir, "--out", out],
                  names=[_stimulus(test_dir, "mel")], watch=[out, test_dir])
    assert "mel must be (time, 10), found 1 columns" in line


def test_predict_refuses_an_existing_out_bad_flags_and_a_non_finite_model(refuse, stand_in, task2_dataset, tmp_path):
    from task1_match_mismatch import predict

    test_dir = _t1(task2_dataset)
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub-999.json").write_text("{}")  # an earlier prediction (--overwrite replaces only sub-*.json folders)
    refuse(predict.main, ["--run", tmp_path / "run", "--test-set", test_dir, "--out", out], names=["--out"],
           watch=[out, test_dir])
    fresh = tmp_path / "fresh"
    refuse(predict.main, ["--run", tmp_path / "run", "--test-set", test_dir, "--out", fresh, "--seed", "-1"],
           names=["--seed"], watch=[fresh, test_dir])
    refuse(predict.main, ["--run", tmp_path / "run", "--test-set", test_dir, "--out", test_dir / "pred"],
           names=["--out"], watch=[test_dir])
    stand_in["value"] = float("nan")
    refuse(predict.main, ["--run", tmp_path / "run", "--test-set", test_dir, "--out", fresh],
           names=[tmp_path / "run"], watch=[fresh, test_dir])
    stand_in["value"] = None  # --overwrite replaces the folder whole
    assert predict.main([str(a) for a in ["--run", tmp_path / "run", "--test-set", test_dir, "--out", out,
                                          "--overwrite"]]) == 0
    assert sorted(p.name for p in out.iterdir()) == [".eegkit-output", "sub-101.json", "sub-102.json"]


def _checkpoint(run: Path, task: str = "task1", feature: str = "envelope", wrong_weights: bool = False) -> Path:
    """A run folder holding best.pt of an untrained dilated_conv_small model (task, feature, weights as asked)."""
    import yaml

    from task1_match_mismatch.models import build_model
    from task1_match_mismatch.train import check_config
    from util.training import save_checkpoint

    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "task1_match_mismatch" / "configs" /
                          "dilated_conv_small.yaml").read_text())
    cfg = check_config(raw)
    model = build_model(cfg["model"])
    if wrong_weights:
        cfg["model"]["filters"] = 8
    cfg["data"]["feature"] = feature
    save_checkpoint(run / "best.pt", model, cfg, task=task)
    return run / "best.pt"


RUN_CASES = {
    # case: (make the run folder -> the path the line must name, text in the line)
    "no_run_folder": (lambda run: run, "run folder not found"),
    "no_best_pt": (lambda run: (run.mkdir(), run / "best.pt")[1], "checkpoint not found"),
    "task2_checkpoint": (lambda run: _checkpoint(run, task="task2"), "expected a Task 1 match-mismatch one"),
    "weights_do_not_fit": (lambda run: _checkpoint(run, wrong_weights=True), "weights do not fit"),
    "unknown_feature": (lambda run: _checkpoint(run, feature="spikes"), "data.feature must be one of envelope, mel, got 'spikes'"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_predict_refuses_bad_runs(case, refuse, task2_dataset, tmp_path):
    from task1_match_mismatch import predict

    make, text = RUN_CASES[case]
    run = tmp_path / "run"
    named = make(run)
    out = tmp_path / "out"
    line = refuse(predict.main, ["--run", run, "--test-set", _t1(task2_dataset), "--out", out], names=[named],
                  watch=[out, run, _t1(task2_dataset)])
    assert text in line
