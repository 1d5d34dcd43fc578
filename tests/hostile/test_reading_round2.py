"""Hostile reading, round 2 (issue 20, items 3 and 4): what an independent battery still broke in the readers.

Every case breaks one input file of a small valid set and checks the harness's four promises
(`refuse`: exit 2, no traceback, one line naming the file or flag, nothing changed under the watched
inputs and outputs):

- npz members that are encrypted, deflate64-compressed, or whose ``.npy`` header declares a shape
  that overflows (``2**70``, negative, ``2**63 x 64``), and npz member names given twice;
- strict JSON: a key given twice in one object (predictions, labels, mappings) and a 401-digit
  integer (folder file and zip member);
- zip archives: a member name given twice, an encrypted or deflate64 member;
- ``evaluation.aad``: correlations outside [-1, 1];
- KU Leuven ``.mat``: ``attended_track 1.5`` or a MATLAB logical ``true`` (was truncated silently),
  compressed variables that inflate beyond the cap (stopped while inflating), cell arrays whose
  header claims more cells than the file holds, a file beyond the cap;
- ``.npy`` inputs whose headers overflow (split_data, ``speaker_extraction.predict --eeg``).
"""
from __future__ import annotations

import io
import json
import shutil
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from data_faults import copy_test_set, kul_copy, labels_copy, last_subject, t2_file, task2_copy
from util import inputs
from util.errors import EEGKitError

BIG_INT = "1" * 401


# --------------------------------------------------------------------------- builders
def npy_bytes(shape, descr: str = "<f4", data: bytes = b"") -> bytes:
    """An ``.npy`` file whose header says ``shape`` (written as text: any integers, also negative or huge)."""
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


SHAPES = {"shape_2_70": (f"({2 ** 70}, 64)", "beyond the 2 GiB cap"),
          "shape_negative": ("(-1920, 64)", "negative dimension"),
          "shape_2_63_x_64": (f"({2 ** 63}, 64)", "beyond the 2 GiB cap")}


def zip_members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def write_zip(path: Path, members, compression=zipfile.ZIP_DEFLATED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about a duplicate name: that is the point
        with zipfile.ZipFile(path, "w", compression=compression) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def patch_member(path: Path, name: str, flag_bits: int = 0, method: int | None = None) -> Path:
    """Set general-purpose flag bits (1 = encrypted) and/or the compression method (9 = deflate64) of one member,
    in its local header and in the central directory, byte by byte (zipfile cannot write either)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        local = archive.getinfo(name).header_offset
    places = [local + 6]
    position = data.find(b"PK\x01\x02")
    while position >= 0:
        length = struct.unpack("<H", data[position + 28:position + 30])[0]
        if data[position + 46:position + 46 + length] == name.encode():
            places.append(position + 8)
        position = data.find(b"PK\x01\x02", position + 4)
    assert len(places) == 2, "member not found in both headers"
    for flags_at in places:
        flags = struct.unpack("<H", data[flags_at:flags_at + 2])[0] | flag_bits
        data[flags_at:flags_at + 2] = struct.pack("<H", flags)
        if method is not None:
            data[flags_at + 2:flags_at + 4] = struct.pack("<H", method)
    path.write_bytes(bytes(data))
    return path


def dup_first_key(path: Path) -> str:
    """Write the first key of a JSON object file a second time (same value) at the front; returns the key."""
    text = path.read_text()
    obj = json.loads(text)
    key = next(iter(obj))
    path.write_text("{" + json.dumps(key) + ": " + json.dumps(obj[key]) + ", " + text.lstrip()[1:])
    return key


def big_int(path: Path) -> Path:
    """Put a 401-digit integer as the first number of the first segment."""
    text = path.read_text()
    assert "[[" in text
    path.write_text(text.replace("[[", f"[[{BIG_INT}, ", 1))
    return path


# --------------------------------------------------------------------------- evaluation.task2
def _task2_scorer(refuse, pred_arg, labels, out, names, watch):
    from evaluation.task2 import main

    return refuse(main, ["--predictions", pred_arg, "--labels", labels, "--out", out / "report.json"],
                  names=names, watch=watch)


@pytest.mark.parametrize("which", ["predictions", "labels"])
def test_task2_scorer_refuses_a_duplicate_json_key(which, refuse, task2_dataset, tmp_path):
    labels, pred = labels_copy(task2_dataset, tmp_path)
    bad = sorted((pred if which == "predictions" else labels).glob("*.json"))[0]
    key = dup_first_key(bad)
    line = _task2_scorer(refuse, pred, labels, tmp_path / "out", [bad], [tmp_path])
    assert f"key '{key}' appears twice" in line


def test_task2_scorer_refuses_a_401_digit_integer(refuse, task2_dataset, tmp_path):
    labels, pred = labels_copy(task2_dataset, tmp_path)
    bad = big_int(sorted(pred.glob("*.json"))[0])
    line = _task2_scorer(refuse, pred, labels, tmp_path / "out", [bad], [tmp_path])
    assert "(401 digits) is beyond the 64-bit range" in line


def _pred_zip(pred: Path, path: Path, extra=()) -> Path:
    return write_zip(path, [(f.name, f.read_bytes()) for f in sorted(pred.glob("*.json"))] + list(extra))


ZIP_CASES = {
    # case: (break(zip path, first member name), the text the message must hold)
    "duplicate_member": (lambda z, n: write_zip(z, zip_members(z) + [zip_members(z)[0]]), "appears twice"),
    "encrypted_member": (lambda z, n: patch_member(z, n, flag_bits=0x1), "encrypted zip member"),
    "deflate64_member": (lambda z, n: patch_member(z, n, method=9), "compressed with deflate64"),
    "member_duplicate_key": (None, "appears twice in one JSON object"),
    "member_401_digits": (None, "(401 digits) is beyond the 64-bit range"),
}


@pytest.mark.parametrize("case", list(ZIP_CASES))
def test_task2_scorer_refuses_hostile_zip_members(case, refuse, task2_dataset, tmp_path):
    labels, pred = labels_copy(task2_dataset, tmp_path)
    first = sorted(pred.glob("*.json"))[0]
    if case == "member_duplicate_key":
        dup_first_key(first)
    elif case == "member_401_digits":
        big_int(first)
    submission = _pred_zip(pred, tmp_path / "submission.zip")
    shutil.rmtree(pred)
    change, text = ZIP_CASES[case]
    if change is not None:
        change(submission, first.name)
    line = _task2_scorer(refuse, submission, labels, tmp_path / "out", [submission], [tmp_path])
    assert text in line


# --------------------------------------------------------------------------- submit.py
def _submit(refuse, pred, test_dir, out, names, watch):
    import submit

    return refuse(submit.main, ["--task", "2", "--predictions", pred, "--test-set", test_dir, "--group", "g",
                                "--out", out], names=names, watch=watch)


@pytest.mark.parametrize("case", ["prediction_duplicate_key", "prediction_401_digits", "mapping_duplicate_key"])
def test_submit_refuses_strict_json_faults(case, refuse, task2_dataset, tmp_path, capsys):
    test_dir = copy_test_set(task2_dataset, tmp_path)
    _, pred = labels_copy(task2_dataset, tmp_path)
    if case == "mapping_duplicate_key":
        bad = sorted(test_dir.glob("sub-*_mapping.json"))[0]
        dup_first_key(bad)
        names = [bad]
    else:
        bad = sorted(pred.glob("*.json"))[0]
        dup_first_key(bad) if case == "prediction_duplicate_key" else big_int(bad)
        names = [pred]  # submit lists each problem (naming the file), then one line naming the folder
    _submit(refuse, pred, test_dir, tmp_path / "submissions", names, [tmp_path])
    if case != "mapping_duplicate_key":
        import submit

        _, problems = submit.validate(pred, submit.load_mappings(test_dir))
        text = "appears twice" if case == "prediction_duplicate_key" else "(401 digits)"
        assert any(str(bad) in p and text in p for p in problems), problems


# --------------------------------------------------------------------------- task2_regression.predict
def _test_set_npz(task2_dataset, tmp_path):
    test_dir = copy_test_set(task2_dataset, tmp_path)
    mapping, npz = last_subject(test_dir)
    return test_dir, mapping, npz


def _crafted_first(npz: Path, shape_text: str) -> str:
    members = zip_members(npz)
    members[0] = (members[0][0], npy_bytes(shape_text))
    write_zip(npz, members, zipfile.ZIP_STORED)
    return members[0][0][:-4]


NPZ_CASES = {
    # case: (break(npz path) -> None, the text the message must hold)
    "encrypted_member": (lambda z: patch_member(z, zip_members(z)[0][0], flag_bits=0x1), "encrypted zip member"),
    "deflate64_member": (lambda z: patch_member(z, zip_members(z)[0][0], method=9), "compressed with deflate64"),
    **{name: (lambda z, s=shape: _crafted_first(z, s), text) for name, (shape, text) in SHAPES.items()},
    "duplicate_member": (lambda z: write_zip(z, zip_members(z) + [zip_members(z)[0]]), "appears twice"),
    "key_with_and_without_npy": (lambda z: write_zip(z, zip_members(z) + [(zip_members(z)[0][0][:-4],
                                                                           zip_members(z)[0][1])]), "appears twice"),
}


@pytest.mark.parametrize("case", list(NPZ_CASES))
def test_task2_predict_refuses_hostile_npz_members(case, refuse, task2_tiny_run, task2_dataset, tmp_path):
    from task2_regression.predict import main

    test_dir, _, npz = _test_set_npz(task2_dataset, tmp_path)
    if case in ("encrypted_member", "deflate64_member"):  # deflated members, as np.savez_compressed writes them
        write_zip(npz, zip_members(npz), zipfile.ZIP_DEFLATED)
    change, text = NPZ_CASES[case]
    change(npz)
    out = tmp_path / "pred"
    line = refuse(main, ["--run", task2_tiny_run, "--test-set", test_dir, "--out", out], names=[npz],
                  watch=[out, test_dir])
    assert text in line


def test_task2_predict_refuses_a_duplicate_key_in_a_mapping(refuse, task2_tiny_run, task2_dataset, tmp_path):
    from task2_regression.predict import main

    test_dir, mapping, _ = _test_set_npz(task2_dataset, tmp_path)
    key = dup_first_key(mapping)
    out = tmp_path / "pred"
    line = refuse(main, ["--run", task2_tiny_run, "--test-set", test_dir, "--out", out], names=[mapping],
                  watch=[out, test_dir])
    assert f"key '{key}' appears twice" in line


def test_task2_predict_refuses_a_per_subject_index_with_a_duplicate_key(refuse, task2_tiny_run, task2_dataset,
                                                                         tmp_path):
    from task2_regression.predict import PER_SUBJECT_FILE, main

    parent = tmp_path / "per_subject"
    shutil.copytree(task2_tiny_run, parent / "sub-001")
    index = parent / PER_SUBJECT_FILE
    index.write_text('{"subjects": {"sub-001": "sub-001"}, "subjects": {"sub-002": "sub-001"}}')
    out = tmp_path / "pred"
    line = refuse(main, ["--run", parent, "--test-set", task2_dataset / "test_set" / "TASK2_regression",
                         "--out", out], names=[index], watch=[out, parent])
    assert "key 'subjects' appears twice" in line


# --------------------------------------------------------------------------- evaluation.aad
GOOD_CSV = "subject,window_s,r_attended,r_unattended\nS1,1,0.2,0.1\nS1,1,0.1,0.05\nS1,5,0.3,0.1\n"


@pytest.mark.parametrize("row, text", [("S1,5,1.5,0.1", "r_attended 1.5 is outside [-1, 1]"),
                                       ("S1,5,0.2,-2", "r_unattended -2 is outside [-1, 1]")])
def test_aad_scorer_refuses_csv_correlations_outside_minus_one_one(row, text, refuse, tmp_path):
    from evaluation.aad import main

    path = tmp_path / "corr.csv"
    path.write_text(GOOD_CSV + row + "\n")
    line = refuse(main, ["--correlations", path, "--out", tmp_path / "out" / "r.json"], names=[path],
                  watch=[tmp_path])
    assert text in line and "line 5" in line


def _aad_npz(path: Path, **changes) -> Path:
    arrays = {"subject": np.array(["S1", "S1", "S1"]), "window_s": np.array([1.0, 1.0, 5.0]),
              "r_attended": np.array([0.2, 0.1, 0.3]), "r_unattended": np.array([0.1, 0.05, 0.1]), **changes}
    np.savez(path, **arrays)
    return path


AAD_NPZ = {
    "r_above_one": (lambda p: _aad_npz(p, r_attended=np.array([0.2, 1.01, 0.3])), "r_attended 1.01 is outside"),
    "duplicate_member": (lambda p: write_zip(p, zip_members(_aad_npz(p)) + [zip_members(p)[2]]), "appears twice"),
    "shape_2_70": (lambda p: write_zip(p, [m if m[0] != "window_s.npy" else (m[0], npy_bytes(f"({2 ** 70},)"))
                                           for m in zip_members(_aad_npz(p))]), "beyond the 2 GiB cap"),
}


@pytest.mark.parametrize("case", list(AAD_NPZ))
def test_aad_scorer_refuses_hostile_npz(case, refuse, tmp_path):
    from evaluation.aad import main

    change, text = AAD_NPZ[case]
    path = tmp_path / "corr.npz"
    change(path)
    line = refuse(main, ["--correlations", path, "--out", tmp_path / "out" / "r.json"], names=[path],
                  watch=[tmp_path])
    assert text in line


# --------------------------------------------------------------------------- KU Leuven .mat (speaker_extraction.train)
def _rewrite_first_trial(path: Path, field: str, value, compress: bool = False, extra: dict | None = None) -> Path:
    """Set one field of the first trial with scipy directly (the kit's writer would refuse or convert it)."""
    import scipy.io

    content = scipy.io.loadmat(str(path))
    if field:
        content["trials"][0, 0][field][0, 0] = value
    scipy.io.savemat(str(path), {"trials": content["trials"], **(extra or {})}, do_compression=compress)
    return path


def _cell_dims_bomb(path: Path) -> Path:
    """A MAT v5 file whose 'trials' cell claims 60000 x 60000 cells in a few hundred bytes."""
    import scipy.io

    cells = np.empty((1, 2), dtype=object)
    cells[0, 0], cells[0, 1] = np.array([[1.0]]), np.array([[2.0]])
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"trials": cells})
    data = bytearray(buffer.getvalue())
    dims_at = 128 + 8 + 16  # variable tag, array-flags element, then the dimensions element
    assert struct.unpack("<II", data[dims_at:dims_at + 8]) == (5, 8)
    data[dims_at + 8:dims_at + 16] = struct.pack("<ii", 60000, 60000)
    path.write_bytes(bytes(data))
    return path


MAT_CASES = {
    # case: (break(S1.mat), the text the message must hold)
    "attended_track_1_5": (lambda p: _rewrite_first_trial(p, "attended_track", np.array([[1.5]])),
                           "attended_track must be a whole number, found 1.5"),
    "attended_track_logical": (lambda p: _rewrite_first_trial(p, "attended_track", np.array([[True]])),
                               "attended_track: expected a number, found a MATLAB logical"),
    "trial_id_2_5": (lambda p: _rewrite_first_trial(p, "TrialID", np.array([[2.5]])),
                     "TrialID must be a whole number, found 2.5"),
    "part_logical_compressed": (lambda p: _rewrite_first_trial(p, "part", np.array([[True]]), compress=True),
                                "part: expected a number, found a MATLAB logical"),
    "cell_dims_bomb": (_cell_dims_bomb, "declares 3600000000 elements"),
}


def _se_train(refuse, root, tmp_path, se_tiny_config, names):
    from speaker_extraction.train import main

    out = tmp_path / "run"
    return refuse(main, ["--config", se_tiny_config, "--data", root, "--out", out, "--no-progress"], names=names,
                  watch=[out, *sorted(root.glob("S*.mat")), root / "stimuli"])


@pytest.mark.parametrize("case", list(MAT_CASES))
def test_se_train_refuses_hostile_mat_values(case, refuse, kul_dataset, se_tiny_config, tmp_path):
    root = kul_copy(kul_dataset, tmp_path)
    change, text = MAT_CASES[case]
    change(root / "S1.mat")
    line = _se_train(refuse, root, tmp_path, se_tiny_config, [root / "S1.mat"])
    assert text in line


def test_se_train_stops_inflating_a_compressed_mat_at_the_cap(refuse, kul_dataset, se_tiny_config, tmp_path,
                                                              monkeypatch):
    root = kul_copy(kul_dataset, tmp_path)
    mat = _rewrite_first_trial(root / "S1.mat", "", None, compress=True,
                               extra={"padding": np.zeros(4_000_000)})  # 32 MB of zeros, ~30 KB compressed
    cap = mat.stat().st_size + (1 << 20)
    monkeypatch.setattr(inputs, "MAX_MAT_BYTES", cap)
    line = _se_train(refuse, root, tmp_path, se_tiny_config, [mat])
    assert f"its variables inflate beyond the {inputs.cap_text(cap)} cap" in line


def test_se_train_refuses_a_mat_file_beyond_the_cap(refuse, kul_dataset, se_tiny_config, tmp_path, monkeypatch):
    root = kul_copy(kul_dataset, tmp_path)
    monkeypatch.setattr(inputs, "MAX_MAT_BYTES", 1 << 20)
    line = _se_train(refuse, root, tmp_path, se_tiny_config, [root / "S1.mat"])
    assert "beyond the 1 MiB cap for a subject file" in line


def test_a_compressed_mat_bomb_is_stopped_while_inflating(tmp_path, monkeypatch):
    """The counting pass stops at the cap: it never inflates the whole variable (measured by zlib's input used)."""
    import scipy.io

    from speaker_extraction import kul_format

    path = tmp_path / "bomb.mat"
    scipy.io.savemat(str(path), {"zeros": np.zeros(16_000_000)}, do_compression=True)  # 128 MB inflated
    monkeypatch.setattr(inputs, "MAX_MAT_BYTES", 4 << 20)
    pieces = []
    original = kul_format._MatBytes._more

    def counted(self, want):
        data = original(self, want)
        pieces.append(len(data))
        return data

    monkeypatch.setattr(kul_format._MatBytes, "_more", counted)
    with pytest.raises(EEGKitError, match="inflate beyond the 4 MiB cap"):
        kul_format.load_mat(path)
    assert sum(pieces) <= (4 << 20) + (1 << 20)  # stopped within one piece of the cap, not at 128 MB


# --------------------------------------------------------------------------- .npy headers: split_data and SE predict
@pytest.mark.parametrize("case", list(SHAPES))
def test_task2_train_refuses_split_data_headers_that_overflow(case, refuse, task2_dataset, task2_tiny_config,
                                                              tmp_path):
    from task2_regression.train import main

    root = task2_copy(task2_dataset, tmp_path)
    bad = t2_file(root, "train", "eeg")
    bad.write_bytes(npy_bytes(SHAPES[case][0], data=b"\0" * 4096))
    out = tmp_path / "run"
    line = refuse(main, ["--config", task2_tiny_config, "--data", root, "--out", out], names=[bad],
                  watch=[out, root])
    assert ("negative dimension" if case == "shape_negative" else "truncated .npy file") in line


@pytest.mark.parametrize("case", list(SHAPES))
def test_se_predict_refuses_eeg_headers_that_overflow(case, refuse, tiny_se_run, tmp_path):
    from speaker_extraction.predict import main

    from data_faults import write_wav

    t = np.arange(16000) / 8000
    wav = write_wav(tmp_path / "mix.wav", 0.2 * np.sin(2 * np.pi * 180 * t), 8000)
    npy = tmp_path / "eeg.npy"
    npy.write_bytes(npy_bytes(SHAPES[case][0], data=b"\0" * 4096))
    line = refuse(main, ["--run", tiny_se_run, "--mixture", wav, "--eeg", npy, "--out", tmp_path / "out.wav"],
                  names=[npy], watch=[tmp_path])
    assert SHAPES[case][1] in line


def test_se_predict_refuses_an_arrays_npz_with_a_duplicate_member(refuse, tiny_se_run, tmp_path):
    from speaker_extraction.predict import main

    path = tmp_path / "in.npz"
    np.savez(path, mixture=np.zeros((1, 8000), np.float32), eeg=np.zeros((1, 128, 64), np.float32))
    write_zip(path, zip_members(path) + [zip_members(path)[0]])
    line = refuse(main, ["--run", tiny_se_run, "--arrays", path, "--out", tmp_path / "out.npz"], names=[path],
                  watch=[tmp_path])
    assert "appears twice" in line


# --------------------------------------------------------------------------- the shared readers themselves
def test_strict_json_keeps_valid_files_and_bounds_integers(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text('{"a": [[9223372036854775807, -9223372036854775808, 1.5e3]], "b": {"a": 1}}')
    assert inputs.read_json(path) == {"a": [[2 ** 63 - 1, -2 ** 63, 1500.0]], "b": {"a": 1}}  # same key, two objects
    path.write_text('{"a": [[9223372036854775808]]}')
    with pytest.raises(EEGKitError, match="beyond the 64-bit range"):
        inputs.read_json(path)
    with pytest.raises(EEGKitError, match=r"x\.json: key 'k' appears twice"):
        inputs.parse_json('{"o": {"k": 1, "k": 2}}', "x.json")


def test_open_regular_refuses_what_is_not_a_regular_file(tmp_path):
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "zero"
    link.symlink_to("/dev/zero")
    for path, text in [(fifo, "is a named pipe (FIFO)"), (link, "is a character device (a link to /dev/zero)"),
                       (tmp_path, "is a folder"), (tmp_path / "none", "file not found")]:
        with pytest.raises(EEGKitError, match=text.replace("(", r"\(").replace(")", r"\)")):
            inputs.open_regular(path)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(EEGKitError, match="2048 bytes, beyond the 1 KiB cap"):
        inputs.read_regular(big, 1024)
    assert inputs.read_regular(big, 4096) == b"x" * 2048


def test_npz_reader_reads_in_one_buffer_and_gz_goes_through_a_spool(tmp_path):
    import gzip

    audio = np.arange(12, dtype=np.float32).reshape(3, 4)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, audio=audio, fs=np.array(8000))
    gz = tmp_path / "s.npz.gz"
    gz.write_bytes(gzip.compress(buffer.getvalue()))
    with inputs.open_gunzipped(gz) as spool, inputs.NpzReader(spool, str(gz)) as npz:
        assert np.array_equal(npz["audio"], audio) and int(npz["fs"]) == 8000
    fortran = tmp_path / "f.npz"
    np.savez(fortran, a=np.asfortranarray(audio))
    with inputs.NpzReader(fortran) as npz:
        assert np.array_equal(npz["a"], audio)


def test_json_parse_memory_is_estimated_before_parsing():
    # 31 bytes, 3 commas (4 values), 1 key, 4 containers: 31 + 4 x 40 + 1 x 200 + 4 x 100
    assert inputs.json_parse_bytes(b'{"a": [[0.5, 1.5], [2.5, 3.5]]}') == 791


def test_task2_scorer_refuses_json_that_would_not_fit_in_memory(refuse, task2_dataset, tmp_path, monkeypatch):
    labels, pred = labels_copy(task2_dataset, tmp_path)
    bad = sorted(pred.glob("*.json"))[0]
    bad.write_bytes(bad.read_bytes() + b" " * 4096)  # the same JSON; the labels stay under the cap
    monkeypatch.setattr(inputs, "MAX_JSON_PARSE_BYTES", inputs.json_parse_bytes(bad.read_bytes()) - 1)
    line = _task2_scorer(refuse, pred, labels, tmp_path / "out", [bad], [tmp_path])
    assert "MiB of memory (one Python object per value), beyond the" in line
