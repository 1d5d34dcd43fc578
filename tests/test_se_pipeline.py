"""Speaker-extraction pipeline: loss, train (+resume), predict (overlap-add), evaluation (model + file mode).

Runs on the session `kul_dataset` fixture with a tiny NeuroSpex and 1-s windows
(short attention maps) so the whole file stays well under a minute or two on 2 cores.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch
import yaml

from evaluation.speech_metrics import si_sdr
from util.errors import run_cli

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------
def test_loss_matches_numpy_metric():
    from speaker_extraction.loss import neg_si_sdr_loss
    from util.metrics import si_sdr_torch

    rng = np.random.default_rng(0)
    reference = rng.standard_normal((3, 400))
    estimate = reference + rng.standard_normal((3, 400)) * np.array([[0.1], [0.5], [2.0]]) + 0.3
    batched = si_sdr_torch(torch.tensor(estimate), torch.tensor(reference)).numpy()
    expected = np.array([si_sdr(estimate[i], reference[i]) for i in range(3)])
    np.testing.assert_allclose(batched, expected, atol=1e-6)
    loss = neg_si_sdr_loss(torch.tensor(estimate), torch.tensor(reference))
    assert float(loss) == pytest.approx(-expected.mean(), abs=1e-6)
    check = si_sdr_torch(torch.tensor([[2.5, 0.0, 2.0, 8.0]]), torch.tensor([[3.0, -0.5, 2.0, 7.0]]))
    assert float(check[0]) == pytest.approx(15.0918, abs=1e-4)
    # eps-safe: silent reference / perfect estimate give finite values and gradients
    estimate_t = torch.zeros(2, 50, requires_grad=True)
    neg_si_sdr_loss(estimate_t, torch.zeros(2, 50)).backward()
    assert torch.isfinite(estimate_t.grad).all()


def test_overlap_add_identity_model_any_length():
    from speaker_extraction.predict import extract_long

    class Identity(torch.nn.Module):
        def forward(self, mixture, eeg):  # (batch, samples), (batch, time, C)
            assert eeg.shape[1] == 128 and mixture.shape[1] == 8000
            return mixture * 3.0  # arbitrary scale: removed by the per-window rescaling

    rng = np.random.default_rng(1)
    mixture = rng.standard_normal(int(3.7 * 8000)).astype(np.float32) * 0.2  # 3.7 s: last window padded
    eeg = rng.standard_normal((int(round(3.7 * 128)), 4)).astype(np.float32)
    out = extract_long(Identity(), mixture, eeg, {"data": {"window_s": 1.0, "fs_audio": 8000, "fs_eeg": 128, "level_rms": 0.05}})
    assert out.shape == mixture.shape
    # every window's estimate is the mixture at one talker's level (RMS / sqrt 2) -> cross-fade is exact
    np.testing.assert_allclose(out, mixture / np.sqrt(2.0), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
@pytest.fixture
def trained_run(tiny_se_run) -> Path:
    return tiny_se_run


def test_train_writes_checkpoints_log_and_plot(trained_run):
    from util.training import load_checkpoint

    for name in ("best.pt", "last.pt", "log.csv", "curves.png", "config.yaml"):
        assert (trained_run / name).is_file(), name
    state = load_checkpoint(trained_run / "best.pt")
    assert state["config"]["model"]["adc_blocks"] == 1
    assert state["config"]["data"]["split"]["protocol"] == "trial"  # resolved config stored
    assert state["config"]["train"]["batch_size"] == 4
    assert state["extra"]["epoch"] == 0
    rows = list(csv.DictReader(open(trained_run / "log.csv")))
    assert len(rows) == 1
    assert {"loss_total", "val_si_sdr", "val_si_sdri", "lr"} <= set(rows[0])
    assert np.isfinite(float(rows[0]["val_si_sdr"])) and float(rows[0]["lr"]) == pytest.approx(1e-3)


def test_resume_continues_from_last(trained_run, kul_dataset, tmp_path, tiny_se_config):
    import shutil

    from speaker_extraction.train import main
    from util.training import load_checkpoint

    run = tmp_path / "resumed"
    shutil.copytree(trained_run, run)
    before = load_checkpoint(run / "last.pt")["model"]
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tiny_se_config))
    assert main(["--config", str(config_path), "--data", str(kul_dataset), "--out", str(run), "--resume",
                 "--epochs", "2", "--no-progress"]) == 0
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # one epoch numbering for both tasks: from 0
    after = load_checkpoint(run / "last.pt")
    assert after["extra"]["epoch"] == 1
    assert any(not torch.equal(before[k], after["model"][k]) for k in before)


def _write_inputs(folder: Path, seconds: float, fs: int = 16000, n_channels: int = 64, eeg_seconds=None,
                  nan: bool = False) -> tuple[Path, Path]:
    rng = np.random.default_rng(2)
    t = np.arange(int(seconds * fs)) / fs
    audio = (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    wav = folder / "mix.wav"
    scipy.io.wavfile.write(wav, fs, audio)
    eeg = rng.standard_normal((int(round((eeg_seconds or seconds) * 128)), n_channels)).astype(np.float32)
    if nan:
        eeg[5, 3] = np.nan
    npy = folder / "eeg.npy"
    np.save(npy, eeg)
    return wav, npy


def test_predict_round_trip_any_length(trained_run, tmp_path):
    from speaker_extraction.predict import main

    wav, npy = _write_inputs(tmp_path, 5.3)
    out = tmp_path / "out.wav"
    assert main(["--run", str(trained_run), "--mixture", str(wav), "--eeg", str(npy), "--out", str(out)]) == 0
    fs, audio = scipy.io.wavfile.read(out)
    assert fs == 8000 and audio.shape == (int(5.3 * 8000),)
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() > 0


@pytest.mark.parametrize("case", ["63_channels", "nan", "missing_eeg", "eeg_too_short"])
def test_predict_bad_inputs_exit_2_one_line_no_output(trained_run, tmp_path, capsys, case):
    from speaker_extraction.predict import main

    wav, npy = _write_inputs(tmp_path, 2.0, n_channels=63 if case == "63_channels" else 64, nan=case == "nan",
                             eeg_seconds=0.5 if case == "eeg_too_short" else None)
    if case == "missing_eeg":
        npy.unlink()
    out = tmp_path / "out.wav"
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["--run", str(trained_run), "--mixture", str(wav), "--eeg", str(npy), "--out", str(out)])
    assert info.value.code == 2
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 1 and str(npy) in err_lines[0]
    expected = {"63_channels": "63 channels", "nan": "NaN", "missing_eeg": "not found", "eeg_too_short": "shorter"}
    assert expected[case] in err_lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out.wav*"))


def test_predict_cli_script_exit_code(tmp_path):
    wav, npy = _write_inputs(tmp_path, 1.0)
    result = subprocess.run([sys.executable, "-m", "speaker_extraction.predict", "--run", str(tmp_path / "no_run"),
                             "--mixture", str(wav), "--eeg", str(npy), "--out", str(tmp_path / "o.wav")],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'no_run'}: run folder or checkpoint not found"]


def test_evaluation_report_model_and_shuffled(trained_run, kul_dataset, tmp_path):
    from speaker_extraction.evaluate import main

    report_path, plot_path = tmp_path / "report.json", tmp_path / "report.png"
    assert main(["--run", str(trained_run), "--data", str(kul_dataset), "--split", "test", "--out", str(report_path),
                 "--plot", str(plot_path), "--max-windows", "4", "--no-progress"]) == 0
    report = json.loads(report_path.read_text())
    assert plot_path.is_file() and report["n_windows"] == 4 and report["split"] == "test"
    for row_name in ("overall", "mixture"):
        for metric in ("si_sdr", "si_sdri", "pesq", "stoi"):
            assert metric in report[row_name] and metric + "_std" in report[row_name]
    assert report["mixture"]["si_sdri"] == 0.0
    window = report["windows"][0]
    assert window["si_sdri"] == pytest.approx(window["si_sdr"] - window["mixture_si_sdr"])
    assert set(report["per_subject"]) <= {"1", "2"}
    assert report["failures"]["pesq"]["model"]["count"] == sum(1 for w in report["windows"] if w["pesq"] is None)
    # the controls, on by default, with the keys every scorer uses
    assert set(report["controls"]) == {"noise_eeg", "circular_shift", "mismatched_eeg", "mixture"}
    assert report["score"] == pytest.approx(report["overall"]["si_sdri"])
    assert report["controls"]["mixture"]["score"] == 0.0
    noise = report["controls"]["noise_eeg"]["score"]
    assert report["score_above_noise"] == pytest.approx(report["score"] - noise)
    assert isinstance(report["warnings"], list) and set(report["per_subject_controls"]) == set(report["per_subject"])
    cheap_path = tmp_path / "cheap.json"
    assert main(["--run", str(trained_run), "--data", str(kul_dataset), "--out", str(cheap_path), "--max-windows", "4",
                 "--no-progress", "--no-costly-controls", "--no-aad"]) == 0
    cheap = json.loads(cheap_path.read_text())
    assert cheap["controls"]["noise_eeg"]["score"] is None and cheap["score_above_noise"] is None
    assert cheap["score"] == pytest.approx(report["score"])

    shuffled_path = tmp_path / "shuffled.json"
    assert main(["--run", str(trained_run), "--data", str(kul_dataset), "--out", str(shuffled_path),
                 "--shuffle-eeg", "--max-windows", "4", "--no-progress"]) == 0
    shuffled = json.loads(shuffled_path.read_text())
    assert shuffled["shuffle_eeg"] is True
    for row in shuffled["windows"]:
        assert tuple(row["eeg_from"]) != (row["subject"], row["trial"])
    # the mixture row does not depend on the EEG
    assert shuffled["mixture"]["si_sdr"] == pytest.approx(report["mixture"]["si_sdr"])


def _speech(seconds: float, seed: int) -> np.ndarray:
    from scipy.signal import resample_poly

    from synthetic.speech import speech_stream

    audio, fs = speech_stream(seconds, voice="en", rate_wpm=160, pitch=50 + 20 * seed, seed=seed)
    return resample_poly(audio.astype(np.float64), 8000, fs).astype(np.float32)


def test_file_mode_hand_made_cases_and_pesq_failure(tmp_path, capsys):
    from evaluation.speaker_extraction import main

    target, other = _speech(2.0, 0), _speech(2.0, 1)
    mixture = target + other
    folders = {name: tmp_path / name for name in ("est", "ref", "mix")}
    for folder in folders.values():
        folder.mkdir()
    cases = {"perfect.wav": target, "mixture.wav": mixture, "silent.wav": np.zeros_like(target)}
    for name, estimate in cases.items():
        scipy.io.wavfile.write(folders["est"] / name, 8000, estimate)
        scipy.io.wavfile.write(folders["ref"] / name, 8000, target)
        scipy.io.wavfile.write(folders["mix"] / name, 8000, mixture)
    out = tmp_path / "files.json"
    assert main(["--estimates", str(folders["est"]), "--references", str(folders["ref"]),
                 "--mixtures", str(folders["mix"]), "--out", str(out), "--no-progress"]) == 0
    rows = {row["file"]: row for row in json.loads(out.read_text())["windows"]}
    assert rows["perfect.wav"]["si_sdr"] > 60.0
    assert rows["perfect.wav"]["pesq"] > 4.0
    assert rows["mixture.wav"]["si_sdri"] == pytest.approx(0.0, abs=1e-9)
    assert rows["silent.wav"]["pesq"] is None and "silent" in rows["silent.wav"]["pesq_reason"]
    report = json.loads(out.read_text())
    assert report["failures"]["pesq"]["model"]["count"] == 1
    assert report["overall"]["pesq_n"] == 2

    # unmatched name -> one-line error, exit 2, no report written
    scipy.io.wavfile.write(folders["est"] / "extra.wav", 8000, target)
    bad_out = tmp_path / "bad.json"
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["--estimates", str(folders["est"]), "--references", str(folders["ref"]),
                       "--mixtures", str(folders["mix"]), "--out", str(bad_out)])
    assert info.value.code == 2 and "extra.wav" in capsys.readouterr().err and not bad_out.exists()
    # length mismatch
    (folders["est"] / "extra.wav").unlink()
    scipy.io.wavfile.write(folders["est"] / "perfect.wav", 8000, target[:-10])
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["--estimates", str(folders["est"]), "--references", str(folders["ref"]),
                       "--mixtures", str(folders["mix"]), "--out", str(bad_out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "lengths differ" in err[0] and not bad_out.exists()


def test_training_crops_are_aligned_seeded_and_off_when_too_long():
    from fractions import Fraction
    from types import SimpleNamespace

    from speaker_extraction.train import apply_crop, crop_plan

    corpus = SimpleNamespace(fs_eeg=128, fs_audio=8000, window_eeg=512)
    dataset = type("Windows", (), {"corpus": corpus, "__len__": lambda self: 6})()
    plan = crop_plan(dataset, 2.0, epoch=3, seed=7)
    crop_eeg, crop_audio, offsets = plan
    assert (crop_eeg, crop_audio, offsets.shape) == (256, 16000, (6,))
    assert np.all(offsets % 2 == 0) and np.all((offsets >= 0) & (offsets <= 512 - 256))
    np.testing.assert_array_equal(crop_plan(dataset, 2.0, epoch=3, seed=7)[2], offsets)  # seeded
    assert any(not np.array_equal(crop_plan(dataset, 2.0, epoch=e, seed=7)[2], offsets) for e in range(4, 8))
    assert crop_plan(dataset, 0.0, 0, 0) is None and crop_plan(dataset, 4.0, 0, 0) is None
    # a ramp in samples: the audio crop starts exactly at 62.5 x the EEG start
    batch = {"eeg": torch.arange(512.0).repeat(2, 1).unsqueeze(-1).repeat(1, 1, 3),  # (2, 512, 3)
             "mixture": torch.arange(32000.0).repeat(2, 1), "target": -torch.arange(32000.0).repeat(2, 1)}
    cropped = apply_crop(batch, plan, [4, 1], Fraction(8000, 128))
    for k, index in enumerate([4, 1]):
        start = int(offsets[index])
        assert cropped["eeg"].shape == (2, 256, 3) and float(cropped["eeg"][k, 0, 0]) == start
        assert cropped["mixture"].shape == (2, 16000) and float(cropped["mixture"][k, 0]) == start * 62.5
        assert float(cropped["target"][k, -1]) == -(start * 62.5 + 15999)
