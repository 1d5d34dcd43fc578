"""Hostile input to `task2_regression.import_checkpoint --from mtwave` and to `task2_regression.predict --arrays`.

Every case: exit status 2, one ``error:`` line naming the file, key or flag, nothing written (the `refuse`
fixture of conftest.py compares the watched folders before and after). Crafted pickles never run: the marker
their payload would create stays absent.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_published_cat import TINY, random_state, write_mtwave

REPO = Path(__file__).resolve().parents[2]
NEUROSPEX_GOLDEN = REPO.parent / "shared" / "reference" / "golden" / "neurospex_small_state_dict.pt"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def state() -> dict:
    return random_state(7, **TINY)


@pytest.fixture(scope="module")
def imported_run(state, tmp_path_factory) -> Path:
    from task2_regression import import_checkpoint

    folder = tmp_path_factory.mktemp("hostile_mtwave")
    checkpoint = write_mtwave(folder / "checkpoint_40", state)
    run = folder / "run"
    assert import_checkpoint.main(["--from", "mtwave", "--checkpoint", str(checkpoint), "--out", str(run)]) == 0
    return run


def import_argv(checkpoint, out, *extra) -> list:
    return ["--from", "mtwave", "--checkpoint", checkpoint, "--out", out, *extra]


def refuse_import(refuse, tmp_path, checkpoint, names, *extra) -> str:
    from task2_regression import import_checkpoint

    return refuse(import_checkpoint.main, import_argv(checkpoint, tmp_path / "run", *extra), names=names,
                  watch=[tmp_path])


# --------------------------------------------------------------------------- the importer
def test_a_neurospex_checkpoint_is_refused(refuse, tmp_path):
    if not NEUROSPEX_GOLDEN.is_file():
        pytest.skip(f"golden file not present at {NEUROSPEX_GOLDEN}")
    checkpoint = tmp_path / "neurospex.pt"
    shutil.copyfile(NEUROSPEX_GOLDEN, checkpoint)
    line = refuse_import(refuse, tmp_path, checkpoint, [checkpoint])
    assert "not a CAT-guided WaveNet" in line and "eeg2envblock" in line


def test_another_kit_models_state_dict_is_refused(refuse, tmp_path):
    from task2_regression.models import build_model

    checkpoint = tmp_path / "vlaai.pt"
    torch.save(build_model({"type": "linear"}, {"mel": 10}).state_dict(), checkpoint)
    assert "not a CAT-guided WaveNet" in refuse_import(refuse, tmp_path, checkpoint, [checkpoint])


def test_a_truncated_checkpoint_is_refused(refuse, tmp_path, state):
    whole = write_mtwave(tmp_path / "whole.pt", state).read_bytes()
    checkpoint = tmp_path / "truncated.pt"
    checkpoint.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "whole.pt").unlink()
    assert "truncated" in refuse_import(refuse, tmp_path, checkpoint, [checkpoint])


def test_crafted_pickles_are_refused_and_never_run(refuse, tmp_path, crafted_checkpoints):
    for name, (checkpoint, marker) in crafted_checkpoints.items():
        out = tmp_path / name
        out.mkdir()
        line = refuse_import(refuse, out, checkpoint, [checkpoint])
        assert "refused" in line or "not a readable checkpoint" in line, (name, line)
        assert not marker.exists(), name


def test_a_renamed_key_is_refused_naming_it(refuse, tmp_path, state):
    renamed = dict(state)
    renamed["block2.crossattn1.projection.weights"] = renamed.pop("block2.crossattn1.projection.weight")
    checkpoint = write_mtwave(tmp_path / "renamed.pt", renamed)
    line = refuse_import(refuse, tmp_path, checkpoint, ["block2.crossattn1.projection.weights"])
    assert str(checkpoint) in line and "(64, 256, 3)" in line and "missing" in line


def test_a_changed_shape_is_refused_naming_key_and_shapes(refuse, tmp_path, state):
    changed = dict(state)
    changed["block1.crossattn2.spike_encoder.1.w_ks.reg1.bias"] = torch.zeros(127)
    checkpoint = write_mtwave(tmp_path / "shape.pt", changed, layout="bare")
    line = refuse_import(refuse, tmp_path, checkpoint, ["block1.crossattn2.spike_encoder.1.w_ks.reg1.bias"])
    assert "(127,)" in line and "(128,)" in line and str(checkpoint) in line


def test_a_missing_key_and_a_nan_are_refused(refuse, tmp_path, state):
    fewer = {key: value for key, value in state.items() if key != "block3.crossattn3.layernorm_out.bias"}
    line = refuse_import(refuse, tmp_path, write_mtwave(tmp_path / "fewer.pt", fewer),
                         ["block3.crossattn3.layernorm_out.bias"])
    assert "missing key" in line
    broken = dict(state)
    broken["block1.proj1.weight"] = torch.full_like(broken["block1.proj1.weight"], float("nan"))
    assert "NaN" in refuse_import(refuse, tmp_path, write_mtwave(tmp_path / "nan.pt", broken), ["block1.proj1.weight"])


def test_not_a_state_dict_is_refused(refuse, tmp_path):
    for name, obj in {"tensor": torch.zeros(3), "epoch_only": {"epoch": 40}, "empty": {},
                      "mixed_prefix": {"module.a": torch.zeros(1), "b": torch.zeros(1)}}.items():
        checkpoint = tmp_path / f"{name}.pt"
        torch.save(obj, checkpoint)
        refuse_import(refuse, tmp_path, checkpoint, [checkpoint])


def test_a_kit_checkpoint_is_refused(refuse, tmp_path, imported_run):
    checkpoint = tmp_path / "best.pt"
    shutil.copyfile(imported_run / "best.pt", checkpoint)
    assert "already an eegkit checkpoint" in refuse_import(refuse, tmp_path, checkpoint, [checkpoint])


def test_out_and_flags(refuse, tmp_path, state, imported_run):
    from task2_regression import import_checkpoint

    checkpoint = write_mtwave(tmp_path / "checkpoint_40", state)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    refuse(import_checkpoint.main, import_argv(checkpoint, existing), names=["--out"], watch=[tmp_path])
    line = refuse(import_checkpoint.main, import_argv(checkpoint, existing, "--overwrite"), names=["notes.txt"],
                  watch=[tmp_path])  # --overwrite replaces an earlier import only, never a user's files
    assert "--out" in line
    refuse(import_checkpoint.main, import_argv(checkpoint, tmp_path / "run", "--dilation-cycle", "0"),
           names=["--dilation-cycle"], watch=[tmp_path])
    refuse(import_checkpoint.main, import_argv(tmp_path / "absent.pt", tmp_path / "run"), names=["absent.pt"],
           watch=[tmp_path])
    refuse(import_checkpoint.main, ["--from", "neurospex", "--checkpoint", checkpoint, "--out", tmp_path / "run"],
           names=["--from"], watch=[tmp_path])
    run = tmp_path / "copy"
    shutil.copytree(imported_run, run)
    refuse(import_checkpoint.main, import_argv(checkpoint, run), names=["--out"], watch=[tmp_path])


def test_overwrite_replaces_an_earlier_import(tmp_path, state):
    from task2_regression import import_checkpoint
    from util.training import load_checkpoint

    first = write_mtwave(tmp_path / "first.pt", state)
    second = write_mtwave(tmp_path / "second.pt", random_state(8, **TINY), layout="module")
    run = tmp_path / "run"
    assert import_checkpoint.main(import_argv(str(first), str(run))) == 0
    assert import_checkpoint.main(import_argv(str(second), str(run), "--overwrite")) == 0
    loaded = load_checkpoint(run / "best.pt", task="task2")["model"]
    assert torch.equal(loaded["block1.proj1.weight"], torch.load(second, weights_only=True)["module.block1.proj1.weight"])


# --------------------------------------------------------------------------- predict --arrays
def refuse_arrays(refuse, tmp_path, run, arrays, names, *extra) -> str:
    from task2_regression import predict

    return refuse(predict.main, ["--run", run, "--arrays", arrays, "--out", tmp_path / "out.npz", *extra],
                  names=names, watch=[tmp_path, run])


def test_bad_arrays_are_refused(refuse, tmp_path, imported_run):
    good = np.zeros((2, 1920, 64), dtype=np.float32)
    good[:, ::2] = 1.0
    cases = {
        "no_eeg": ({"x": good}, "no entry 'eeg'"),
        "rank": ({"eeg": good[0]}, "(batch, time, 64)"),
        "channels": ({"eeg": good[:, :, :32]}, "32 channels"),
        "transposed": ({"eeg": good.transpose(0, 2, 1).copy()}, "transposed"),
        "nan": ({"eeg": np.where(np.arange(64) == 5, np.nan, good).astype(np.float32)}, "NaN"),
        "length": ({"eeg": good[:, :640]}, "needs exactly 1920"),
        "text": ({"eeg": np.array([["a"]])}, "text"),
    }
    for name, (arrays, expected) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        line = refuse_arrays(refuse, tmp_path, imported_run, path, [path])
        assert expected in line, (name, line)


def test_a_pickled_object_array_is_refused_and_never_run(refuse, tmp_path, imported_run):
    import os

    from tests.hostile.payloads import _Reduce

    marker = tmp_path / "marker"
    path = tmp_path / "object.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = _Reduce(os.system, (f"touch {marker}",))
    np.savez(path, eeg=payload)
    assert "object array" in refuse_arrays(refuse, tmp_path, imported_run, path, [path])
    assert not marker.exists()


def test_arrays_flags_and_existing_out(refuse, tmp_path, imported_run):
    from task2_regression import predict

    path = tmp_path / "in.npz"
    np.savez(path, eeg=np.random.default_rng(0).standard_normal((1, 1920, 64)).astype(np.float32))
    out = tmp_path / "out.npz"
    out.write_bytes(b"earlier")
    refuse(predict.main, ["--run", imported_run, "--arrays", path, "--out", out], names=["--out"],
           watch=[tmp_path])
    refuse(predict.main, ["--run", imported_run, "--arrays", path, "--out", tmp_path / "o.npz", "--control",
                          "noise"], names=["--control"], watch=[tmp_path])
    refuse(predict.main, ["--run", imported_run, "--arrays", path, "--test-set", tmp_path, "--out",
                          tmp_path / "o.npz"], names=["--arrays"], watch=[tmp_path])
    refuse(predict.main, ["--run", imported_run, "--arrays", tmp_path / "absent.npz", "--out", tmp_path / "o.npz"],
           names=["absent.npz"], watch=[tmp_path])
