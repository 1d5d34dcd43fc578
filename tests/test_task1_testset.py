"""The Task 1 (match-mismatch) test set: the synthetic layout of reference section 4, and the path
predict -> submit -> score recovering a known accuracy (synthetic.task1_test_set,
task1_match_mismatch.predict, submit.py --task 1, evaluation.task1)."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import submit
from evaluation import task1 as scorer
from synthetic import task1_test_set
from util.errors import EEGKitError, run_cli
from util.inputs import NpzReader

TEST_SUBJECTS = ["sub-101", "sub-102"]  # conftest's task2_dataset: 2 test subjects of 1 min (61 s of features)


def _t1(root: Path) -> Path:
    return root / "test_set" / "TASK1_match_mismatch"


def _labels_dir(root: Path) -> Path:
    return root / "test_set" / "labels_task1"


def _read_npz(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


# ----------------------------------------------------------------------------- the layout (section 4)
def test_layout_file_names(task2_dataset):
    root = _t1(task2_dataset)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == sorted([f"{s}_mapping.json" for s in TEST_SUBJECTS]
                           + [f"preprocessed_eeg/{s}_eeg.npz" for s in TEST_SUBJECTS]
                           + ["stimulus/envelope_chunks_test.npz", "stimulus/mel_chunks_test.npz"])
    assert sorted(p.name for p in _labels_dir(task2_dataset).iterdir()) == [f"{s}.json" for s in TEST_SUBJECTS]
    for feature in ("envelope", "mel"):  # section 4: file names hold the feature and "chunks"
        assert [p for p in (root / "stimulus").iterdir() if feature in p.name and "chunks" in p.name]
    meta = json.loads((task2_dataset / "synthetic_task2.json").read_text())["task1_test_set"]
    assert meta["candidates"] == 5 and meta["segment_s"] == 5.0
    assert {s: v["segments"] for s, v in meta["subjects"].items()} == {"sub-101": 12, "sub-102": 12}


def test_layout_keys_shapes_and_labels(task2_dataset):
    root = _t1(task2_dataset)
    envelope = _read_npz(root / "stimulus" / "envelope_chunks_test.npz")
    mel = _read_npz(root / "stimulus" / "mel_chunks_test.npz")
    assert set(envelope) == set(mel)
    used = []
    for subject in TEST_SUBJECTS:
        mapping = json.loads((root / f"{subject}_mapping.json").read_text())
        labels = json.loads((_labels_dir(task2_dataset) / f"{subject}.json").read_text())
        eeg = _read_npz(root / "preprocessed_eeg" / f"{subject}_eeg.npz")
        assert len(mapping) == 12 and set(labels) == set(mapping)
        assert sorted(mapping) == sorted(f"{subject}_{k}" for k in range(12))
        for segment_id, entry in mapping.items():
            assert set(entry) == {"eeg", "stimulus"}
            assert isinstance(entry["eeg"], str) and entry["eeg"].startswith("eeg_")
            assert len(entry["stimulus"]) == 5 and all(isinstance(i, str) for i in entry["stimulus"])
            used += entry["stimulus"]
            assert type(labels[segment_id]) is int and 0 <= labels[segment_id] <= 4
        assert set(eeg) == {entry["eeg"] for entry in mapping.values()}
        assert all(a.shape == (320, 64) and a.dtype == np.float32 for a in eeg.values())
        assert all(2.0 < a.std() < 200.0 for a in eeg.values())  # unnormalised, microvolt scale
        counts = np.bincount(list(labels.values()), minlength=5)  # balanced: 12 = 3 + 3 + 2 + 2 + 2
        assert sorted(counts.tolist()) == [2, 2, 2, 3, 3]
    assert len(used) == len(set(used)) == len(envelope)  # a fresh id per (segment, position)
    assert all(a.shape == (320, 1) and a.dtype == np.float32 for a in envelope.values())
    assert all(a.shape == (320, 10) and a.dtype == np.float32 for a in mel.values())


def test_matched_stimulus_is_time_aligned_and_imposters_are_matched_elsewhere(task2_dataset):
    """The Task 2 test set holds the same recording in 30-s segments: the matched envelope of a Task 1
    segment is the Task 2 envelope label at the rows of its EEG; each imposter is the matched segment
    of another EEG segment of the same subject (same story), never the segment's own."""
    root = _t1(task2_dataset)
    envelope = _read_npz(root / "stimulus" / "envelope_chunks_test.npz")
    t2 = task2_dataset / "test_set" / "TASK2_regression"
    for subject in TEST_SUBJECTS:
        mapping = json.loads((root / f"{subject}_mapping.json").read_text())
        labels = json.loads((_labels_dir(task2_dataset) / f"{subject}.json").read_text())
        eeg = _read_npz(root / "preprocessed_eeg" / f"{subject}_eeg.npz")
        t2_eeg = _read_npz(t2 / "preprocessed_eeg" / f"{subject}_eeg.npz")
        t2_map = json.loads((t2 / f"{subject}_mapping.json").read_text())
        t2_env = json.loads((task2_dataset / "test_set" / "labels_envelope" / f"{subject}.json").read_text())
        # every 5-s EEG window inside the 30-s Task 2 segments, with its envelope
        windows = {}
        for segment_id, entry in t2_map.items():
            long_eeg, long_env = t2_eeg[entry["eeg"]], np.asarray(t2_env[segment_id][0], dtype=np.float32)
            for w in range(6):
                windows[long_eeg[w * 320:(w + 1) * 320].tobytes()] = long_env[w * 320:(w + 1) * 320]
        matched = {}
        for segment_id, entry in mapping.items():
            own = envelope[entry["stimulus"][labels[segment_id]]]
            np.testing.assert_array_equal(own, windows[eeg[entry["eeg"]].tobytes()])
            matched[segment_id] = own.tobytes()
        for segment_id, entry in mapping.items():
            others = {v for k, v in matched.items() if k != segment_id}
            imposters = [envelope[i].tobytes() for p, i in enumerate(entry["stimulus"]) if p != labels[segment_id]]
            assert len(set(imposters)) == 4 and all(x in others for x in imposters)


def test_write_test_set_is_deterministic_and_balanced(tmp_path):
    rng = np.random.default_rng(0)
    frames = 320 * 23 + 100  # 23 whole windows and a dropped tail
    subjects = [("sub-201", "story_a", rng.standard_normal((frames, 64)), rng.standard_normal((frames, 1)),
                 rng.random((frames, 10)))]
    a = task1_test_set.write_test_set(tmp_path / "a", subjects, seed=3)
    task1_test_set.write_test_set(tmp_path / "b", subjects, seed=3)
    task1_test_set.write_test_set(tmp_path / "c", subjects, seed=4)
    assert a["subjects"] == {"sub-201": {"story": "story_a", "segments": 23}}
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    labels = json.loads((tmp_path / "a" / "test_set" / "labels_task1" / "sub-201.json").read_text())
    assert sorted(np.bincount(list(labels.values()), minlength=5).tolist()) == [4, 4, 5, 5, 5]
    other = json.loads((tmp_path / "c" / "test_set" / "labels_task1" / "sub-201.json").read_text())
    assert other != labels  # another seed, other positions
    short = [("sub-202", "s", np.ones((320 * 4, 64)), np.ones((320 * 4, 1)), np.ones((320 * 4, 10)))]
    with pytest.raises(EEGKitError, match="4 whole 5-s windows, need at least 5"):
        task1_test_set.write_test_set(tmp_path / "d", short)


# ----------------------------------------------------------------------------- scorer maths
def test_chance_summary_golden():
    # Bin(40, 0.2): P(X <= 11) = 0.9125, P(X <= 12) = 0.9568 -> threshold 12/40 = 0.30
    block = scorer.chance_summary(13, 40, 5)
    assert block["chance"] == 0.2 and block["significance_threshold"] == 0.3
    assert block["accuracy"] == 13 / 40 and block["significant"] is True
    assert scorer.chance_summary(12, 40, 5)["significant"] is False  # equal to the threshold: not above
    assert block["chance_range95"] == [3 / 40, 13 / 40]  # Bin(40, 0.2) 2.5 % and 97.5 % quantiles
    lo, hi = block["ci95"]
    from scipy import stats
    assert lo == pytest.approx(stats.beta.ppf(0.025, 13, 28)) and hi == pytest.approx(stats.beta.ppf(0.975, 14, 27))
    # two candidates: the AAD threshold (chance 0.5) is the same function
    from evaluation.aad import significance_threshold
    assert scorer.chance_summary(0, 20, 2)["significance_threshold"] == significance_threshold(20) == 0.7


def test_score_missing_counts_as_wrong_and_extra_ignored():
    labels = {"sub-001": {"a": 0, "b": 1, "c": 2, "d": 3}, "sub-002": {"e": 4, "f": 0}}
    predictions = {"a": 0, "b": 1, "c": 0, "e": 4, "f": 0, "zzz": 1}  # d missing
    report = scorer.score(predictions, labels)
    assert report["per_subject"] == {"sub-001": 0.5, "sub-002": 1.0}
    assert report["score"] == 0.75 and report["std_over_subjects"] == 0.25
    assert report["n_missing"] == 1 and report["missing_ids"] == ["d"] and report["n_extra"] == 1
    assert report["overall"]["n_correct"] == 4 and report["overall"]["n_segments"] == 6
    assert any("1 segment(s) have no prediction" in w for w in report["warnings"])


def test_control_warning_flags_a_no_eeg_control_above_chance():
    labels = {"sub-001": {f"s{i}": i % 5 for i in range(50)}}
    real = {f"s{i}": i % 5 for i in range(50)}
    knows_stimuli = {f"s{i}": (i % 5 if i < 20 else (i + 1) % 5) for i in range(50)}  # 20/50 without EEG
    guesses = {f"s{i}": (i % 5 if i < 10 else (i + 1) % 5) for i in range(50)}  # 10/50 = chance
    report = scorer.score(real, labels, controls={"noise EEG": knows_stimuli, "mismatched EEG": guesses})
    assert report["controls"]["noise EEG"]["score"] == 0.4 and report["controls"]["mismatched EEG"]["score"] == 0.2
    assert len(report["warnings"]) == 1 and report["warnings"][0].startswith("noise EEG control: accuracy 40.0 %")
    assert "without the EEG" in report["warnings"][0]
    assert scorer.control_warnings({"no EEG": (10, 50)}) == []
    assert scorer.beats_chance(16, 50) and not scorer.beats_chance(15, 50)  # threshold of Bin(50, 0.2): 15/50


@pytest.mark.parametrize("value, text", [(5, "index 5 is out of range"), (-1, "index -1 is out of range"),
                                         (2.0, "2.0 is a float"), (True, "True is a boolean"),
                                         ("2", "'2' is a string"), (None, "None is null")])
def test_index_value_refuses(value, text):
    with pytest.raises(EEGKitError, match=text.replace("(", r"\(")):
        scorer.index_value(value, "f.json: segment x")
    assert scorer.index_value(4, "w") == 4


# ----------------------------------------------------------------------------- predict -> submit -> score
class EnvelopeCosine(torch.nn.Module):
    """Stand-in match-mismatch model: cosine similarity over time between the channel-mean EEG and each
    candidate's first band. ``(batch, T, 64), (batch, K, T, bands) -> (batch, K)``."""

    def forward(self, eeg, stimuli):
        e = eeg.mean(dim=-1)  # (batch, T)
        s = stimuli[..., 0]  # (batch, K, T)
        e = e - e.mean(dim=-1, keepdim=True)
        s = s - s.mean(dim=-1, keepdim=True)
        return torch.nn.functional.cosine_similarity(e[:, None, :], s, dim=-1)  # (batch, K)


def _known_test_set(task2_dataset: Path, dst: Path, n_right: dict[str, int]) -> dict[str, dict[str, int]]:
    """A copy of the Task 1 test set whose EEG carries one candidate's envelope (plus noise): the matched
    one for the first ``n_right[subject]`` segments (sorted ids), the next position's for the rest.
    Returns the expected choices {subject: {segment_id: index}}."""
    src = _t1(task2_dataset)
    shutil.copytree(src, dst)
    envelope = _read_npz(src / "stimulus" / "envelope_chunks_test.npz")
    rng = np.random.default_rng(0)
    expected = {}
    for subject in TEST_SUBJECTS:
        mapping = json.loads((src / f"{subject}_mapping.json").read_text())
        labels = json.loads((_labels_dir(task2_dataset) / f"{subject}.json").read_text())
        arrays, expected[subject] = {}, {}
        for k, segment_id in enumerate(sorted(mapping)):
            index = labels[segment_id] if k < n_right[subject] else (labels[segment_id] + 1) % 5
            carried = envelope[mapping[segment_id]["stimulus"][index]]  # (320, 1)
            arrays[mapping[segment_id]["eeg"]] = (30.0 * np.tile(carried, (1, 64))
                                                  + rng.normal(0, 0.3, (320, 64))).astype(np.float32)
            expected[subject][segment_id] = index
        np.savez(dst / "preprocessed_eeg" / f"{subject}_eeg.npz", **arrays)
    return expected


def _stand_in(monkeypatch, feature="envelope"):
    from task1_match_mismatch import predict

    monkeypatch.setattr(predict, "load_run",
                        lambda run, checkpoint="best": (EnvelopeCosine(), {"data": {"feature": feature}}))
    return predict


def test_predict_submit_score_recovers_a_known_accuracy(task2_dataset, tmp_path, monkeypatch, capsys):
    predict = _stand_in(monkeypatch)
    n_right = {"sub-101": 9, "sub-102": 4}  # 9/12 and 4/12 right: score (0.75 + 1/3) / 2
    test_dir = tmp_path / "t1"
    expected = _known_test_set(task2_dataset, test_dir, n_right)
    pred, out = tmp_path / "pred", tmp_path / "sub"
    assert predict.main(["--run", str(tmp_path / "run"), "--test-set", str(test_dir), "--out", str(pred)]) == 0
    for subject in TEST_SUBJECTS:
        assert json.loads((pred / f"{subject}.json").read_text()) == expected[subject]
    assert submit.main(["--task", "1", "--predictions", str(pred), "--test-set", str(test_dir), "--group", "team-a",
                        "--out", str(out)]) == 0
    zip_path = out / "task_1_group_team-a_submission_1.zip"
    with zipfile.ZipFile(zip_path) as archive:
        assert sorted(archive.namelist()) == ["sub-101.json", "sub-102.json"]  # flat
        for subject in TEST_SUBJECTS:
            assert json.loads(archive.read(f"{subject}.json")) == expected[subject]
    capsys.readouterr()
    report_path = tmp_path / "report.json"
    assert scorer.main(["--predictions", str(zip_path), "--labels", str(_labels_dir(task2_dataset)),
                        "--out", str(report_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    assert report["per_subject"] == {"sub-101": 0.75, "sub-102": pytest.approx(4 / 12)}
    assert report["score"] == pytest.approx((0.75 + 4 / 12) / 2)
    assert report["overall"]["n_correct"] == 13 and report["overall"]["n_segments"] == 24
    assert report["n_missing"] == 0 and report["warnings"] == []
    assert "score (mean over 2 subjects): 54.2 %" in printed
    # the folder scores the same as the zip; a second submission is number 2
    assert scorer.score(scorer.load_predictions(pred), scorer.load_labels(_labels_dir(task2_dataset)))["score"] == \
        report["score"]
    assert submit.main(["--task", "1", "--predictions", str(pred), "--test-set", str(test_dir), "--group", "team-a",
                        "--out", str(out)]) == 0
    assert (out / "task_1_group_team-a_submission_2.zip").is_file()


def test_all_right_scores_one_and_the_real_test_set_is_predicted(task2_dataset, tmp_path, monkeypatch):
    predict = _stand_in(monkeypatch)
    test_dir = tmp_path / "t1"
    _known_test_set(task2_dataset, test_dir, {"sub-101": 12, "sub-102": 12})
    chosen = predict.predict_test_set(tmp_path, test_dir, progress=False)
    report = scorer.score({k: v for s in chosen.values() for k, v in s.items()},
                          scorer.load_labels(_labels_dir(task2_dataset)))
    assert report["score"] == 1.0 and report["overall"]["significant"]
    # on the untouched synthetic test set the stand-in runs end to end (any accuracy; indices 0..4)
    real = predict.predict_test_set(tmp_path, _t1(task2_dataset), progress=False)
    assert {s: sorted(v) for s, v in real.items()} == \
        {s: sorted(json.loads((_t1(task2_dataset) / f"{s}_mapping.json").read_text())) for s in TEST_SUBJECTS}
    assert all(0 <= i <= 4 for s in real.values() for i in s.values())


def test_predict_z_scores_each_segment(task2_dataset, tmp_path, monkeypatch):
    """Scaling and offsetting the EEG of a segment, or a stimulus, does not change the choice."""
    predict = _stand_in(monkeypatch)
    test_dir = tmp_path / "t1"
    _known_test_set(task2_dataset, test_dir, {"sub-101": 6, "sub-102": 6})
    inputs = predict.read_test_set(test_dir, "envelope")
    ids, eeg, candidates = inputs["sub-101"]
    base = predict.choose(EnvelopeCosine(), eeg, candidates)
    scaled = predict.choose(EnvelopeCosine(), [1e3 * x + 50.0 for x in eeg], [c * 7.0 - 3.0 for c in candidates])
    assert scaled == base


def test_controls_break_the_link_to_the_eeg(task2_dataset, tmp_path, monkeypatch):
    predict = _stand_in(monkeypatch)
    test_dir = tmp_path / "t1"
    _known_test_set(task2_dataset, test_dir, {"sub-101": 12, "sub-102": 12})
    labels = scorer.load_labels(_labels_dir(task2_dataset))
    for control in ("noise", "mismatched"):
        chosen = predict.predict_test_set(tmp_path, test_dir, eeg_transform=predict.CONTROLS[control](0),
                                          progress=False)
        report = scorer.score({k: v for s in chosen.values() for k, v in s.items()}, labels)
        assert report["score"] < 0.5, control  # 1.0 with the real EEG; chance is 0.2
    segments = [np.full((320, 2), float(i)) for i in range(4)]
    shuffled = predict.mismatched_control(0)("sub-101", list("abcd"), segments)
    assert all(not np.array_equal(a, b) for a, b in zip(shuffled, segments))  # nobody keeps its own EEG
    assert sorted(float(x[0, 0]) for x in shuffled) == [0.0, 1.0, 2.0, 3.0]


def test_submit_cli_process_and_help(task2_dataset, tmp_path, monkeypatch):
    predict = _stand_in(monkeypatch)
    pred = tmp_path / "pred"
    predict.main(["--run", str(tmp_path / "run"), "--test-set", str(_t1(task2_dataset)), "--out", str(pred)])
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "submit.py", "--task", "1", "--predictions", str(pred), "--test-set",
                             str(_t1(task2_dataset)), "--group", "g", "--out", str(tmp_path / "out")],
                            cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "task_1_group_g_submission_1.zip (2 subjects, 24 segments; an index 0..4 each)" in result.stdout
    for module in ("task1_match_mismatch.predict", "evaluation.task1"):
        with pytest.raises(SystemExit) as info:
            run_cli(__import__(module, fromlist=["main"]).main, ["--help"])
        assert info.value.code == 0


# ----------------------------------------------------------------------------- real runs of task1_match_mismatch
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ridge_run(task2_dataset, tmp_path_factory) -> Path:
    """The ridge baseline trained (closed form) on conftest's tiny dataset; 1-s windows, because its 6-s
    validation recordings are too short for 5-s windows with 4 non-overlapping imposters; 8 taps (125 ms)
    keep the closed-form solve small (64 x 8 lagged channels)."""
    import yaml

    from task1_match_mismatch.train import train

    cfg = yaml.safe_load((REPO / "task1_match_mismatch" / "configs" / "ridge.yaml").read_text())
    cfg["data"]["window_s"] = 1.0
    cfg["model"]["n_taps"] = 8
    run = tmp_path_factory.mktemp("task1_ridge") / "run"
    train(cfg, task2_dataset, run, say=lambda message: None)
    return run


def _choices_by_hand(model, test_dir: Path, feature: str) -> dict[str, dict[str, int]]:
    """The model's choice per segment, read with np.load and z-scored here (independent of predict.py)."""
    stimuli = _read_npz(test_dir / "stimulus" / f"{feature}_chunks_test.npz")
    out = {}
    for subject in TEST_SUBJECTS:
        mapping = json.loads((test_dir / f"{subject}_mapping.json").read_text())
        eeg = _read_npz(test_dir / "preprocessed_eeg" / f"{subject}_eeg.npz")
        z = lambda x: (x - x.mean(0)) / x.std(0)  # noqa: E731
        out[subject] = {}
        for segment_id, entry in mapping.items():
            e = torch.from_numpy(z(eeg[entry["eeg"]].astype(np.float64)).astype(np.float32))[None]  # (1, 320, 64)
            s = torch.from_numpy(np.stack([z(stimuli[i].astype(np.float64)) for i in entry["stimulus"]])
                                 .astype(np.float32))[None]  # (1, 5, 320, bands)
            with torch.no_grad():
                out[subject][segment_id] = int(model(e, s).argmax())
    return out


def test_trained_ridge_run_predict_submit_score(ridge_run, task2_dataset, tmp_path, capsys):
    from task1_match_mismatch import predict

    test_dir, labels_dir = _t1(task2_dataset), _labels_dir(task2_dataset)
    pred, out = tmp_path / "pred", tmp_path / "sub"
    assert predict.main(["--run", str(ridge_run), "--test-set", str(test_dir), "--out", str(pred)]) == 0
    model, cfg = predict.load_run(ridge_run)
    assert cfg["data"]["feature"] == "envelope"
    expected = _choices_by_hand(model, test_dir, "envelope")
    for subject in TEST_SUBJECTS:
        assert json.loads((pred / f"{subject}.json").read_text()) == expected[subject]
    assert submit.main(["--task", "1", "--predictions", str(pred), "--test-set", str(test_dir), "--group", "g",
                        "--out", str(out)]) == 0
    capsys.readouterr()
    assert scorer.main(["--predictions", str(out / "task_1_group_g_submission_1.zip"), "--labels",
                        str(labels_dir), "--out", str(tmp_path / "report.json")]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    labels = {s: json.loads((labels_dir / f"{s}.json").read_text()) for s in TEST_SUBJECTS}
    known = {s: np.mean([expected[s][i] == labels[s][i] for i in labels[s]]) for s in TEST_SUBJECTS}
    assert report["per_subject"] == pytest.approx(known)
    assert report["score"] == pytest.approx(np.mean(list(known.values())))


def test_a_dilated_conv_checkpoint_is_rebuilt_from_its_config(task2_dataset, tmp_path):
    """load_run rebuilds the model of best.pt from its stored config (mel run: the mel chunks are read)."""
    import yaml

    from task1_match_mismatch import predict
    from task1_match_mismatch.models import build_model
    from task1_match_mismatch.train import check_config
    from util.training import save_checkpoint

    raw = yaml.safe_load((REPO / "task1_match_mismatch" / "configs" / "dilated_conv_small.yaml").read_text())
    raw["data"]["feature"] = "mel"
    cfg = check_config(raw)
    torch.manual_seed(0)
    model = build_model(cfg["model"]).eval()
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", model, cfg, task="task1")
    chosen = predict.predict_test_set(run, _t1(task2_dataset), progress=False)
    assert chosen == _choices_by_hand(model, _t1(task2_dataset), "mel")
