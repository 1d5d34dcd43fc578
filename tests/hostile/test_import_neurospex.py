"""Hostile input to the NeuroSpex importer, to predict's array mode and to train.py on the published model.

Every case: exit 2, one ``error:`` line naming the file or flag, nothing written (the `refuse` fixture).
Importer: the MTWAVE golden checkpoint (the other published model), a truncated file, crafted pickles
(the marker they would create stays absent), one key renamed, one shape changed, a non-finite tensor,
a kit checkpoint, an existing --out. Array mode: a missing key, wrong ranks, a batch mismatch, NaN,
an object array, a window the published model does not take, an existing --out.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.hostile.payloads import write_all
from tests.test_published_neurospex import GOLDEN, TINY_PUBLISHED_TRAIN, tiny_authors_state, write_authors_checkpoint


def _import_main():
    from speaker_extraction.import_checkpoint import main

    return main


def _predict_main():
    from speaker_extraction.predict import main

    return main


def _importing(refuse, source: Path, out: Path, names, extra=()):
    return refuse(_import_main(), ["--from", "neurospex", "--checkpoint", source, "--out", out, *extra],
                  names=names, watch=[out, source])


def test_importer_refuses_the_mtwave_checkpoint(refuse, tmp_path):
    source = GOLDEN / "mtwave_small_checkpoint_40"
    if not source.is_file():
        pytest.skip(f"golden reference files not present at {GOLDEN}")
    line = _importing(refuse, source, tmp_path / "run", [source])
    assert "not a NeuroSpex" in line and "speech_encoder.conv1d_U.weight" in line


def test_importer_refuses_a_truncated_file(refuse, tmp_path):
    whole = tmp_path / "whole.pt"
    write_authors_checkpoint(whole)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    line = _importing(refuse, cut, tmp_path / "run", [cut])
    assert "not a readable checkpoint" in line


@pytest.mark.parametrize("name", ["os_system_zip", "builtins_exec_zip", "os_system_raw", "builtins_open_legacy",
                                  "hidden_in_weights"])
def test_importer_refuses_crafted_pickles(refuse, tmp_path, name):
    made = write_all(tmp_path)
    source, marker = made[name]
    line = _importing(refuse, source, tmp_path / "run", [source])
    assert "refused" in line or "eegkit checkpoint" in line
    assert not marker.exists()


def _edited(tmp_path: Path, edit) -> Path:
    state = tiny_authors_state()
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save({"epoch": 1, "state_dict": state}, path)
    return path


def test_importer_refuses_a_renamed_key(refuse, tmp_path):
    def rename(state):
        state["separator.fusion.0.weights"] = state.pop("separator.fusion.0.weight")

    source = _edited(tmp_path, rename)
    line = _importing(refuse, source, tmp_path / "run", [source])
    assert "'separator.fusion.0.weights'" in line and "(12, 140, 1)" in line


def test_importer_refuses_a_changed_shape(refuse, tmp_path):
    def reshape(state):
        state["separator.cross_attn.1.layernorm.weight"] = torch.ones(65)

    source = _edited(tmp_path, reshape)
    line = _importing(refuse, source, tmp_path / "run", [source])
    assert "'separator.cross_attn.1.layernorm.weight'" in line and "(65,)" in line and "(64,)" in line


def test_importer_refuses_a_non_finite_tensor(refuse, tmp_path):
    def poison(state):
        state["separator.tcn.0.tcn.1.sconv.bias"][3] = float("nan")

    source = _edited(tmp_path, poison)
    line = _importing(refuse, source, tmp_path / "run", [source])
    assert "separator.tcn.0.tcn.1.sconv.bias" in line and "NaN" in line


def test_importer_refuses_a_kit_checkpoint_and_an_existing_out(refuse, tmp_path):
    source = tmp_path / "authors.pt"
    write_authors_checkpoint(source)
    run = tmp_path / "run"
    assert _import_main()(["--from", "neurospex", "--checkpoint", str(source), "--out", str(run)]) == 0
    _importing(refuse, run / "best.pt", tmp_path / "again", [run / "best.pt"])  # already a kit checkpoint
    line = _importing(refuse, source, run, ["--out"])
    assert "--overwrite" in line
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    _importing(refuse, source, tmp_path / "mine", ["--out"], extra=["--overwrite"])  # not an earlier import
    line = _importing(refuse, source, tmp_path / "run2", ["model.H"], extra=["model.H=8"])
    assert "from the checkpoint" in line


@pytest.fixture(scope="module")
def imported_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imported")
    write_authors_checkpoint(folder / "authors.pt")
    _import_main()(["--from", "neurospex", "--checkpoint", str(folder / "authors.pt"), "--out", str(folder / "run")])
    return folder / "run"


def _good_arrays():
    rng = np.random.default_rng(0)
    return {"mixture": rng.standard_normal((2, 32000)).astype(np.float32),
            "eeg": rng.standard_normal((2, 512, 64)).astype(np.float32)}


def _bad_arrays(case: str) -> dict:
    arrays = _good_arrays()
    if case == "missing_eeg":
        del arrays["eeg"]
    elif case == "mixture_1d":
        arrays["mixture"] = arrays["mixture"][0]
    elif case == "eeg_2d":
        arrays["eeg"] = arrays["eeg"][0]
    elif case == "batch_mismatch":
        arrays["mixture"] = arrays["mixture"][:1]
    elif case == "nan":
        arrays["eeg"][1, 100, 5] = np.nan
    elif case == "object":
        arrays["mixture"] = np.array([None, 1.0], dtype=object)
    elif case == "channels":
        arrays["eeg"] = arrays["eeg"][:, :, :32]
    elif case == "window":
        arrays = {"mixture": arrays["mixture"][:, :16000], "eeg": arrays["eeg"][:, :256]}
    return arrays


@pytest.mark.parametrize("case", ["missing_eeg", "mixture_1d", "eeg_2d", "batch_mismatch", "nan", "object", "channels",
                                  "window"])
def test_array_mode_refuses_bad_arrays(refuse, imported_run, tmp_path, case):
    source = tmp_path / "in.npz"
    np.savez(source, **_bad_arrays(case))  # (object arrays are pickled by np.savez: NpzReader refuses them)
    out = tmp_path / "out.npz"
    line = refuse(_predict_main(), ["--run", imported_run, "--arrays", source, "--out", out], names=[source],
                  watch=[out, source, imported_run])
    if case == "window":
        assert "32000" in line and "512" in line


def test_array_mode_refuses_flags_and_an_existing_out(refuse, imported_run, tmp_path):
    source = tmp_path / "in.npz"
    np.savez(source, **_good_arrays())
    out = tmp_path / "out.npz"
    out.write_bytes(b"earlier result")
    refuse(_predict_main(), ["--run", imported_run, "--arrays", source, "--out", out], names=["--out"],
           watch=[out, source])
    fresh = tmp_path / "fresh.npz"
    refuse(_predict_main(), ["--run", imported_run, "--arrays", source, "--out", fresh, "--eeg", source],
           names=["--arrays"], watch=[fresh])
    refuse(_predict_main(), ["--run", imported_run, "--arrays", source, "--out", fresh, "--pcm16"],
           names=["--pcm16"], watch=[fresh])
    refuse(_predict_main(), ["--run", imported_run, "--out", fresh], names=["--mixture"], watch=[fresh])


@pytest.mark.parametrize("override", ["data.window_s=2.0", "train.crop_s=2.0"])
def test_train_refuses_windows_the_published_model_cannot_take(refuse, kul_dataset, tmp_path, override):
    from speaker_extraction.train import main

    config = tmp_path / "published_tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_PUBLISHED_TRAIN))
    out = tmp_path / "run"
    line = refuse(main, ["--config", config, "--data", kul_dataset, "--out", out, "--no-progress", override],
                  names=["neurospex_published"], watch=[out, config])
    assert "512" in line and "32000" in line
