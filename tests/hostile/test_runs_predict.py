"""Hostile inputs for predict.py and evaluate.py of both tasks: checkpoints that are not what they
claim, crafted pickles (loaded in-process: weights_only must refuse them before any code runs),
out paths that are inputs/files/non-empty folders, and bad flags. Everything goes through `refuse`.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch

# variant -> words the one line must hold
BAD_CHECKPOINTS = {
    "text_file": "not a readable checkpoint",
    "empty_file": "not a readable checkpoint",
    "truncated": "not a readable checkpoint",
    "folder_named_pt": "is not a file",
    "bare_tensor": "not an eegkit checkpoint",
    "state_dict_only": "not an eegkit checkpoint",
    "old_format": "format",
    "other_task": "checkpoint (model",
    "weights_mismatch": "weights do not fit",
    "crafted_os_system": "refused",
    "crafted_builtins_exec": "refused",
}


def _make_variant(kind: str, good: Path, other_task: Path, folder: Path) -> Path:
    """A checkpoint file of the given kind at folder/best.pt, built from a good one."""
    from util.training import load_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "best.pt"
    if kind == "text_file":
        path.write_text("hello, I am not a checkpoint\n")
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "folder_named_pt":
        path.mkdir()
    elif kind == "bare_tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "state_dict_only":
        torch.save(load_checkpoint(good)["model"], path)
    elif kind == "old_format":
        state = load_checkpoint(good)
        torch.save({**state, "eegkit_checkpoint": 1}, path)
    elif kind == "other_task":
        shutil.copy(other_task, path)
    elif kind == "weights_mismatch":
        state = load_checkpoint(good)
        state["model"] = {name: torch.cat([w, w]) for name, w in state["model"].items()}
        torch.save(state, path)
    elif kind.startswith("crafted_"):
        from tests.hostile.payloads import _payloads

        marker = folder / "MARKER"
        torch.save({"config": {}, "model": _payloads(marker)[kind[len("crafted_"):]]}, path)
    elif kind == "nan_weights":
        state = load_checkpoint(good)
        state["model"] = {name: torch.full_like(w, float("nan")) if w.is_floating_point() else w
                          for name, w in state["model"].items()}
        torch.save(state, path)
    else:
        raise AssertionError(kind)
    return path


@pytest.fixture(scope="module")
def task2_variants(task2_tiny_run, tiny_se_run, tmp_path_factory) -> dict[str, Path]:
    """{kind: run folder whose best.pt is that kind} (config.yaml and log copied from the good run)."""
    root = tmp_path_factory.mktemp("task2_variants")
    out = {}
    for kind in list(BAD_CHECKPOINTS) + ["nan_weights"]:
        run = root / kind
        shutil.copytree(task2_tiny_run, run)
        (run / "best.pt").unlink()
        _make_variant(kind, task2_tiny_run / "best.pt", tiny_se_run / "best.pt", run)
        out[kind] = run
    return out


@pytest.fixture(scope="module")
def se_variants(task2_tiny_run, tiny_se_run, tmp_path_factory) -> dict[str, Path]:
    """{kind: checkpoint path of that kind}."""
    root = tmp_path_factory.mktemp("se_variants")
    return {kind: _make_variant(kind, tiny_se_run / "best.pt", task2_tiny_run / "best.pt", root / kind)
            for kind in list(BAD_CHECKPOINTS) + ["nan_weights"]}


@pytest.fixture(scope="module")
def se_inputs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("se_inputs")
    fs, seconds = 8000, 2.0
    t = np.arange(int(seconds * fs)) / fs
    wav = folder / "mix.wav"
    scipy.io.wavfile.write(wav, fs, (0.2 * np.sin(2 * np.pi * 180 * t)).astype(np.float32))
    npy = folder / "eeg.npy"
    np.save(npy, np.random.default_rng(0).standard_normal((int(seconds * 128), 64)).astype(np.float32))
    return wav, npy


def _t2_predict():
    from task2_regression.predict import main

    return main


def _t2_evaluate():
    from task2_regression.evaluate import main

    return main


def _se_predict():
    from speaker_extraction.predict import main

    return main


def _se_evaluate():
    from speaker_extraction.evaluate import main

    return main


def _markers_absent(path: Path) -> None:
    assert not (path.parent / "MARKER").exists() and not (path / "MARKER").exists(), "the payload ran"


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS) + ["nan_weights"])
def test_task2_predict_refuses_bad_checkpoints(refuse, task2_variants, task2_dataset, tmp_path, kind):
    run, out = task2_variants[kind], tmp_path / "pred"
    words = BAD_CHECKPOINTS.get(kind, "NaN/Inf")
    line = refuse(_t2_predict(), ["--run", run, "--test-set", task2_dataset / "test_set" / "TASK2_regression",
                                  "--out", out], names=["best.pt"], watch=[out, run])
    assert words in line
    _markers_absent(run / "best.pt")


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_task2_evaluate_refuses_bad_checkpoints(refuse, task2_variants, task2_dataset, tmp_path, kind):
    run, out = task2_variants[kind], tmp_path / "within.json"
    line = refuse(_t2_evaluate(), ["--run", run, "--data", task2_dataset, "--out", out, "--segment-s", "5"],
                  names=["best.pt"], watch=[out, run])
    assert BAD_CHECKPOINTS[kind] in line
    _markers_absent(run / "best.pt")


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS) + ["nan_weights"])
def test_se_predict_refuses_bad_checkpoints(refuse, se_variants, se_inputs, tmp_path, kind):
    wav, npy = se_inputs
    ckpt, out = se_variants[kind], tmp_path / "out.wav"
    words = BAD_CHECKPOINTS.get(kind, "NaN/Inf")
    if kind == "folder_named_pt":  # SE --run takes a folder: one without checkpoints
        words = "no best.pt or last.pt"
    line = refuse(_se_predict(), ["--run", ckpt, "--mixture", wav, "--eeg", npy, "--out", out],
                  names=["best.pt"], watch=[tmp_path, ckpt])
    assert words in line
    _markers_absent(ckpt)


@pytest.mark.parametrize("kind", ["text_file", "other_task", "state_dict_only", "crafted_os_system"])
def test_se_evaluate_refuses_bad_checkpoints(refuse, se_variants, kul_dataset, tmp_path, kind):
    ckpt, out = se_variants[kind], tmp_path / "report.json"
    line = refuse(_se_evaluate(), ["--run", ckpt, "--data", kul_dataset, "--out", out, "--no-aad", "--no-progress"],
                  names=["best.pt"], watch=[tmp_path, ckpt])
    assert BAD_CHECKPOINTS[kind] in line
    _markers_absent(ckpt)


# ----------------------------------------------------------------------------- out paths and flags
@pytest.mark.parametrize("case", ["out_not_empty", "out_is_a_file", "out_is_the_test_set", "out_is_the_run",
                                  "out_holds_the_run", "out_read_only", "run_missing", "checkpoint_absent"])
def test_task2_predict_refuses_bad_out_and_run(refuse, task2_tiny_run, task2_dataset, tmp_path, case):
    test_set = task2_dataset / "test_set" / "TASK2_regression"
    run, out, extra, names = task2_tiny_run, tmp_path / "pred", [], ["--out"]
    if case == "out_not_empty":
        out.mkdir()
        (out / "sub-101.json").write_text('{"other": "model"}')
    elif case == "out_is_a_file":
        out = tmp_path / "pred.json"
        out.write_text("{}")
    elif case == "out_is_the_test_set":
        out = test_set
    elif case == "out_is_the_run":
        out = run
    elif case == "out_holds_the_run":
        out, extra = run.parent, ["--overwrite"]
    elif case == "out_read_only":
        out = Path("/sys/eegkit_pred")
    elif case == "run_missing":
        run, names = tmp_path / "no_run", ["no_run"]
    elif case == "checkpoint_absent":
        extra, names = ["--checkpoint", "averaged"], ["averaged.pt"]
    watch = [out] if case in ("out_not_empty", "out_is_a_file") else [tmp_path, test_set / "sub-101_mapping.json"]
    refuse(_t2_predict(), ["--run", run, "--test-set", test_set, "--out", out, *extra], names=names, watch=watch)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-5", "0.1"])
def test_task2_evaluate_refuses_bad_segment_s(refuse, task2_tiny_run, task2_dataset, tmp_path, value):
    out = tmp_path / "within.json"
    refuse(_t2_evaluate(), ["--run", task2_tiny_run, "--data", task2_dataset, "--segment-s", value, "--out", out],
           names=["--segment-s"], watch=[tmp_path])


@pytest.mark.parametrize("case", ["out_exists", "out_is_a_folder", "out_is_the_checkpoint"])
def test_task2_evaluate_refuses_bad_out(refuse, task2_tiny_run, task2_dataset, tmp_path, case):
    out = {"out_exists": tmp_path / "within.json", "out_is_a_folder": tmp_path,
           "out_is_the_checkpoint": task2_tiny_run}[case]
    if case == "out_exists":
        out.write_text('{"mine": 1}')
    refuse(_t2_evaluate(), ["--run", task2_tiny_run, "--data", task2_dataset, "--out", out, "--segment-s", "5"],
           names=["--out"], watch=[tmp_path])


@pytest.mark.parametrize("case", ["out_is_the_mixture", "out_is_the_eeg", "out_exists", "out_is_a_folder",
                                  "out_read_only", "batch_size_0", "mismatch_nan", "device_unknown", "run_missing"])
def test_se_predict_refuses_bad_out_and_flags(refuse, tiny_se_run, se_inputs, tmp_path, case):
    wav, npy = se_inputs
    work = tmp_path / "inputs"
    work.mkdir()
    wav, npy = Path(shutil.copy(wav, work)), Path(shutil.copy(npy, work))
    out, extra, names, run = tmp_path / "out.wav", [], ["--out"], tiny_se_run
    if case == "out_is_the_mixture":
        out = wav
    elif case == "out_is_the_eeg":
        out = npy
    elif case == "out_exists":
        out.write_bytes(b"RIFF older result")
    elif case == "out_is_a_folder":
        out = work
    elif case == "out_read_only":
        out = Path("/sys/eegkit_out.wav")
    elif case == "batch_size_0":
        extra, names = ["--batch-size", "0"], ["--batch-size"]
    elif case == "mismatch_nan":
        extra, names = ["--max-mismatch-s", "nan"], ["--max-mismatch-s"]
    elif case == "device_unknown":
        extra, names = ["--device", "quantum"], ["--device"]
    elif case == "run_missing":
        run, names = tmp_path / "no_run", ["no_run"]
    refuse(_se_predict(), ["--run", run, "--mixture", wav, "--eeg", npy, "--out", out, *extra], names=names,
           watch=[tmp_path])


@pytest.mark.parametrize("case", ["out_exists", "plot_exists", "out_is_a_folder", "batch_size_0", "max_windows_neg",
                                  "threads_neg", "device_unknown"])
def test_se_evaluate_refuses_bad_out_and_flags(refuse, tiny_se_run, kul_dataset, tmp_path, case):
    out, extra, names = tmp_path / "report.json", [], ["--out"]
    if case == "out_exists":
        out.write_text("{}")
    elif case == "plot_exists":
        (tmp_path / "report.png").write_bytes(b"png")
        extra, names = ["--plot", str(tmp_path / "report.png")], ["--plot"]
    elif case == "out_is_a_folder":
        out = tmp_path
    elif case == "batch_size_0":
        extra, names = ["--batch-size", "0"], ["--batch-size"]
    elif case == "max_windows_neg":
        extra, names = ["--max-windows", "-1"], ["--max-windows"]
    elif case == "threads_neg":
        extra, names = ["--threads", "-2"], ["--threads"]
    elif case == "device_unknown":
        extra, names = ["--device", "quantum"], ["--device"]
    refuse(_se_evaluate(), ["--run", tiny_se_run, "--data", kul_dataset, "--out", out, "--no-aad", "--no-progress",
                            *extra], names=names, watch=[tmp_path])


def test_task2_predict_replaces_the_folder_whole(task2_tiny_run, task2_dataset, tmp_path):
    """--overwrite: the old folder's files (another model's) are gone; an interrupted write leaves the old one."""
    from task2_regression import predict
    from util.errors import run_cli

    test_set = task2_dataset / "test_set" / "TASK2_regression"
    out = tmp_path / "pred"
    out.mkdir()
    (out / "sub-999.json").write_text('{"from": "another model"}')
    with pytest.raises(SystemExit) as done:
        run_cli(predict.main, ["--run", str(task2_tiny_run), "--test-set", str(test_set), "--out", str(out),
                               "--overwrite"])
    assert done.value.code == 0
    assert sorted(p.name for p in out.iterdir()) == [".eegkit-output", "sub-101.json", "sub-102.json"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    subjects = predict.predict_test_set(task2_tiny_run, test_set, progress=False)
    real_dump = predict.atomic_write_json
    calls = []

    def dies_on_second(path, obj, indent=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_dump(path, obj, indent)

    predict.atomic_write_json = dies_on_second
    try:
        with pytest.raises(KeyboardInterrupt):
            predict.write_predictions({s: {k: v + 1 for k, v in seg.items()} for s, seg in subjects.items()}, out)
    finally:
        predict.atomic_write_json = real_dump
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old folder, untouched
    assert not list(tmp_path.glob(".pred.*"))  # and no temporary sibling (or lock file) left
