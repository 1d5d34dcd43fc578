"""Task 2 scores of a trained run without a test set: within-subject, and on held-out subjects.

    python -m task2_regression.evaluate --run RUN --data DATASET [--split test] [--segment-s 30] \
        [--checkpoint best] [--out report.json]
    python -m task2_regression.evaluate --heldout --run RUN --data DATASET [--segment-s 30] \
        [--curve 5,10,20,30] [--no-costly-controls] [--out report.json] [--plot curve.png]

Held-out subjects (`evaluate_heldout`, `--heldout`): a run trained with `train.py --holdout-subjects`
stores them in its config (`data.holdout_subjects`); their whole recordings (train, val and test
parts joined) are cut into segments, each EEG segment z-scored on its own (the subjects are unseen,
as on the test set), and scored with the official rule, beside the controls of
`evaluation.controls` (noise EEG, circular-shift null per subject with Holm across subjects,
mismatched EEG), at `--segment-s` and along a score-vs-segment-length curve (JSON `curve` + PNG).

The split_data test part (last 10 % of every training recording, i.e. subjects and stories seen in
training) is cut into consecutive non-overlapping `segment_s` segments (a tail shorter than one
segment is dropped; recordings shorter than one segment are skipped). Each EEG segment is
normalised the way the run was trained (`data.normalize`: `recording` uses the recording's
train-part statistics, which exist for these subjects; `window` z-scores the segment), predicted,
padded at the end to the segment length, and scored with the official rule of
`evaluation.task2.score` (band-averaged Pearson per segment, mean per subject, mean over
subjects) against the raw (unnormalised) target. The report adds, per subject, the per-band mean
and std over that subject's segments. This lets a user without a held-out test set report both
numbers (within-subject and held-out subjects), like the 2023 edition did.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from evaluation.task2 import format_report, pearson_per_band, score
from util.atomic import atomic_write_json
from util.errors import EEGKitError, run_cli
from util.features import FS_TASK2
from util.windowing import seconds_to_samples

FS = FS_TASK2


def segment_recordings(recordings, target: str, segment: int):
    """Yield (subject, segment_id, eeg (segment, 64) normalised, label (segment, bands) raw)."""
    for rec in recordings:
        for k, start in enumerate(range(0, rec.n_samples - segment + 1, segment)):
            eeg = rec.window("eeg", start, segment)  # (segment, 64), normalised as in training
            label = rec.raw_window(target, start, segment)  # (segment, bands), as stored
            yield rec.subject, f"{rec.subject}_{rec.stimulus}_{k}", eeg, label


@torch.no_grad()
def evaluate_within_subject(run_dir, data_dir, split: str = "test", segment_s: float = 30.0,
                            checkpoint: str = "best", progress: bool = True) -> dict:
    """Score report (see `evaluation.task2.score`) plus per-subject per-band mean/std."""
    from task2_regression.predict import load_run_model, model_channels, pad_to_length
    from task2_regression.data import load_recordings

    model, cfg = load_run_model(run_dir, checkpoint)
    target = cfg.get("target", "mel")
    normalize = cfg.get("data", {}).get("normalize", "recording")
    segment = seconds_to_samples(float(segment_s), FS)
    if segment < 16:
        raise EEGKitError(f"--segment-s {segment_s}: too short (need at least 16 frames)")
    recordings = load_recordings(data_dir, split, features=("eeg", target), normalize=normalize,
                                 n_channels=model_channels(cfg))
    predictions: dict[str, np.ndarray] = {}
    labels: dict[str, dict[str, np.ndarray]] = {}
    items = list(segment_recordings(recordings, target, segment))
    if not items:
        longest = max(r.n_samples for r in recordings) / FS
        raise EEGKitError(f"{data_dir}: no {split!r} recording is at least {segment_s:g} s long "
                          f"(longest {longest:.1f} s); use a shorter --segment-s")
    batch_size = 8
    for start in tqdm(range(0, len(items), batch_size), desc="within-subject segments", disable=not progress):
        chunk = items[start : start + batch_size]
        eeg = torch.from_numpy(np.stack([item[2] for item in chunk]))  # (batch, segment, 64)
        pred = model(eeg)[target].float().numpy()  # (batch, time_out, bands)
        for (subject, segment_id, _, label), p in zip(chunk, pred):
            predictions[segment_id] = pad_to_length(p, segment)
            labels.setdefault(subject, {})[segment_id] = label
    report = score(predictions, labels)
    per_subject_bands = {}
    for subject, segments in labels.items():
        rows = np.array([pearson_per_band(predictions[sid], label) for sid, label in segments.items()])  # (n, bands)
        per_subject_bands[subject] = {"band_mean": rows.mean(axis=0).tolist(), "band_std": rows.std(axis=0).tolist(),
                                      "segment_std": float(rows.mean(axis=1).std()), "n_segments": len(rows)}
    report.update({"split": split, "segment_s": float(segment_s), "checkpoint": checkpoint,
                   "per_subject_bands": per_subject_bands, "run": str(run_dir)})
    return report


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--heldout" in argv:
        return main_heldout([arg for arg in argv if arg != "--heldout"])
    parser = argparse.ArgumentParser(
        prog="python -m task2_regression.evaluate",
        description="Score a trained Task 2 run on the within-subject split_data test split (30-s segments, "
                    "official scoring rule), per subject and per band.")
    parser.add_argument("--heldout", action="store_true",
                        help="instead: score the run's held-out subjects (train.py --holdout-subjects) as unseen "
                             "subjects, with controls and a score-vs-segment-length curve "
                             "(see `--heldout --help`)")
    parser.add_argument("--run", required=True, help="run folder written by task2_regression/train.py")
    parser.add_argument("--data", required=True, help="dataset root holding derivatives/split_data/")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="split_data split to score (default: test; never tune on it)")
    parser.add_argument("--segment-s", type=float, default=30.0, help="segment length in seconds (default 30)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last", "averaged"),
                        help="which checkpoint of the run to use (default: best)")
    parser.add_argument("--out", default=None, help="write the full report as JSON to this file")
    args = parser.parse_args(argv)
    report = evaluate_within_subject(args.run, args.data, args.split, args.segment_s, args.checkpoint,
                                     progress=sys.stderr.isatty())
    print(format_report(report))
    for subject, bands in report["per_subject_bands"].items():
        means = " ".join(f"{v:.3f}" for v in bands["band_mean"])
        print(f"{subject}: per-band mean {means}")
    if args.out:
        atomic_write_json(args.out, report, indent=2)
        print(f"report written to {args.out}")
    return 0


# --------------------------------------------------------------------------- held-out subjects
CURVE_SEGMENTS_S = (5.0, 10.0, 20.0, 30.0)  # the score-vs-segment-length curve


def _cut_segments(array: np.ndarray, segment: int) -> list[np.ndarray]:
    """Consecutive non-overlapping (segment, C) pieces of (T, C); the tail shorter than a segment is dropped."""
    return [array[start : start + segment] for start in range(0, len(array) - segment + 1, segment)]


def _subject_series(items: dict, subject: str) -> np.ndarray:
    return np.concatenate(items[subject])  # (n_segments * segment, bands)


def heldout_scores(model, target: str, recordings, segment: int, controls: bool = True, costly: bool = True,
                   n_shifts: int = 100, seed: int = 0) -> dict:
    """Score unseen-subject recordings at one segment length, with the controls of `evaluation.controls`.

    recordings: `task2_regression.data.whole_recordings` output (raw EEG and target). Each EEG segment
    is z-scored on its own and predicted (`predict.predict_segments`, as on the test set) and scored
    against the raw target with the official rule. Controls (``controls``): the circular-shift null
    per subject on the subject's segments joined in time (shifts >= 2 s, the same segment rule); with
    ``costly`` also the noise EEG (Gaussian, each recording's per-channel mean and std) and the
    mismatched EEG (the EEG of another recording of the same subject, another stimulus where one
    exists, paired with this recording's target). Top-level null: the same on all subjects' segments
    joined (every segment weighs the same; the score weighs subjects the same).
    """
    from evaluation import controls as ctl
    from task2_regression.predict import predict_segments

    rng = np.random.default_rng(seed)
    labels: dict[str, dict[str, np.ndarray]] = {}
    eeg_segments: list[np.ndarray] = []
    ids: list[str] = []
    owners: list[int] = []  # recording index of each segment
    for index, (subject, stimulus, arrays) in enumerate(recordings):
        for k, (eeg, label) in enumerate(zip(_cut_segments(arrays["eeg"], segment),
                                             _cut_segments(arrays[target], segment))):
            segment_id = f"{subject}_{stimulus}_{k}"
            labels.setdefault(subject, {})[segment_id] = label
            eeg_segments.append(eeg)
            ids.append(segment_id)
            owners.append(index)
    if not ids:
        raise EEGKitError(f"no held-out recording is at least {segment / FS:g} s long")
    predictions = dict(zip(ids, predict_segments(model, target, eeg_segments)))
    report = score(predictions, labels)
    report["segment_s"] = segment / FS
    if not controls:
        return report

    # circular-shift null per subject, on the subject's predictions and targets joined in time
    per_subject_pred = {s: [predictions[i] for i in seg] for s, seg in labels.items()}
    per_subject_label = {s: list(seg.values()) for s, seg in labels.items()}
    nulls = {}
    for subject in labels:
        pred, label = _subject_series(per_subject_pred, subject), _subject_series(per_subject_label, subject)
        try:
            nulls[subject] = ctl.circular_shift_null(pred, label, FS, n_shifts=n_shifts, rng=rng, segment=segment,
                                                     observed=report["per_subject"][subject])
        except ValueError:  # too short for 2-s shifts both ways
            nulls[subject] = None
    everything_pred = np.concatenate([_subject_series(per_subject_pred, s) for s in labels])
    everything_label = np.concatenate([_subject_series(per_subject_label, s) for s in labels])
    null_all = ctl.circular_shift_null(everything_pred, everything_label, FS, n_shifts=n_shifts, rng=rng,
                                       segment=segment, observed=report["score"])

    noise_report = mismatched_report = None
    if costly:
        noise_segments = []
        noise_recordings = [ctl.noise_eeg(arrays["eeg"], rng) for _, _, arrays in recordings]
        for index, (subject, stimulus, arrays) in enumerate(recordings):
            noise_segments += _cut_segments(noise_recordings[index], segment)
        noise_pred = dict(zip(ids, predict_segments(model, target, noise_segments)))
        noise_report = score(noise_pred, labels)
        # mismatched: another recording of the same subject; both cut to the shorter one
        pairs = ctl.mismatched_pairs([(subject, stimulus) for subject, stimulus, _ in recordings])
        mis_labels: dict[str, dict[str, np.ndarray]] = {}
        mis_eeg, mis_ids = [], []
        for index, other in enumerate(pairs):
            if other is None:
                continue
            subject, stimulus, arrays = recordings[index]
            other_eeg = recordings[other][2]["eeg"]
            n = min(len(other_eeg), len(arrays[target]))
            for k, (eeg, label) in enumerate(zip(_cut_segments(other_eeg[:n], segment),
                                                 _cut_segments(arrays[target][:n], segment))):
                segment_id = f"{subject}_{stimulus}_{k}"
                mis_labels.setdefault(subject, {})[segment_id] = label
                mis_eeg.append(eeg)
                mis_ids.append(segment_id)
        if mis_ids:
            mismatched_report = score(dict(zip(mis_ids, predict_segments(model, target, mis_eeg))), mis_labels)

    def sub(report_part, subject):
        return None if report_part is None or subject not in report_part["per_subject"] else \
            report_part["per_subject"][subject]

    report["per_subject_controls"] = {
        subject: ctl.control_report(report["per_subject"][subject], sub(noise_report, subject), nulls[subject],
                                    sub(mismatched_report, subject))
        for subject in labels}
    block = ctl.control_report(report["score"], None if noise_report is None else noise_report["score"], null_all,
                               None if mismatched_report is None else mismatched_report["score"])
    report.update(block)
    significance = ctl.significance_block({s: (n or {}).get("p_value") for s, n in nulls.items()}, n_shifts)
    report["significance"] = significance
    report["warnings"] = list(report["warnings"]) + list(significance["warnings"])
    return report


def evaluate_heldout(run_dir, data_dir, segment_s: float = 30.0, curve_s=CURVE_SEGMENTS_S,
                     checkpoint: str = "best", controls: bool = True, costly: bool = True, n_shifts: int = 100,
                     seed: int = 0) -> dict:
    """Subject-independent score of a run on its held-out subjects (``data.holdout_subjects`` in its config).

    The main report is at ``segment_s``; ``curve`` holds the score and its controls at each length of
    ``curve_s`` (short segments inflate the spread and reward EEG-independent patterns).
    """
    from task2_regression.data import whole_recordings
    from task2_regression.predict import load_run_model, model_channels

    model, cfg = load_run_model(run_dir, checkpoint)
    target = cfg.get("target", "mel")
    subjects = list(cfg.get("data", {}).get("holdout_subjects") or [])
    if not subjects:
        raise EEGKitError(f"{run_dir}: the run has no held-out subjects (data.holdout_subjects is empty); "
                          f"train it with --holdout-subjects")
    lengths = sorted(set(float(s) for s in curve_s) | {float(segment_s)})
    for length in lengths:
        if seconds_to_samples(length, FS) < 16:
            raise EEGKitError(f"--segment-s/--curve {length:g}: too short (need at least 16 frames)")
    recordings = whole_recordings(data_dir, subjects, ("eeg", target), n_channels=model_channels(cfg))
    longest = max(len(arrays["eeg"]) for _, _, arrays in recordings) / FS
    if longest < float(segment_s):
        raise EEGKitError(f"{data_dir}: no held-out recording is at least {segment_s:g} s long "
                          f"(longest {longest:.1f} s); use a shorter --segment-s")
    curve = {}
    for length in lengths:
        if longest < length:
            continue
        curve[format(length, "g")] = heldout_scores(model, target, recordings, seconds_to_samples(length, FS),
                                                    controls, costly, n_shifts, seed)
    report = dict(curve[format(float(segment_s), "g")])
    report.update({"mode": "heldout_subjects", "heldout_subjects": subjects, "segment_s": float(segment_s),
                   "normalisation": "per segment (z-score over time per channel, as on the test set)",
                   "checkpoint": checkpoint, "run": str(run_dir), "target": target,
                   "curve": {length: _curve_point(part) for length, part in curve.items()}})
    return report


def _curve_point(part: dict) -> dict:
    keys = ("score", "std_over_subjects", "n_segments", "controls", "score_above_noise", "warnings")
    return {key: part.get(key) for key in keys}


def format_curve(report: dict) -> str:
    """Table of the score-vs-segment-length curve with its controls."""
    lines = [f"{'segment':>8} {'score':>8} {'noise EEG':>10} {'shift mean':>11} {'shift p95':>10} "
             f"{'mismatched':>11} {'segments':>9}"]

    def value(x):
        return "n/a" if x is None else f"{x:.4f}"

    for length, point in report["curve"].items():
        controls = point.get("controls") or {}
        shift = controls.get("circular_shift") or {}
        lines.append(f"{length + ' s':>8} {point['score']:>8.4f} "
                     f"{value((controls.get('noise_eeg') or {}).get('score')):>10} {value(shift.get('mean')):>11} "
                     f"{value(shift.get('p95')):>10} {value((controls.get('mismatched_eeg') or {}).get('score')):>11} "
                     f"{point['n_segments']:>9}")
    return "\n".join(lines)


def plot_curve(report: dict, png_path) -> None:
    """Score vs segment length with the noise-EEG, mismatched-EEG and circular-shift controls, saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from util.atomic import atomic_savefig

    lengths = [float(k) for k in report["curve"]]
    points = list(report["curve"].values())

    def series(get):
        return [np.nan if get(p) is None else get(p) for p in points]

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(lengths, [p["score"] for p in points], yerr=[p["std_over_subjects"] for p in points], marker="o",
                capsize=3, label="score (std over subjects)")
    controls = lambda p: p.get("controls") or {}  # noqa: E731
    ax.plot(lengths, series(lambda p: (controls(p).get("noise_eeg") or {}).get("score")), "s--", label="noise EEG")
    ax.plot(lengths, series(lambda p: (controls(p).get("mismatched_eeg") or {}).get("score")), "^--",
            label="mismatched EEG")
    ax.plot(lengths, series(lambda p: (controls(p).get("circular_shift") or {}).get("p95")), "k:",
            label="circular shift p95")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("segment length (s)")
    ax.set_ylabel("mean Pearson r")
    ax.set_xticks(lengths)
    ax.set_title(f"held-out subjects: {', '.join(report['heldout_subjects'])}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, png_path, dpi=120)
    plt.close(fig)


def main_heldout(argv: Sequence[str]) -> int:
    """CLI of the held-out-subjects mode (``--heldout``)."""
    from evaluation.aad import parse_windows
    from evaluation.controls import format_controls

    parser = argparse.ArgumentParser(
        prog="python -m task2_regression.evaluate --heldout",
        description="Subject-independent score of a run trained with --holdout-subjects: its held-out subjects "
                    "(read from the run's config, data.holdout_subjects) are scored as unseen subjects over their "
                    "whole recordings, each segment z-scored on its own as on the test set, with the controls "
                    "(noise EEG, circular-shift null, mismatched EEG) and a score-vs-segment-length curve.")
    parser.add_argument("--run", required=True, help="run folder written by task2_regression/train.py --holdout-subjects")
    parser.add_argument("--data", required=True, help="the dataset root the run was trained on")
    parser.add_argument("--segment-s", type=float, default=30.0,
                        help="segment length of the main report in seconds (default 30, as the test set)")
    parser.add_argument("--curve", default=",".join(format(v, "g") for v in CURVE_SEGMENTS_S),
                        help="segment lengths (s) of the score-vs-segment-length curve (default 5,10,20,30)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last", "averaged"),
                        help="which checkpoint of the run to use (default: best)")
    parser.add_argument("--n-shifts", type=int, default=100,
                        help="circular shifts of the null per subject (default 100)")
    parser.add_argument("--no-costly-controls", action="store_true",
                        help="skip the controls that need extra model passes (noise EEG, mismatched EEG); the "
                             "circular-shift null is always computed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise EEG and the shifts (default 0)")
    parser.add_argument("--out", default=None, help="write the report (with the curve) as JSON to this file")
    parser.add_argument("--plot", default=None, help="write the score-vs-segment-length curve to this PNG")
    args = parser.parse_args(argv)
    if args.n_shifts < 1:
        raise EEGKitError(f"--n-shifts {args.n_shifts}: must be >= 1")
    curve = parse_windows(args.curve, "--curve")
    report = evaluate_heldout(args.run, args.data, args.segment_s, curve, args.checkpoint, controls=True,
                              costly=not args.no_costly_controls, n_shifts=args.n_shifts, seed=args.seed)
    print(f"held-out subjects {', '.join(report['heldout_subjects'])} (never trained or validated on), "
          f"{report['segment_s']:g}-s segments, each z-scored on its own:")
    print(format_report(report))
    print(format_controls(report))
    significance = report["significance"]
    print(f"significant subjects (circular-shift p < {significance['alpha']:g}, {significance['correction']} "
          f"across {significance['n_subjects']} subjects): {', '.join(significance['significant']) or 'none'}")
    print("score vs segment length:")
    print(format_curve(report))
    if args.out:
        atomic_write_json(args.out, report, indent=2)
        print(f"report written to {args.out}")
    if args.plot:
        plot_curve(report, args.plot)
        print(f"curve written to {args.plot}")
    return 0


if __name__ == "__main__":
    run_cli(main)
