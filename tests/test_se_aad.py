"""Speaker confusion and extraction-derived AAD accuracy (`evaluation.speaker_extraction` scorers,
`speaker_extraction.evaluate` on a trained run).

Hand-made signals give known answers (an estimate that is the attended talker plus a little of the
other is never confused; the reverse is always confused); a tiny trained NeuroSpex checks that the
model-mode report carries both measures and that they agree with its own per-window rows.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile

from util.errors import run_cli

def _talkers(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n), rng.standard_normal(n)


def test_score_window_confusion_golden():
    from evaluation.speaker_extraction import score_window

    attended, unattended = _talkers(4000)
    mixture = attended + unattended
    right = score_window(attended + 0.1 * unattended, attended, mixture, 8000, interferer=unattended)
    wrong = score_window(unattended + 0.1 * attended, attended, mixture, 8000, interferer=unattended)
    # SI-SDR of a + 0.1 b against a is about 10 log10(1 / 0.01) = 20 dB; against b about -20 dB
    assert right["si_sdr"] == pytest.approx(20.0, abs=1.0)
    assert right["si_sdr_unattended"] == pytest.approx(-20.0, abs=1.0)
    assert right["confused"] is False and wrong["confused"] is True
    # the mixture is equally close to both talkers (about 0 dB each): its decision is a coin flip
    assert abs(right["mixture_si_sdr"] - right["mixture_si_sdr_unattended"]) < 0.5
    # without the competing talker no confusion is claimed
    assert "confused" not in score_window(attended, attended, mixture, 8000)


def test_decision_windows_counts_and_extraction_aad_golden():
    from evaluation.speaker_extraction import decision_windows, extraction_aad

    fs = 100
    attended, unattended = _talkers(25 * fs, seed=1)  # a 25-s trial
    rows = decision_windows(attended + 0.1 * unattended, attended, unattended, fs, windows_s=(1, 2, 5, 10, 20, 30))
    counts = {w: sum(1 for r in rows if r["window_s"] == w) for w in (1, 2, 5, 10, 20, 30)}
    # non-overlapping windows inside 25 s: floor(25 / tau); 30 s does not fit
    assert counts == {1: 25, 2: 12, 5: 5, 10: 2, 20: 1, 30: 0}
    assert [r["start_s"] for r in rows if r["window_s"] == 10] == [0.0, 10.0]

    good = [{"subject": "S1", **r} for r in rows]
    bad = [{"subject": "S2", **r} for r in decision_windows(unattended + 0.1 * attended, attended, unattended, fs,
                                                           windows_s=(1, 5))]
    report = extraction_aad(good + bad)
    assert report["subjects"]["S1"]["accuracy"]["1"] == 1.0
    assert report["subjects"]["S2"]["accuracy"]["5"] == 0.0
    # pooled over both subjects at 5 s: S1 has 5 right windows, S2 5 wrong -> confusion 5 / 10
    assert report["pooled"]["5"] == {"n_windows": 10, "confusion_rate": 0.5, "accuracy": 0.5}
    assert report["pooled"]["10"] == {"n_windows": 2, "confusion_rate": 0.0, "accuracy": 1.0}


def test_file_mode_interferers_give_confusion_rate(tmp_path, capsys):
    from evaluation.speaker_extraction import main

    attended, unattended = (x.astype(np.float32) * 0.1 for x in _talkers(8000, seed=2))
    folders = {name: tmp_path / name for name in ("est", "ref", "mix", "int")}
    for folder in folders.values():
        folder.mkdir()
    for name, estimate in (("right.wav", attended + 0.2 * unattended), ("wrong.wav", unattended + 0.2 * attended),
                           ("also_right.wav", attended)):
        scipy.io.wavfile.write(folders["est"] / name, 8000, estimate)
        scipy.io.wavfile.write(folders["ref"] / name, 8000, attended)
        scipy.io.wavfile.write(folders["mix"] / name, 8000, attended + unattended)
        scipy.io.wavfile.write(folders["int"] / name, 8000, unattended)
    out = tmp_path / "report.json"
    assert main(["--estimates", str(folders["est"]), "--references", str(folders["ref"]), "--mixtures",
                 str(folders["mix"]), "--interferers", str(folders["int"]), "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["overall"]["confusion_rate"] == pytest.approx(1 / 3)
    assert report["overall"]["confused_windows"] == 1
    assert "speaker confusion" in capsys.readouterr().out
    # a missing interferer file: one line naming the folder, nothing written
    (folders["int"] / "wrong.wav").unlink()
    bad = tmp_path / "bad.json"
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["--estimates", str(folders["est"]), "--references", str(folders["ref"]), "--mixtures",
                       str(folders["mix"]), "--interferers", str(folders["int"]), "--out", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and str(folders["int"]) in err[0] and "wrong.wav" in err[0]
    assert not bad.exists()


@pytest.fixture
def tiny_run(tiny_se_run) -> Path:
    return tiny_se_run


@pytest.mark.parametrize("shuffle", [False, True])
def test_model_mode_reports_confusion_and_trial_aad(tiny_run, kul_dataset, tmp_path, shuffle):
    from speaker_extraction.evaluate import main

    out, plot = tmp_path / "report.json", tmp_path / "report.png"
    assert main(["--run", str(tiny_run), "--data", str(kul_dataset), "--out", str(out), "--plot", str(plot),
                 "--aad-windows", "1,5,20", "--no-progress"] + (["--shuffle-eeg"] if shuffle else [])) == 0
    report = json.loads(out.read_text())
    assert plot.is_file()
    confused = [row["confused"] for row in report["windows"]]
    assert report["overall"]["confusion_rate"] == pytest.approx(np.mean(confused))
    aad = report["extraction_aad"]
    # the tiny dataset's trials are 15 s long: 20-s windows do not fit and are reported as skipped
    assert aad["skipped_windows_s"] == [20.0] and set(aad["pooled"]) == {"1", "5"}
    n_test_trials = len({(row["subject"], row["trial"]) for row in report["windows"]})
    assert aad["pooled"]["5"]["n_windows"] == 3 * n_test_trials
    right = [row["r_attended"] > row["r_unattended"] for row in aad["windows"] if row["window_s"] == 1.0]
    assert aad["pooled"]["1"]["accuracy"] == pytest.approx(np.mean(right))
    for subject, entry in aad["subjects"].items():
        assert subject.startswith("S") and set(entry["accuracy"]) == {"1", "5"}


def test_bad_aad_windows_flag(tiny_run, kul_dataset, tmp_path, capsys):
    from speaker_extraction.evaluate import main

    for bad in ("1,x", "0", "-2", "nan"):
        out = tmp_path / "r.json"
        with pytest.raises(SystemExit) as info:
            run_cli(main, ["--run", str(tiny_run), "--data", str(kul_dataset), "--out", str(out),
                           "--aad-windows", bad, "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: --aad-windows")
        assert not out.exists()
