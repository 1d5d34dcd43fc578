"""End to end on the tiny synthetic Task 2 dataset: train -> resume -> predict -> submit -> score.

Also: bad test-set inputs give one `error:` line, exit status 2 and no partial output; a
cat_wavenet run without stimulus audio trains envelope + mel only and says so in one line.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

REPO = Path(__file__).resolve().parents[1]

LINEAR_CONFIG = {
    "target": "mel",
    "model": {"type": "linear", "n_taps": 16},
    "data": {"window_s": 5.0, "hop_s": 5.0, "sampling": "fixed", "normalize": "recording", "batch_size": 8,
             "val_window_s": 5.0},
    "train": {"epochs": 2, "lr": 5.0e-3, "patience": 5, "seed": 0, "mixup": 1, "lr_step_epochs": 1,
              "lr_gamma": 0.5, "grad_clip": 5.0},
    "loss": {"pearson": 1.0, "l1": 0.1, "kl": 0.1},
}


@pytest.fixture(scope="module")
def linear_run(task2_dataset, tmp_path_factory) -> Path:
    from task2_regression.train import train

    run = tmp_path_factory.mktemp("runs") / "linear"
    train(LINEAR_CONFIG, task2_dataset, run, say=lambda message: None)
    return run


def _run_cli(module_main, argv, capsys) -> tuple[int, str]:
    """Run a CLI main through util.errors.run_cli in-process; return (exit status, stderr)."""
    from util.errors import run_cli

    with pytest.raises(SystemExit) as exit_info:
        run_cli(module_main, argv)
    return exit_info.value.code, capsys.readouterr().err


def test_run_writes_checkpoints_log_and_plot(linear_run):
    from util.training import load_checkpoint

    for name in ("best.pt", "last.pt", "config.yaml", "log.csv", "curves.png"):
        assert (linear_run / name).is_file(), name
    state = load_checkpoint(linear_run / "last.pt")
    assert state["config"]["model"]["type"] == "linear"
    assert state["config"]["targets"] == ["mel"]
    assert state["config"]["train"]["epochs"] == 2 and state["extra"]["epoch"] == 1
    assert state["optimizer"] is not None and state["scheduler"] is not None
    lines = (linear_run / "log.csv").read_text().strip().splitlines()
    header = lines[0].split(",")
    for column in ("epoch", "lr", "loss_np_mel", "loss_l1_mel", "loss_kl_mel", "loss_total", "val_pearson"):
        assert column in header, column
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert float(rows[1]["lr"]) == pytest.approx(0.5 * float(rows[0]["lr"]))  # StepLR every epoch, gamma 0.5
    # the synthetic EEG encodes the mel: a trained linear decoder correlates positively on val
    assert float(rows[-1]["val_pearson"]) > 0.02
    for row in rows:  # both selection columns are logged: the noise-EEG control and the score above it
        assert float(row["val_above_noise"]) == pytest.approx(float(row["val_pearson"]) - float(row["val_noise_eeg"]))
        assert abs(float(row["val_noise_eeg"])) < 0.1  # a linear decoder on noise EEG scores ~0
    assert (linear_run / "curves.png").stat().st_size > 5000


def test_resume_continues_from_last_epoch(linear_run, task2_dataset, tmp_path):
    from task2_regression.train import train
    from util.training import load_checkpoint

    run = tmp_path / "resumed"
    shutil.copytree(linear_run, run)
    before = (run / "log.csv").read_text().strip().splitlines()
    messages: list[str] = []
    result = train(LINEAR_CONFIG, task2_dataset, run, epochs=3, resume=True, say=messages.append)
    assert result["epochs_run"] == 1
    assert any("resumed" in m and "epoch 2" in m for m in messages)
    after = (run / "log.csv").read_text().strip().splitlines()
    assert after[: len(before)] == before and len(after) == len(before) + 1
    assert after[-1].split(",")[0] == "2"
    state = load_checkpoint(run / "last.pt")
    assert state["extra"]["epoch"] == 2
    assert state["scheduler"]["last_epoch"] == 3  # three scheduler steps in total, not restarted
    # resuming (model, optimizer, scheduler, random state) is bit-identical to training straight through
    straight = tmp_path / "straight"
    train(LINEAR_CONFIG, task2_dataset, straight, epochs=3, say=lambda message: None)
    straight_state = load_checkpoint(straight / "last.pt")
    for name, weight in straight_state["model"].items():
        assert torch.equal(weight, state["model"][name]), name
    assert (straight / "log.csv").read_text().splitlines()[-1].split(",")[:-1] == after[-1].split(",")[:-1]


def _direct_score(run: Path, test_dir: Path, labels_dir: Path) -> float:
    """Score computed here from the model itself (scipy pearsonr), independent of the scripts."""
    from task2_regression.models import build_model
    from util.training import load_checkpoint

    state = load_checkpoint(run / "best.pt")
    model = build_model(state["config"]["model"], {"mel": 10})
    model.load_state_dict(state["model"])
    model.eval()
    subject_scores = []
    for mapping_path in sorted(test_dir.glob("sub-*_mapping.json")):
        subject = mapping_path.name.split("_")[0]
        mapping = json.loads(mapping_path.read_text())
        eeg_npz = np.load(test_dir / "preprocessed_eeg" / f"{subject}_eeg.npz")
        labels = json.loads((labels_dir / f"{subject}.json").read_text())
        segment_scores = []
        for segment_id, entry in mapping.items():
            eeg = eeg_npz[entry["eeg"]].astype(np.float64)
            eeg = (eeg - eeg.mean(0)) / eeg.std(0)
            with torch.no_grad():
                pred = model(torch.from_numpy(eeg.astype(np.float32))[None])["mel"][0].numpy()
            pred = np.concatenate([pred, np.repeat(pred.mean(0, keepdims=True), 1920 - len(pred), 0)])
            label = np.asarray(labels[segment_id])
            segment_scores.append(np.mean([pearsonr(pred[:, b], label[:, b])[0] for b in range(10)]))
        subject_scores.append(np.mean(segment_scores))
    return float(np.mean(subject_scores))


def test_predict_submit_score_matches_direct_score(linear_run, task2_dataset, tmp_path, capsys):
    import submit
    from evaluation import task2 as evaluation_task2

    test_dir = task2_dataset / "test_set" / "TASK2_regression"
    labels_dir = task2_dataset / "test_set" / "labels"
    pred_dir = tmp_path / "pred"
    # the predict script as a user runs it (a subprocess); submit and scoring through their CLI mains in-process
    result = subprocess.run([sys.executable, "-m", "task2_regression.predict", "--run", str(linear_run),
                             "--test-set", str(test_dir), "--out", str(pred_dir)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in pred_dir.glob("*.json"))
    assert files == sorted(p.name.split("_")[0] + ".json" for p in test_dir.glob("sub-*_mapping.json"))
    first = json.loads((pred_dir / files[0]).read_text())
    assert all(np.asarray(v).shape == (1920, 10) for v in first.values())

    code, err = _run_cli(submit.main, ["--task", "2", "--predictions", str(pred_dir), "--test-set", str(test_dir),
                                       "--group", "eegkit", "--out", str(tmp_path / "zip")], capsys)
    assert code == 0, err
    zips = list((tmp_path / "zip").glob("task_2_group_eegkit_submission_1.zip"))
    assert len(zips) == 1
    report_path = tmp_path / "report.json"
    code, err = _run_cli(evaluation_task2.main, ["--predictions", str(zips[0]), "--labels", str(labels_dir),
                                                 "--out", str(report_path)], capsys)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    assert report["n_missing"] == 0
    assert report["score"] == pytest.approx(_direct_score(linear_run, test_dir, labels_dir), abs=1e-6)
    assert report["score"] > 0.0  # a trained decoder beats chance on the synthetic held-out subjects


def test_labels_as_predictions_score_exactly_one(task2_dataset, tmp_path, capsys):
    import submit
    from evaluation import task2 as evaluation_task2

    test_dir = task2_dataset / "test_set" / "TASK2_regression"
    labels_dir = task2_dataset / "test_set" / "labels"
    code, err = _run_cli(submit.main, ["--task", "2", "--predictions", str(labels_dir), "--test-set", str(test_dir),
                                       "--group", "oracle", "--out", str(tmp_path / "zip")], capsys)
    assert code == 0, err
    zip_path = tmp_path / "zip" / "task_2_group_oracle_submission_1.zip"
    code, err = _run_cli(evaluation_task2.main, ["--predictions", str(zip_path), "--labels", str(labels_dir),
                                                 "--out", str(tmp_path / "oracle.json")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "oracle.json").read_text())["score"] == pytest.approx(1.0, abs=1e-12)


def _broken_copy(task2_dataset: Path, tmp_path: Path) -> Path:
    test_dir = tmp_path / "TASK2_regression"
    shutil.copytree(task2_dataset / "test_set" / "TASK2_regression", test_dir)
    return test_dir


@pytest.mark.parametrize("problem", ["missing_npz", "unknown_segment", "nan_eeg"])
def test_bad_test_set_gives_one_line_and_no_output(problem, linear_run, task2_dataset, tmp_path, capsys):
    from task2_regression import predict

    test_dir = _broken_copy(task2_dataset, tmp_path)
    mapping_path = sorted(test_dir.glob("sub-*_mapping.json"))[-1]  # break the LAST subject: no partial files
    subject = mapping_path.name.split("_")[0]
    npz_path = test_dir / "preprocessed_eeg" / f"{subject}_eeg.npz"
    if problem == "missing_npz":
        npz_path.unlink()
        expected = f"{npz_path}: EEG file not found"
    elif problem == "unknown_segment":
        mapping = json.loads(mapping_path.read_text())
        mapping[next(iter(mapping))] = {"eeg": "x"}
        mapping_path.write_text(json.dumps(mapping))
        expected = f"{npz_path}: segment 'x' not found"
    else:
        arrays = dict(np.load(npz_path))
        first = next(iter(arrays))
        arrays[first][100, 3] = np.nan
        np.savez(npz_path, **arrays)
        expected = "contains NaN or Inf"
    out_dir = tmp_path / "pred"
    code, err = _run_cli(predict.main, ["--run", str(linear_run), "--test-set", str(test_dir),
                                        "--out", str(out_dir)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_missing_run_checkpoint_is_one_line(task2_dataset, tmp_path, capsys):
    from task2_regression import predict

    (tmp_path / "empty_run").mkdir()
    code, err = _run_cli(predict.main, ["--run", str(tmp_path / "empty_run"), "--test-set",
                                        str(task2_dataset / "test_set" / "TASK2_regression"),
                                        "--out", str(tmp_path / "pred")], capsys)
    assert code == 2 and "best.pt: checkpoint not found" in err and len(err.strip().splitlines()) == 1


def test_cat_wavenet_without_audio_trains_envelope_and_mel(task2_dataset, tmp_path):
    from task2_regression.train import train
    from util import config as config_util
    from util.training import load_checkpoint

    # a copy of the dataset without the stimuli/ audio folder
    data = tmp_path / "no_audio"
    (data / "derivatives").mkdir(parents=True)
    (data / "derivatives" / "split_data").symlink_to(task2_dataset / "derivatives" / "split_data")
    # ablation3_no_mixup.yaml = the four-stage small CAT-WaveNet (only mixup off); shrunk further here
    config = config_util.load_config(REPO / "task2_regression" / "configs" / "ablation3_no_mixup.yaml", [
        "model.layers=2", "model.dilation_cycle=2", "model.residual_channels=4", "model.skip_channels=4",
        "model.last_stage_channels=4", "model.attention_dim=4", "model.attention_heads=1", "model.attention_depth=1",
        "data.window_s=2.0", "data.hop_s=8.0", "data.sampling=fixed", "data.batch_size=8", "data.val_window_s=2.0",
        "train.epochs=1"])
    assert config["targets"] == ["envelope", "mel", "mel80", "mag"]
    messages: list[str] = []
    train(config, data, tmp_path / "cat", say=messages.append)
    dropping = [m for m in messages if "dropping" in m]
    assert len(dropping) == 1 and "mel80" in dropping[0] and "mag" in dropping[0]
    state = load_checkpoint(tmp_path / "cat" / "best.pt")
    assert state["config"]["targets"] == ["envelope", "mel"]
    header = (tmp_path / "cat" / "log.csv").read_text().splitlines()[0].split(",")
    assert "loss_np_envelope" in header and "loss_np_mel" in header and "loss_np_mel80" not in header


def test_paper_tables_quick_pipeline(task2_dataset, tmp_path, capsys):
    """--quick on two rows: tables, plot, results and the exact command are written; control present."""
    from task2_regression.experiments import paper_tables

    out = tmp_path / "tables"
    argv = ["--data", str(task2_dataset), "--out", str(out), "--quick", "--rows", "linear,proposed",
            "--cache-dir", str(tmp_path / "cache")]
    code, err = _run_cli(paper_tables.main, argv, capsys)
    assert code == 0, err
    for name in ("tables.md", "scores.png", "results.json", "COMMAND.txt"):
        assert (out / name).is_file(), name
    command = (out / "COMMAND.txt").read_text().strip()
    assert command.startswith("python -m task2_regression.experiments.paper_tables --data ") and "--quick" in command
    results = json.loads((out / "results.json").read_text())
    assert list(results["rows"]) == ["linear", "proposed"]
    proposed = results["rows"]["proposed"]
    assert proposed["targets"] == ["envelope", "mel", "mel80", "mag"]  # stimulus audio present: all four stages
    assert -1.0 < proposed["shuffled_control"]["score"] < 1.0
    for entry in results["rows"].values():
        assert len(entry["heldout"]["per_band"]) == 10 and np.isfinite(entry["heldout"]["score"])
    tables = (out / "tables.md").read_text()
    assert "## Table 1" in tables and "## Control" in tables and "--quick run" in tables
    assert any((tmp_path / "cache").rglob("*")), "mel80/mag targets were not cached in --cache-dir"
    # every row carries its controls, and the tables show them
    for entry in results["rows"].values():
        for where in ("heldout", "within"):
            assert set(entry[where]["controls"]) == {"noise_eeg", "circular_shift", "mismatched_eeg"}
            assert entry[where]["controls"]["noise_eeg"]["score"] is not None
    assert "## Controls (every row)" in tables
    # --merge re-makes one row and keeps the other
    code, err = _run_cli(paper_tables.main, argv[:-4] + ["--rows", "linear", "--merge", "--no-costly-controls"] + argv[-2:],
                         capsys)
    assert code == 0, err
    merged = json.loads((out / "results.json").read_text())
    assert list(merged["rows"]) == ["linear", "proposed"] and len(merged["commands"]) == 2
    assert merged["rows"]["linear"]["heldout"]["controls"]["noise_eeg"]["score"] is None  # cheap controls only
    assert len((out / "COMMAND.txt").read_text().strip().splitlines()) == 2
