"""Round 2 (issue 20): ``--resume`` from a tampered ``last.pt`` or ``log.csv`` is one line naming the file.

`util.trainer.check_resume` checks the saved epoch, early-stopping state, random state and the log
before any data is read; `util.trainer.restore` checks the weights, Adam's state (one entry per
parameter, of its shape, finite) and the scheduler's layout before loading them. Every case goes
through the `refuse` harness: exit 2, no traceback, one line naming last.pt or log.csv, and the run
folder unchanged (listing and SHA-256).
"""
from __future__ import annotations

import shutil

import pytest
import torch


def _edit_extra(key, value):
    def change(state):
        state["extra"][key] = value
    return change


def _edit_rng(part, value):
    def change(state):
        state["extra"]["rng"][part] = value
    return change


def _edit_numpy_rng(index, value):
    def change(state):
        state["extra"]["rng"]["numpy"][index] = value
    return change


def _edit_optimizer(fn):
    def change(state):
        fn(state["optimizer"])
    return change


def _first_param_state(optimizer_state: dict) -> dict:
    return optimizer_state["state"][min(optimizer_state["state"])]


LAST_PT_CASES = {
    # the epoch entry
    "epoch_text": _edit_extra("epoch", "3"),
    "epoch_float": _edit_extra("epoch", 1.5),
    "epoch_negative": _edit_extra("epoch", -5),
    "epoch_huge": _edit_extra("epoch", 10**12),
    "extra_not_a_mapping": lambda s: s.__setitem__("extra", "x"),
    # early stopping
    "early_stopping_text": _edit_extra("early_stopping", "patience"),
    "early_stopping_keys": _edit_extra("early_stopping", {"best": 0.1}),
    "early_stopping_best_text": _edit_extra("early_stopping", {"best": "high", "bad_checks": 0}),
    "early_stopping_bad_checks_negative": _edit_extra("early_stopping", {"best": 0.1, "bad_checks": -1}),
    "early_stopping_best_nan": _edit_extra("early_stopping", {"best": float("nan"), "bad_checks": 0}),
    # the random state
    "rng_text": _edit_extra("rng", "seeded"),
    "rng_missing_part": lambda s: s["extra"]["rng"].pop("numpy"),
    "rng_torch_float": _edit_rng("torch", torch.zeros(5056)),
    "rng_torch_short": _edit_rng("torch", torch.zeros(10, dtype=torch.uint8)),
    "rng_numpy_short_keys": _edit_numpy_rng(1, torch.zeros(10, dtype=torch.int64)),
    "rng_numpy_pos": _edit_numpy_rng(2, 10**9),
    "rng_numpy_name": _edit_numpy_rng(0, "PCG64"),
    "rng_python_text": _edit_rng("python", "state"),
    "rng_python_negative": lambda s: s["extra"]["rng"]["python"].__setitem__(1, -torch.ones(625, dtype=torch.int64)),
    # the optimizer
    "optimizer_text": lambda s: s.__setitem__("optimizer", "adam"),
    "optimizer_no_groups": _edit_optimizer(lambda o: o.__setitem__("param_groups", [])),
    "optimizer_lr_text": _edit_optimizer(lambda o: o["param_groups"][0].__setitem__("lr", "fast")),
    "optimizer_betas": _edit_optimizer(lambda o: o["param_groups"][0].__setitem__("betas", (0.9, 2.0))),
    "optimizer_wrong_shape": _edit_optimizer(lambda o: _first_param_state(o).__setitem__("exp_avg", torch.zeros(3))),
    "optimizer_nan_moment": _edit_optimizer(
        lambda o: _first_param_state(o).__setitem__("exp_avg", torch.full_like(_first_param_state(o)["exp_avg"],
                                                                               float("nan")))),
    "optimizer_negative_step": _edit_optimizer(lambda o: _first_param_state(o).__setitem__("step",
                                                                                           torch.tensor(-1.0))),
    "optimizer_extra_entry": _edit_optimizer(lambda o: o["state"].__setitem__(99, {"step": torch.tensor(1.0)})),
    # the scheduler
    "scheduler_text": lambda s: s.__setitem__("scheduler", {"step_size": "a"}),
    "scheduler_bad_value": lambda s: s["scheduler"].__setitem__("last_epoch", "ten"),
    # the weights
    "weights_nan": lambda s: s.__setitem__("model", {k: torch.full_like(v, float("nan")) for k, v in s["model"].items()}),
    "weights_wrong_shape": lambda s: s.__setitem__("model", {k: torch.cat([v, v]) for k, v in s["model"].items()}),
}


def _tampered_run(good_run, tmp_path, change=None, log_text=None, remove_log=False):
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    if change is not None:
        state = torch.load(run / "last.pt", weights_only=True)
        change(state)
        torch.save(state, run / "last.pt")
    if log_text is not None:
        (run / "log.csv").write_bytes(log_text if isinstance(log_text, bytes) else log_text.encode())
    if remove_log:
        (run / "log.csv").unlink()
    return run


def _task2_resume(refuse, run, config, data, names):
    from task2_regression.train import main

    return refuse(main, ["--config", config, "--data", data, "--out", run, "--resume", "--epochs", "3"],
                  names=names, watch=[run, config])


@pytest.mark.parametrize("case", list(LAST_PT_CASES))
def test_task2_resume_refuses_a_tampered_last_pt(refuse, task2_tiny_run, task2_dataset, task2_tiny_config, tmp_path,
                                                 case):
    run = _tampered_run(task2_tiny_run, tmp_path, LAST_PT_CASES[case])
    line = _task2_resume(refuse, run, task2_tiny_config, task2_dataset, ["last.pt"])
    assert "edited or damaged" in line


def _log_case(case: str, good: str) -> str | bytes:
    lines = good.splitlines()
    header, first = lines[0], lines[1]
    if case == "text_in_a_value":
        return header + "\n" + first.replace(first.split(",")[1], "hello", 1) + "\n"
    if case == "wrong_epoch":
        return header + "\n" + "7" + first[first.index(","):] + "\n"
    if case == "extra_field":
        return header + "\n" + first + ",42\n"
    if case == "missing_field":
        return header + "\n" + first.rsplit(",", 1)[0] + "\n"
    if case == "header_not_epoch":
        return header.replace("epoch", "round", 1) + "\n" + first + "\n"
    if case == "header_duplicate":
        return header + "," + header.split(",")[1] + "\n" + first + "," + first.split(",")[1] + "\n"
    if case == "no_rows":
        return header + "\n"
    if case == "empty":
        return ""
    if case == "binary":
        return b"\x00\xff\xfe garbage \x80"
    raise AssertionError(case)


LOG_CASES = ["text_in_a_value", "wrong_epoch", "extra_field", "missing_field", "header_not_epoch",
             "header_duplicate", "no_rows", "empty", "binary", "missing"]


@pytest.mark.parametrize("case", LOG_CASES)
def test_task2_resume_refuses_a_tampered_log(refuse, task2_tiny_run, task2_dataset, task2_tiny_config, tmp_path, case):
    good = (task2_tiny_run / "log.csv").read_text()
    run = _tampered_run(task2_tiny_run, tmp_path, log_text=None if case == "missing" else _log_case(case, good),
                        remove_log=case == "missing")
    _task2_resume(refuse, run, task2_tiny_config, task2_dataset, ["log.csv"])


def test_task2_resume_of_an_untouched_run_still_works(task2_tiny_run, task2_dataset, task2_tiny_config, tmp_path):
    """The checks refuse only what the kit never writes: a real run resumes and appends its epochs."""
    from task2_regression.train import main
    from util.errors import run_cli

    run = _tampered_run(task2_tiny_run, tmp_path)
    with pytest.raises(SystemExit) as done:
        run_cli(main, ["--config", str(task2_tiny_config), "--data", str(task2_dataset), "--out", str(run),
                       "--resume", "--epochs", "2"])
    assert done.value.code == 0
    assert [line.split(",")[0] for line in (run / "log.csv").read_text().splitlines()] == ["epoch", "0", "1"]


SE_CASES = ["rng_numpy_short_keys", "optimizer_wrong_shape", "early_stopping_text", "epoch_text", "scheduler_text"]


@pytest.mark.parametrize("case", SE_CASES + ["log:text_in_a_value", "log:binary"])
def test_se_resume_refuses_a_tampered_run(refuse, tiny_se_run, kul_dataset, se_tiny_config, tmp_path, case):
    from speaker_extraction.train import main

    if case.startswith("log:"):
        run = _tampered_run(tiny_se_run, tmp_path, log_text=_log_case(case[4:], (tiny_se_run / "log.csv").read_text()))
        names = ["log.csv"]
    else:
        run = _tampered_run(tiny_se_run, tmp_path, LAST_PT_CASES[case])
        names = ["last.pt"]
    refuse(main, ["--config", se_tiny_config, "--data", kul_dataset, "--out", run, "--resume", "--epochs", "2",
                  "--no-progress"], names=names, watch=[run, se_tiny_config])
