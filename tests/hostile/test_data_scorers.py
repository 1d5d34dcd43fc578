"""Hostile inputs for the scorers and the submission packer: evaluation.task2, submit.py,
evaluation.speaker_extraction and evaluation.aad. Each case breaks one input file of a small valid
set and asserts the harness's four promises (exit 2, no traceback, one line naming the file or
flag, nothing changed under the watched inputs and outputs)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from data_faults import copy_test_set, deep_json, edit_json, labels_copy, truncate, write_wav, zip_bomb
from util import inputs


# --------------------------------------------------------------------------- evaluation.task2
def _first(obj):
    return next(iter(obj))


def _set_value(value):
    def change(obj):
        obj[_first(obj)][5][3] = value
    return change


def _set_segment(value):
    def change(obj):
        obj[_first(obj)] = value
    return change


TASK2_PRED = {
    # case: (how the first prediction file is broken, the text the message must hold)
    "nan": (_set_value(math.nan), "contains NaN or Inf (first: NaN at index (5, 3)"),
    "inf": (_set_value(math.inf), "contains NaN or Inf (first: Inf at index (5, 3)"),
    "boolean": (_set_value(True), "values must be JSON numbers, found booleans"),
    "numeric_string": (_set_value("1.5"), "values must be JSON numbers, found strings"),
    "null": (_set_value(None), "values must be JSON numbers, found null"),
    "object_value": (_set_value({"v": 1}), "values must be JSON numbers, found objects"),
    "ragged": (lambda o: o[_first(o)][7].pop(), "ragged lists"),
    "eight_bands": (lambda o: o.update({k: [row[:8] for row in v] for k, v in o.items()}),
                    "expected 10 bands per frame"),
    "string_segment": (_set_segment("mel"), "not a numeric array"),
    "empty_segment": (_set_segment([]), "expected a 2-D (time x bands) array"),
    "three_d": (lambda o: o.update({_first(o): [[[0.0] * 10]] * 4}), "values must be JSON numbers, found lists"),
}


@pytest.mark.parametrize("case", list(TASK2_PRED))
def test_task2_scorer_refuses_bad_prediction_values(case, refuse, task2_dataset, tmp_path):
    from evaluation.task2 import main

    labels, pred = labels_copy(task2_dataset, tmp_path)
    change, text = TASK2_PRED[case]
    bad = edit_json(sorted(pred.glob("*.json"))[0], change)
    out = tmp_path / "out"
    line = refuse(main, ["--predictions", pred, "--labels", labels, "--out", out / "report.json"],
                  names=[bad], watch=[out, pred, labels])
    assert text in line


def _write_text(text: bytes | str):
    def change(path):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return change


TASK2_FILES = {
    "deep_json": (_write_text(deep_json()), "JSON nested too deeply"),
    "malformed_json": (_write_text('{"a": [1, 2,'), "invalid JSON"),
    "not_utf8": (_write_text(b'{"\xff\xfe": 1}'), "not UTF-8 text"),
    "top_level_list": (_write_text("[1, 2, 3]"), "expected a JSON object"),
    "empty_file": (_write_text(b""), "empty file"),
}


@pytest.mark.parametrize("case", list(TASK2_FILES))
@pytest.mark.parametrize("which", ["predictions", "labels"])
def test_task2_scorer_refuses_bad_json_files(case, which, refuse, task2_dataset, tmp_path):
    from evaluation.task2 import main

    labels, pred = labels_copy(task2_dataset, tmp_path)
    change, text = TASK2_FILES[case]
    bad = sorted((pred if which == "predictions" else labels).glob("*.json"))[0]
    change(bad)
    out = tmp_path / "out"
    line = refuse(main, ["--predictions", pred, "--labels", labels, "--out", out / "report.json"],
                  names=[bad], watch=[out, pred, labels])
    assert text in line


def test_task2_scorer_refuses_an_empty_predictions_folder(refuse, task2_dataset, tmp_path):
    from evaluation.task2 import main

    labels, pred = labels_copy(task2_dataset, tmp_path)
    for path in pred.glob("*.json"):
        path.unlink()
    out = tmp_path / "out"
    refuse(main, ["--predictions", pred, "--labels", labels, "--out", out / "r.json"], names=[pred],
           watch=[out, pred, labels])


def test_task2_scorer_refuses_a_segment_id_in_two_files(refuse, task2_dataset, tmp_path):
    from evaluation.task2 import main

    labels, pred = labels_copy(task2_dataset, tmp_path)
    first, second = sorted(pred.glob("*.json"))[:2]
    obj = json.loads(first.read_text())
    edit_json(second, lambda o: o.update({_first(obj): obj[_first(obj)]}))
    out = tmp_path / "out"
    line = refuse(main, ["--predictions", pred, "--labels", labels, "--out", out / "r.json"], names=[second],
                  watch=[out, pred, labels])
    assert "also appears in" in line


def _zip_of(pred, path, extra=None):
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(pred.glob("*.json")):
            archive.writestr(file.name, file.read_bytes())
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("case", ["member_bomb", "total_cap", "not_a_zip", "no_json_member", "deep_member"])
def test_task2_scorer_refuses_hostile_submission_zips(case, refuse, task2_dataset, tmp_path, monkeypatch):
    from evaluation.task2 import main

    labels, pred = labels_copy(task2_dataset, tmp_path)
    submission = tmp_path / "sub.zip"
    if case == "member_bomb":  # 4 MiB of spaces, ~4 KiB on disk; cap lowered to 1 MiB for speed
        monkeypatch.setattr(inputs, "MAX_JSON_BYTES", 1 << 20)
        zip_bomb(submission, "sub-101.json", 4 << 20)
        assert submission.stat().st_size < 20_000
        text = "beyond the 1 MiB cap"
    elif case == "total_cap":
        monkeypatch.setattr(inputs, "MAX_ZIP_TOTAL_BYTES", 1024)
        _zip_of(pred, submission)
        text = "beyond the 1 KiB cap for a whole zip"
    elif case == "not_a_zip":
        submission.write_bytes(b"PK\x03\x04 this is not really a zip")
        text = "not a folder nor a valid zip file"
    elif case == "no_json_member":
        import zipfile

        with zipfile.ZipFile(submission, "w") as archive:
            archive.writestr("readme.txt", "hello")
        text = "no .json files in this zip"
    else:
        _zip_of(pred, submission, {"zz.json": deep_json()})
        text = "JSON nested too deeply"
    out = tmp_path / "out"
    line = refuse(main, ["--predictions", submission, "--labels", labels, "--out", out / "r.json"],
                  names=[submission], watch=[out, submission, labels])
    assert text in line


# --------------------------------------------------------------------------- submit.py
SUBMIT_PRED = {
    "boolean": (_set_value(False), "found booleans"),
    "numeric_string": (_set_value("0.25"), "found strings"),
    "null": (_set_value(None), "found null"),
    "nan": (_set_value(math.nan), "contains NaN or Inf"),
    "inf": (_set_value(-math.inf), "contains NaN or Inf"),
    "transposed": (lambda o: o.update({_first(o): np.array(o[_first(o)]).T.tolist()}), "transposed"),
    "short": (lambda o: o.update({_first(o): o[_first(o)][:100]}), "shape (100, 10)"),
    "eight_bands": (lambda o: o.update({_first(o): [row[:8] for row in o[_first(o)]]}), "shape (1920, 8)"),
    "unknown_id": (lambda o: o.update({"sub-999_0": o[_first(o)]}), "unknown id"),
    "missing_id": (lambda o: o.pop(_first(o)), "no prediction"),
}


def _submit_setup(task2_dataset, tmp_path):
    test_dir = copy_test_set(task2_dataset, tmp_path)
    _, pred = labels_copy(task2_dataset, tmp_path)  # the labels are valid 1920 x 10 predictions
    return test_dir, pred, tmp_path / "submissions"


@pytest.mark.parametrize("case", list(SUBMIT_PRED))
def test_submit_refuses_bad_prediction_values(case, refuse, task2_dataset, tmp_path):
    import submit

    test_dir, pred, out = _submit_setup(task2_dataset, tmp_path)
    change, text = SUBMIT_PRED[case]
    edit_json(sorted(pred.glob("*.json"))[0], change)
    refuse(submit.main, ["--task", "2", "--predictions", pred, "--test-set", test_dir, "--group", "g", "--out", out],
           names=[pred], watch=[out, pred, test_dir])
    # the problem list printed before the error line names the file and says what is wrong
    _, problems = submit.validate(pred, submit.load_mappings(test_dir))
    assert len(problems) == 1 and text in problems[0] and ".json" in problems[0], problems


@pytest.mark.parametrize("case", list(TASK2_FILES))
def test_submit_refuses_bad_prediction_files(case, refuse, task2_dataset, tmp_path):
    import submit

    test_dir, pred, out = _submit_setup(task2_dataset, tmp_path)
    change, _ = TASK2_FILES[case]
    change(sorted(pred.glob("*.json"))[0])
    refuse(submit.main, ["--task", "2", "--predictions", pred, "--test-set", test_dir, "--group", "g", "--out", out],
           names=[pred], watch=[out, pred, test_dir])


@pytest.mark.parametrize("case", ["deep_json", "malformed_json", "top_level_list", "not_utf8"])
def test_submit_refuses_bad_mapping_files(case, refuse, task2_dataset, tmp_path):
    import submit

    test_dir, pred, out = _submit_setup(task2_dataset, tmp_path)
    mapping = sorted(test_dir.glob("sub-*_mapping.json"))[0]
    TASK2_FILES[case][0](mapping)
    line = refuse(submit.main, ["--task", "2", "--predictions", pred, "--test-set", test_dir, "--group", "g",
                                "--out", out], names=[mapping], watch=[out, pred, test_dir])
    assert TASK2_FILES[case][1] in line


def test_submit_refuses_a_prediction_file_beyond_the_json_cap(refuse, task2_dataset, tmp_path, monkeypatch):
    import submit

    test_dir, pred, out = _submit_setup(task2_dataset, tmp_path)
    monkeypatch.setattr(inputs, "MAX_JSON_BYTES", 4096)
    refuse(submit.main, ["--task", "2", "--predictions", pred, "--test-set", test_dir, "--group", "g", "--out", out],
           names=[pred], watch=[out, pred, test_dir])


# --------------------------------------------------------------------------- evaluation.speaker_extraction
FS = 8000


def _tone(seconds=1.0, freq=440.0, phase=0.0):
    t = np.arange(int(seconds * FS)) / FS
    return 0.3 * np.sin(2 * np.pi * freq * t + phase) + 0.05 * np.sin(2 * np.pi * 97 * t)


def _se_folders(tmp_path):
    folders = {name: tmp_path / name for name in ("est", "ref", "mix", "inter")}
    for folder in folders.values():
        folder.mkdir()
    for name in ("a.wav", "b.wav"):
        write_wav(folders["ref"] / name, _tone(), FS)
        write_wav(folders["inter"] / name, _tone(freq=300.0), FS)
        write_wav(folders["mix"] / name, _tone() + _tone(freq=300.0), FS)
        write_wav(folders["est"] / name, _tone(phase=0.1), FS)
    return folders


def _stereo(folder):
    path = folder / "a.wav"
    write_wav(path, np.stack([_tone(), _tone()], axis=1), FS)
    return path


SE_CASES = {
    # case: (break(folders) -> the offending path, the text the message must hold)
    "empty_estimates": (lambda f: ([p.unlink() for p in f["est"].glob("*.wav")], f["est"])[1], "no .wav files"),
    "stereo_estimate": (lambda f: _stereo(f["est"]), "expected mono audio, found 2 channels"),
    "stereo_reference": (lambda f: _stereo(f["ref"]), "expected mono audio, found 2 channels"),
    "truncated_estimate": (lambda f: truncate(f["est"] / "a.wav", 0.6), "truncated or damaged wav"),
    "header_only": (lambda f: truncate(f["est"] / "b.wav", 0.002), "cannot read audio"),
    "garbage_wav": (lambda f: ((f["mix"] / "a.wav").write_bytes(b"RIFF....WAVEjunk"), f["mix"] / "a.wav")[1],
                    "truncated or damaged wav"),
    "empty_wav": (lambda f: ((f["ref"] / "b.wav").write_bytes(b""), f["ref"] / "b.wav")[1], "empty file"),
    "nan_estimate": (lambda f: write_wav(f["est"] / "a.wav", np.r_[_tone()[:100], np.nan, _tone()[101:]], FS,
                                         "float32"), "contains NaN or Inf (first: NaN at index 100)"),
    "inf_reference": (lambda f: write_wav(f["ref"] / "a.wav", np.r_[np.inf, _tone()[1:]], FS, "float32"),
                      "first: Inf at index 0"),
    "silent_reference": (lambda f: write_wav(f["ref"] / "b.wav", np.zeros(FS), FS), "audio is silent"),
    "silent_mixture": (lambda f: write_wav(f["mix"] / "a.wav", np.zeros(FS), FS), "audio is silent"),
    "length_mismatch": (lambda f: (write_wav(f["est"] / "a.wav", _tone(0.9), FS), f["est"] / "a.wav")[1],
                        "lengths differ"),
    "rate_mismatch": (lambda f: (write_wav(f["est"] / "b.wav", _tone(), 16000), f["est"] / "b.wav")[1],
                      "sampling rates differ"),
    "missing_reference": (lambda f: ((f["ref"] / "b.wav").unlink(), f["ref"])[1], "no reference for estimate(s) b.wav"),
    "extra_reference": (lambda f: ((f["est"] / "b.wav").unlink(), f["est"])[1], "no estimate for b.wav"),
    "silent_interferer": (lambda f: write_wav(f["inter"] / "a.wav", np.zeros(FS), FS), "audio is silent"),
}


@pytest.mark.parametrize("case", list(SE_CASES))
def test_speaker_extraction_scorer_refuses_bad_wavs(case, refuse, tmp_path):
    from evaluation.speaker_extraction import main

    folders = _se_folders(tmp_path)
    change, text = SE_CASES[case]
    bad = change(folders)
    out = tmp_path / "out"
    line = refuse(main, ["--estimates", folders["est"], "--references", folders["ref"], "--mixtures", folders["mix"],
                         "--interferers", folders["inter"], "--out", out / "report.json", "--no-progress"],
                  names=[bad], watch=[out, *folders.values()])
    assert text in line


# --------------------------------------------------------------------------- evaluation.aad
GOOD_CSV = "subject,window_s,r_attended,r_unattended\nS1,1,0.2,0.1\nS1,1,0.1,0.05\nS1,5,0.3,0.1\n"

AAD_CSV = {
    "nan_score": (GOOD_CSV + "S1,5,nan,0.1\n", "r_attended 'nan' is not finite"),
    "inf_window": (GOOD_CSV + "S1,inf,0.1,0.1\n", "window_s 'inf' is not finite"),
    "text_score": (GOOD_CSV + "S1,5,high,0.1\n", "r_attended 'high' is not a number"),
    "negative_window": (GOOD_CSV + "S1,-5,0.1,0.1\n", "must be > 0"),
    "missing_column": ("subject,window_s,r_attended\nS1,1,0.2\n", "missing column 'r_unattended'"),
    "duplicated_column": ("subject,subject,window_s,r_attended,r_unattended\n", "duplicated column"),
    "field_count": (GOOD_CSV + "S1,5,0.1\n", "3 fields, the header has 4"),
    "empty_file": ("", "empty file"),
    "header_only": ("subject,window_s,r_attended,r_unattended\n", "no data rows"),
    "empty_subject": (GOOD_CSV + ",5,0.1,0.2\n", "empty subject"),
}


@pytest.mark.parametrize("case", list(AAD_CSV))
def test_aad_scorer_refuses_bad_csv(case, refuse, tmp_path):
    from evaluation.aad import main

    text, expected = AAD_CSV[case]
    path = tmp_path / "corr.csv"
    path.write_text(text)
    out = tmp_path / "out"
    line = refuse(main, ["--correlations", path, "--out", out / "report.json"], names=[path], watch=[out, path])
    assert expected in line


def _npz_arrays(**changes):
    arrays = {"subject": np.array(["S1", "S1", "S1"]), "window_s": np.array([1.0, 1.0, 5.0]),
              "r_attended": np.array([0.2, 0.1, 0.3]), "r_unattended": np.array([0.1, 0.05, 0.1])}
    arrays.update(changes)
    return arrays


AAD_NPZ = {
    "object_subject": (_npz_arrays(subject=np.array(["S1", "S1", None], dtype=object)), "object array"),
    "two_d_scores": (_npz_arrays(r_attended=np.zeros((3, 2))), "must be 1-D"),
    "unequal_lengths": (_npz_arrays(r_unattended=np.array([0.1, 0.2])), "arrays of unequal length"),
    "string_scores": (_npz_arrays(r_attended=np.array(["a", "b", "c"])), "must be numeric"),
    "nan_scores": (_npz_arrays(r_unattended=np.array([0.1, np.nan, 0.2])), "r_unattended at index 1 is not finite"),
    "numeric_subject": (_npz_arrays(subject=np.array([1, 1, 1])), "must be a unicode string array"),
    "missing_key": ({"subject": np.array(["S1"])}, "missing array 'window_s'"),
}


@pytest.mark.parametrize("case", list(AAD_NPZ))
def test_aad_scorer_refuses_bad_npz(case, refuse, tmp_path):
    from evaluation.aad import main

    arrays, expected = AAD_NPZ[case]
    path = tmp_path / "corr.npz"
    np.savez(path, **arrays)
    out = tmp_path / "out"
    line = refuse(main, ["--correlations", path, "--out", out / "report.json"], names=[path], watch=[out, path])
    assert expected in line


@pytest.mark.parametrize("flag, value", [("--p0", "nan"), ("--comfort", "1.5"), ("--alpha", "0"), ("--n-min", "1")])
def test_aad_scorer_refuses_bad_parameters(flag, value, refuse, tmp_path):
    from evaluation.aad import main

    path = tmp_path / "corr.csv"
    path.write_text(GOOD_CSV)
    out = tmp_path / "out"
    refuse(main, ["--correlations", path, "--out", out / "report.json", flag, value], names=[flag],
           watch=[out, path])


def test_aad_scorer_refuses_an_npz_member_beyond_the_cap(refuse, tmp_path, monkeypatch):
    from evaluation.aad import main

    monkeypatch.setattr(inputs, "MAX_INFLATED_BYTES", 64 * 1024)
    path = tmp_path / "corr.npz"
    n = 20_000  # 160 kB per float column, beyond the lowered 64 KiB cap
    np.savez_compressed(path, subject=np.array(["S1"] * n), window_s=np.ones(n), r_attended=np.zeros(n),
                        r_unattended=np.zeros(n))
    out = tmp_path / "out"
    line = refuse(main, ["--correlations", path, "--out", out / "report.json"], names=[path], watch=[out, path])
    assert "beyond the 64 KiB cap" in line
