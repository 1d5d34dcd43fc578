"""Hostile inputs for both train.py CLIs: config schema, flags, out folders, resume, data/window clashes.

Every case fails during validation (before anything is written) and goes through the `refuse`
harness: exit 2, no traceback, one line naming the key/flag/file, nothing changed under --out.
"""
from __future__ import annotations

import shutil

import pytest
import torch

# (override, words the message must name) -- Task 2 config schema (task2_regression/configs/schema.yaml)
TASK2_OVERRIDES = [
    ("data.batch_size=0", "data.batch_size"),
    ("data.batch_size=-4", "data.batch_size"),
    ("data.batch_size=2.5", "data.batch_size"),
    ("data.batch_size=null", "data.batch_size"),
    ("train.lr=abc", "train.lr"),
    ("train.lr=0", "train.lr"),
    ("train.lr=-1e-3", "train.lr"),
    ("train.lr=nan", "train.lr"),
    ("train.lr=inf", "train.lr"),
    ("train.lr=1e6", "train.lr"),
    ("data.window_s=0", "data.window_s"),
    ("data.window_s=nan", "data.window_s"),
    ("data.hop_s=-1", "data.hop_s"),
    ("data.val_window_s=0", "data.val_window_s"),
    ("train.betas=0.9", "train.betas"),
    ("train.betas=[0.9]", "train.betas"),
    ("train.betas=[0.9,1.5]", "train.betas"),
    ("train.betas=[a,b]", "train.betas"),
    ("train.epochs=-3", "train.epochs"),
    ("train.seed=-1", "train.seed"),
    ("train.patience=-1", "train.patience"),
    ("train.val_every=0", "train.val_every"),
    ("train.val_every=1.5", "train.val_every"),
    ("train.lr_gamma=2", "train.lr_gamma"),
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.mixup=3", "train.mixup"),
    ("loss.l1=-0.5", "loss.l1"),
    ("loss.pearson=nan", "loss.pearson"),
    ("target=spikes", "target"),
    ("targets=[mel,pitch]", "targets"),
    ("data.sampling=sometimes", "data.sampling"),
    ("data.normalize=global", "data.normalize"),
    ("train.lrr=0.5", "train.lrr"),
    ("data=5", "data"),
    ("train.lr={a: 1}", "train.lr"),
    ("model.type=transformer", "model.type"),
    ("model.n_taps=0", "model.n_taps"),
    ("model.n_taps=big", "model.n_taps"),
    ("model.n_tapz=3", "model.n_tapz"),
    ("model.n_channels=63", "model.n_channels"),
    ("data.window_s=100", "data.window_s"),  # longer than every 96-s training recording: no windows
]

# Speaker-extraction config schema (speaker_extraction/configs/schema.yaml) and the model contract
SE_OVERRIDES = [
    ("model.N=big", "model.N"),
    ("model.N=0", "model.N"),
    ("model.L=15", "model"),
    ("model.attn_heads=-1", "model.attn_heads"),
    ("model.bogus=1", "model.bogus"),
    ("model.type=conv_tasnet", "conv_tasnet"),
    ("data.band=[40,10]", "data.band"),
    ("data.band=[1]", "data.band"),
    ("data.band=[0,32]", "data.band"),
    ("data.window_s=0", "data.window_s"),
    ("data.fs_audio=-8000", "data.fs_audio"),
    ("data.normalize=robust", "data.normalize"),
    ("data.mix_scope=sometimes", "data.mix_scope"),
    ("data.split.protocol=random", "data.split.protocol"),
    ("data.split.val_trials=0", "data.split.val_trials"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.val_every=0", "train.val_every"),
    ("train.lr=abc", "train.lr"),
    ("train.betas=0.9", "train.betas"),
    ("train.crop_s=-1", "train.crop_s"),
    ("train.epochs=-3", "train.epochs"),
    ("train.seed=-1", "train.seed"),
    ("train.threads=-2", "train.threads"),
    ("data.window_s=100", "data.window_s"),  # longer than every 15-s trial: no windows
]


def _task2_main():
    from task2_regression.train import main

    return main


def _se_main():
    from speaker_extraction.train import main

    return main


@pytest.mark.parametrize("override,names", TASK2_OVERRIDES, ids=[o for o, _ in TASK2_OVERRIDES])
def test_task2_train_refuses_bad_config(refuse, task2_dataset, task2_tiny_config, tmp_path, override, names):
    out = tmp_path / "run"
    refuse(_task2_main(), ["--config", task2_tiny_config, "--data", task2_dataset, "--out", out, override],
           names=[names], watch=[out, task2_tiny_config])


@pytest.mark.parametrize("override,names", SE_OVERRIDES, ids=[o for o, _ in SE_OVERRIDES])
def test_se_train_refuses_bad_config(refuse, kul_dataset, tiny_se_run, se_tiny_config, tmp_path, override, names):
    out = tmp_path / "run"  # (tiny_se_run: the dataset's cache exists, so nothing is written into it)
    refuse(_se_main(), ["--config", se_tiny_config, "--data", kul_dataset, "--out", out, "--no-progress", override],
           names=[names], watch=[out, se_tiny_config])


FLAG_CASES = [
    ("epochs_negative", ["--epochs", "-3"], "--epochs"),
    ("device_unknown", ["--device", "tpu"], "--device"),
    pytest.param("device_cuda_absent", ["--device", "cuda"], "--device",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")),
]


@pytest.mark.parametrize("task", ["task2", "se"])
@pytest.mark.parametrize("case,flags,names", FLAG_CASES)
def test_train_refuses_bad_flags(refuse, task2_dataset, kul_dataset, task2_tiny_config, se_tiny_config, tmp_path,
                                 task, case, flags, names):
    data, config = (task2_dataset, task2_tiny_config) if task == "task2" else (kul_dataset, se_tiny_config)
    main = _task2_main() if task == "task2" else _se_main()
    out = tmp_path / "run"
    refuse(main, ["--config", config, "--data", data, "--out", out, *flags], names=[names], watch=[out])


def _out_case(case: str, tmp_path, data):
    """(--out path, extra flags, names) of an out-folder case, after setting it up."""
    if case == "out_is_a_file":
        out = tmp_path / "run.txt"
        out.write_text("not a folder")
        return out, [], ["run.txt"]
    if case == "out_not_empty":
        out = tmp_path / "run"
        out.mkdir()
        (out / "notes.txt").write_text("someone's work")
        return out, [], ["--out", "not empty"]
    if case == "out_read_only":
        return tmp_path.parent / "sys-like" / "run" if False else __import__("pathlib").Path("/sys/eegkit_run"), [], \
            ["/sys"]
    if case == "out_is_the_data":
        return data, [], ["input"]
    if case == "out_holds_the_data":
        return data.parent, ["--overwrite"], ["input"]
    if case == "config_missing":
        return tmp_path / "run", ["--config", str(tmp_path / "none.yaml")], ["none.yaml"]
    if case == "config_invalid_yaml":
        bad = tmp_path / "bad.yaml"
        bad.write_text("model: [unclosed\n")
        return tmp_path / "run", ["--config", str(bad)], ["bad.yaml"]
    if case == "config_not_a_mapping":
        bad = tmp_path / "list.yaml"
        bad.write_text("- 1\n- 2\n")
        return tmp_path / "run", ["--config", str(bad)], ["list.yaml"]
    if case == "data_missing":
        return tmp_path / "run", ["--data", str(tmp_path / "no_data")], ["no_data"]
    if case == "resume_without_run":
        return tmp_path / "run", ["--resume"], ["last.pt"]
    raise AssertionError(case)


OUT_CASES = ["out_is_a_file", "out_not_empty", "out_read_only", "out_is_the_data", "out_holds_the_data",
             "config_missing", "config_invalid_yaml", "config_not_a_mapping", "data_missing", "resume_without_run"]


@pytest.mark.parametrize("task", ["task2", "se"])
@pytest.mark.parametrize("case", OUT_CASES)
def test_train_refuses_bad_out_and_inputs(refuse, task2_dataset, kul_dataset, task2_tiny_config, se_tiny_config,
                                          tmp_path, task, case):
    data, config = (task2_dataset, task2_tiny_config) if task == "task2" else (kul_dataset, se_tiny_config)
    main = _task2_main() if task == "task2" else _se_main()
    out, extra, names = _out_case(case, tmp_path, data)
    argv = ["--config", config, "--data", data, "--out", out]
    # a later --config/--data replaces the earlier one (argparse keeps the last)
    watch = [out] if case not in ("out_is_the_data", "out_holds_the_data", "out_read_only") else [tmp_path]
    refuse(main, argv + extra, names=names, watch=watch)


def _copy_run(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("override,names", [("train.lr=0.5", "train.lr"), ("model.type=vlaai", "vlaai"),
                                            ("data.window_s=4", "data.window_s")])
def test_task2_resume_with_another_config_is_refused(refuse, task2_dataset, task2_tiny_config, task2_tiny_run,
                                                     tmp_path, override, names):
    run = _copy_run(task2_tiny_run, tmp_path)
    config = task2_tiny_config
    if override.startswith("model.type="):  # another model: a config of its own
        import yaml

        from tests.hostile.conftest import TASK2_TINY

        config = tmp_path / "other_model.yaml"
        config.write_text(yaml.safe_dump({**TASK2_TINY, "model": {"type": override.split("=")[1]}}))
        override = "train.seed=0"
    line = refuse(_task2_main(), ["--config", config, "--data", task2_dataset, "--out", run, "--resume", override],
                  names=[names], watch=[run])
    assert "config.yaml" not in line or "different config" in line


@pytest.mark.parametrize("override,names", [("train.lr=0.5", "train.lr"), ("model.N=32", "model.N")])
def test_se_resume_with_another_config_is_refused(refuse, kul_dataset, se_tiny_config, tiny_se_run, tmp_path,
                                                  override, names):
    run = _copy_run(tiny_se_run, tmp_path)
    refuse(_se_main(), ["--config", se_tiny_config, "--data", kul_dataset, "--out", run, "--resume", "--no-progress",
                        override], names=[names], watch=[run])


def test_resume_from_the_other_tasks_checkpoint_is_refused(refuse, task2_dataset, task2_tiny_config, tiny_se_run,
                                                           kul_dataset, se_tiny_config, task2_tiny_run, tmp_path):
    run = tmp_path / "task2_run_with_se_last"
    shutil.copytree(task2_tiny_run, run)
    shutil.copy(tiny_se_run / "last.pt", run / "last.pt")
    line = refuse(_task2_main(), ["--config", task2_tiny_config, "--data", task2_dataset, "--out", run, "--resume"],
                  names=["last.pt"], watch=[run])
    assert "speaker-extraction checkpoint" in line and "expected a Task 2" in line
    se_run = tmp_path / "se_run_with_task2_last"
    shutil.copytree(tiny_se_run, se_run)
    shutil.copy(task2_tiny_run / "last.pt", se_run / "last.pt")
    line = refuse(_se_main(), ["--config", se_tiny_config, "--data", kul_dataset, "--out", se_run, "--resume"],
                  names=["last.pt"], watch=[se_run])
    assert "Task 2 regression checkpoint" in line


def _fit(out, bad_loss_epoch=None, bad_score_epoch=None, bad_value=float("nan"), epochs=3):
    """`util.trainer.fit` on a toy regression; the loss or the score turns ``bad_value`` at the given epoch."""
    from util.distributed import DistInfo
    from util.trainer import fit

    data = [{"x": torch.full((2,), float(i)), "y": torch.tensor([float(i)])} for i in range(8)]
    config = {"model": {"type": "toy"}, "train": {"epochs": epochs, "lr": 1e-2, "betas": [0.9, 0.999], "patience": 0,
                                                  "seed": 0, "grad_clip": 0.0}}

    def step(model, batch, epoch):
        loss = torch.mean((model(batch["x"]) - batch["y"]) ** 2)
        if epoch == bad_loss_epoch:
            loss = loss * bad_value
        return loss, {"total": float(loss.detach())}

    def score(model, dataset, info):
        return {"val": bad_value if info is not None and score.epoch == bad_score_epoch else 0.1 * score.epoch}

    def counted(model, dataset, info):
        result = score(model, dataset, info)
        score.epoch += 1
        return result

    score.epoch = 0
    return fit(config, out, DistInfo(0, 1, 0, torch.device("cpu")), lambda: torch.nn.Linear(2, 1), step, counted,
               data, data, 4, "val", progress=False, say=lambda message: None, task="task2")


@pytest.mark.parametrize("where", ["loss", "score"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_non_finite_at_epoch_0_leaves_no_run_folder(tmp_path, where, value):
    from util.errors import EEGKitError

    out = tmp_path / "run"
    kwargs = {"bad_loss_epoch": 0} if where == "loss" else {"bad_score_epoch": 0}
    with pytest.raises(EEGKitError, match=r"at epoch 0; training stopped, last good checkpoint: none written"):
        _fit(out, bad_value=value, **kwargs)
    assert not out.exists()  # no folder, no fake best.pt


@pytest.mark.parametrize("where", ["loss", "score"])
def test_non_finite_later_keeps_the_last_good_checkpoint(tmp_path, where):
    from util.errors import EEGKitError
    from util.training import load_checkpoint

    out = tmp_path / "run"
    kwargs = {"bad_loss_epoch": 2} if where == "loss" else {"bad_score_epoch": 2}
    with pytest.raises(EEGKitError, match=r"at epoch 2; .*last good checkpoint: .*last.pt \(epoch 1\)"):
        _fit(out, **kwargs)
    assert load_checkpoint(out / "last.pt")["extra"]["epoch"] == 1
    assert load_checkpoint(out / "best.pt")["extra"]["epoch"] == 1  # val 0.1 at epoch 1 beat 0.0 at epoch 0
    assert [line.split(",")[0] for line in (out / "log.csv").read_text().splitlines()] == ["epoch", "0", "1"]


def test_overwrite_replaces_the_old_run_and_keeps_no_stale_files(task2_dataset, task2_tiny_run, tmp_path):
    """--overwrite starts a new run: the old log rows, best.pt and stale temporaries are gone."""
    from task2_regression.train import main
    from util.errors import run_cli

    run = _copy_run(task2_tiny_run, tmp_path)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "epoch_0099.pt").write_bytes(b"old")
    from util.atomic import temp_name

    (run / temp_name("last.pt", ".pt", pid=2**22 + 1)).write_bytes(b"half a checkpoint")  # its writer is gone
    import yaml

    config = tmp_path / "cfg.yaml"
    from tests.hostile.conftest import TASK2_TINY

    config.write_text(yaml.safe_dump(TASK2_TINY))
    with pytest.raises(SystemExit) as done:
        run_cli(main, ["--config", str(config), "--data", str(task2_dataset), "--out", str(run), "--overwrite"])
    assert done.value.code == 0
    assert not (run / "checkpoints").exists() and not list(run.glob(".*.eegkit-tmp-*"))
    assert [line.split(",")[0] for line in (run / "log.csv").read_text().splitlines()] == ["epoch", "0"]
    assert (run / ".eegkit-output").is_file()


def test_se_channel_mismatch_is_refused_before_any_cache_is_built(kul_dataset, tiny_se_config, refuse, tmp_path):
    """model.eeg_channels that the data cannot give: refused before the KUL cache is written into the data folder."""
    import shutil

    import yaml

    from speaker_extraction.train import main

    data = tmp_path / "data"
    shutil.copytree(kul_dataset, data, ignore=shutil.ignore_patterns(".eegkit_cache"))
    config = tmp_path / "c.yaml"
    tiny_se_config["model"]["eeg_channels"] = 32
    config.write_text(yaml.safe_dump(tiny_se_config))
    out = tmp_path / "run"
    refuse(main, ["--config", config, "--data", data, "--out", out, "--no-progress"],
           names=["model.eeg_channels"], watch=[data, out])
    assert not (data / ".eegkit_cache").exists()
