"""Tests of the shared foundation: errors, atomic writes, configs, sharding, training helpers."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from util.atomic import atomic_path, atomic_save_npy, atomic_write_json
from util.config import apply_overrides, load_config
from util.distributed import DistInfo, shard_indices
from util.errors import EEGKitError
from util.training import CSVLogger, EarlyStopping, average_checkpoints, load_checkpoint, save_checkpoint


def test_error_message_is_one_line():
    assert str(EEGKitError("a.npy:\n  bad   channels")) == "a.npy: bad channels"


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"old": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_npy_round_trip(tmp_path):
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npy(tmp_path / "x.npy", array)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), array)


def test_config_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.1\n  epochs: 3\n")
    config = load_config(path, ["train.lr=1e-3", "model.layers=[1, 2]", "train.name=abc"])
    assert config == {"train": {"lr": 1e-3, "epochs": 3, "name": "abc"}, "model": {"layers": [1, 2]}}
    with pytest.raises(EEGKitError, match="expected key=value"):
        apply_overrides({}, ["nonsense"])
    with pytest.raises(EEGKitError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_resolve_fills_defaults_refuses_unknown_keys_and_wrong_types():
    from util.config import resolve

    defaults = {"model": {}, "train": {"lr": 1e-3, "epochs": 5, "betas": [0.9, 0.999], "name": None},
                "data": {"split": {"seed": 0, "protocol": "trial"}}}
    resolved = resolve({"model": {"type": "x", "k": 3}, "train": {"lr": 1, "epochs": 2.0},
                        "data": {"split": {"seed": 4}}}, defaults)
    assert resolved == {"model": {"type": "x", "k": 3}, "train": {"lr": 1.0, "epochs": 2, "betas": [0.9, 0.999],
                                                                  "name": None},
                        "data": {"split": {"seed": 4, "protocol": "trial"}}}
    assert isinstance(resolved["train"]["lr"], float) and isinstance(resolved["train"]["epochs"], int)
    assert defaults["data"]["split"]["seed"] == 0  # defaults are not modified
    with pytest.raises(EEGKitError, match=r"^config: unknown key train.lrr \(did you mean train.lr\?\)$"):
        resolve({"train": {"lrr": 0.5}}, defaults)
    with pytest.raises(EEGKitError, match=r"unknown key data.split.sed \(did you mean data.split.seed\?\)"):
        resolve({"data": {"split": {"sed": 1}}}, defaults)
    with pytest.raises(EEGKitError, match="train.epochs must be an integer, got 'ten'"):
        resolve({"train": {"epochs": "ten"}}, defaults)
    with pytest.raises(EEGKitError, match="train.epochs must be an integer, got 2.5"):
        resolve({"train": {"epochs": 2.5}}, defaults)
    with pytest.raises(EEGKitError, match="model must be a mapping"):
        resolve({"model": "linear"}, defaults)


def test_both_tasks_refuse_unknown_keys_and_bad_model_keys_in_one_line(task2_dataset, tmp_path, capsys):
    from speaker_extraction.train import resolve_config as se_resolve
    from task2_regression.train import resolve_config as task2_resolve
    from task2_regression.train import main as task2_main
    from util.errors import run_cli

    with pytest.raises(EEGKitError, match="did you mean train.lr"):
        task2_resolve({"model": {"type": "linear"}, "train": {"lrr": 0.5}}, tmp_path)
    with pytest.raises(EEGKitError, match="did you mean data.band"):
        se_resolve({"model": {"type": "neurospex"}, "data": {"eeg_band": [1, 8]}})
    config = tmp_path / "bad_model.yaml"
    config.write_text("model: {type: linear, n_tapz: 3}\n")
    with pytest.raises(SystemExit) as info:
        run_cli(task2_main, ["--config", str(config), "--data", str(task2_dataset), "--out", str(tmp_path / "run")])
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error:")]
    assert info.value.code == 2 and len(err) == 1 and "unknown key model.n_tapz (did you mean model.n_taps?)" in err[0]


def test_shard_indices_partition_and_balance():
    shards = [shard_indices(10, DistInfo(r, 3, r, torch.device("cpu")), epoch=2, seed=1) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]           # padded so every rank steps equally
    assert set(np.concatenate(shards)) == set(range(10))
    single = shard_indices(10, DistInfo(0, 1, 0, torch.device("cpu")), epoch=2, seed=1)
    assert sorted(single) == list(range(10))
    assert not np.array_equal(single, shard_indices(10, DistInfo(0, 1, 0, torch.device("cpu")), epoch=3, seed=1))


def test_early_stopping_counts_patience():
    stopper = EarlyStopping(patience=2, mode="max")
    assert [stopper.step(v) for v in (0.1, 0.3, 0.2, 0.25)] == [True, True, False, False]
    assert stopper.should_stop and stopper.best == 0.3


def test_csv_logger_resume_and_columns(tmp_path):
    log = CSVLogger(tmp_path / "log.csv")
    log.log({"epoch": 1, "train_loss": 1.0})
    log.log({"epoch": 2, "train_loss": 0.5, "val_r": 0.2})
    again = CSVLogger(tmp_path / "log.csv")
    assert [row["epoch"] for row in again.rows] == ["1", "2"]
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == "epoch,train_loss,val_r"


def test_checkpoint_round_trip_and_average(tmp_path):
    model = torch.nn.Linear(2, 1)
    torch.nn.init.constant_(model.weight, 1.0)
    save_checkpoint(tmp_path / "a.pt", model, {"model": {"type": "x"}}, task="task2")
    torch.nn.init.constant_(model.weight, 3.0)
    save_checkpoint(tmp_path / "b.pt", model, {"model": {"type": "x"}}, task="task2")
    assert load_checkpoint(tmp_path / "a.pt")["config"] == {"model": {"type": "x"}}
    average = average_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"])
    assert torch.allclose(average["weight"], torch.full((1, 2), 2.0))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EEGKitError, match="bad.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(EEGKitError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_run_cli_prints_one_line(tmp_path):
    code = "from util.errors import run_cli, EEGKitError\n" \
           "def main(argv):\n    raise EEGKitError('x.npy: expected 64 channels, found 63')\n" \
           "run_cli(main)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                            env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1])})
    assert result.returncode == 2
    assert result.stderr == "error: x.npy: expected 64 channels, found 63\n"


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    path = atomic_write_json(tmp_path / "p.json", [1])
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)


def _tiny_fit(out, train: dict, score):
    """`util.trainer.fit` of a 3->1 linear model on 8 fixed points, task2 defaults + ``train`` overrides."""
    import torch
    from torch import nn

    from util import distributed, trainer
    from util.config import load_defaults, resolve

    config = resolve({"train": {"seed": 0, **train}}, load_defaults("task2_regression/configs/defaults.yaml"))
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))

    def step(model, batch, epoch):
        loss = (model(x[batch["index"]]) - 1).square().mean()
        return loss, {"total": loss}

    train_set = [{"index": i} for i in range(8)]
    info = distributed.DistInfo(0, 1, 0, torch.device("cpu"))
    return trainer.fit(config, out, info, lambda: nn.Linear(3, 1), step, score, train_set, train_set, 4, "score",
                       progress=False, say=lambda m: None, task="task2")


def test_fit_draws_the_curves_after_the_first_and_the_last_epoch_only_when_epochs_are_quick(tmp_path, monkeypatch):
    import csv

    from util import trainer

    drawn = []  # number of logged epochs each time the figure is drawn
    monkeypatch.setattr(trainer, "plot_curves",
                        lambda log, png, title="": drawn.append(len(list(csv.DictReader(open(log))))))
    score = lambda model, val, info: {"score": -float(model.weight.square().sum())}  # noqa: E731
    monkeypatch.setattr(trainer, "PLOT_EVERY_S", 3600.0)
    _tiny_fit(tmp_path / "run", {"epochs": 5, "patience": 10}, score)
    assert drawn == [1, 5]
    monkeypatch.setattr(trainer, "PLOT_EVERY_S", 0.0)  # slow epochs: every epoch is drawn, none twice
    drawn.clear()
    _tiny_fit(tmp_path / "run2", {"epochs": 5, "patience": 10}, score)
    assert drawn == [1, 2, 3, 4, 5]


def test_fit_validates_after_epoch_0_every_nth_epoch_and_the_last_and_patience_counts_validations(tmp_path):
    import csv

    scored = []  # one entry per validation

    def score(model, val, info):
        scored.append(len(scored))
        return {"score": [0.1, 0.3, 0.2, 0.2, 0.2, 0.2][len(scored) - 1]}  # best at the 2nd validation

    result = _tiny_fit(tmp_path / "run", {"epochs": 7, "patience": 10, "val_every": 3}, score)
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert [r["epoch"] for r in rows] == [str(e) for e in range(7)]  # every epoch logs its loss
    assert [r["epoch"] for r in rows if r["score"] != ""] == ["0", "2", "5", "6"]  # epoch 0, every 3rd, the last
    assert all(r["loss_total"] != "" for r in rows)
    assert result["best_val"] == 0.3 and load_checkpoint(tmp_path / "run" / "best.pt")["extra"]["epoch"] == 2

    scored.clear()  # patience 2 validations: best at epoch 2, no gain at 5 and 8 -> stop at epoch 8, not epoch 4
    result = _tiny_fit(tmp_path / "run2", {"epochs": 30, "patience": 2, "val_every": 3}, score)
    assert result["stopped_early"] and result["epochs_run"] == 9 and len(scored) == 4


def test_help_into_a_closed_pipe_ends_without_a_traceback():
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (`| head`) is already gone: every write gets EPIPE
    try:
        completed = subprocess.run([sys.executable, "-m", "speaker_extraction.train", "--help"], stdout=write_end,
                                   stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert "Traceback" not in completed.stderr and "BrokenPipeError" not in completed.stderr
    assert completed.returncode in (0, 1)
