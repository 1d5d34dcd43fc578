"""Task 2 scores of a trained run without a test set: within-subject, and on held-out subjects.

    python -m task2_regression.evaluate --run RUN --data DATASET [--split test] [--segment-s 30] \
        [--checkpoint best] [--out report.json] [--plot report.png] [--no-costly-controls] [--n-shifts N]
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

Controls (`score_with_controls`, all on by default; `--no-costly-controls` drops the two that
rerun the model): noise EEG, the circular-shift null and mismatched EEG, overall and per subject,
with the score above the noise control, the subjects significant after Holm's correction and a
warning when the noise control exceeds the null's 95th percentile (see `evaluation.controls`).
Held-out-subject scoring reuses `group_segments` / `score_with_controls` with its own
per-segment ``transform``.
"""
from __future__ import annotations
if not __package__:  # run by path (python task2_regression/evaluate.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import sys
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from evaluation.task2 import format_controls_report, format_report, pearson_per_band, plot_report
from evaluation.task2 import score_with_controls as task2_score_with_controls
from util.atomic import atomic_write_json
from util.errors import EEGKitError, run_cli
from util.outdir import check_out_files
from util.features import FS_TASK2
from util.windowing import seconds_to_samples
from util.config import int_arg, seed_arg

FS = FS_TASK2


def segment_recordings(recordings, target: str, segment: int):
    """Yield (subject, segment_id, eeg (segment, 64) normalised, label (segment, bands) raw)."""
    for rec in recordings:
        for k, start in enumerate(range(0, rec.n_samples - segment + 1, segment)):
            eeg = rec.window("eeg", start, segment)  # (segment, 64), normalised as in training
            label = rec.raw_window(target, start, segment)  # (segment, bands), as stored
            yield rec.subject, f"{rec.subject}_{rec.stimulus}_{k}", eeg, label


def group_segments(recordings, target: str, segment: int) -> list[dict]:
    """One entry per recording with at least one segment: the input of `score_with_controls`.

    ``{"subject", "stimulus", "ids": [segment ids], "eeg": (n, segment, C) as the model sees it,
    "labels": (n, segment, bands) raw}``.
    """
    groups: dict = {}
    for subject, segment_id, eeg, label in segment_recordings(recordings, target, segment):
        stimulus = segment_id[len(subject) + 1 : segment_id.rindex("_")]
        entry = groups.setdefault((subject, stimulus), {"subject": subject, "stimulus": stimulus, "ids": [],
                                                        "eeg": [], "labels": []})
        entry["ids"].append(segment_id)
        entry["eeg"].append(eeg)
        entry["labels"].append(label)
    out = []
    for entry in groups.values():
        entry["eeg"] = np.stack(entry["eeg"])  # (n, segment, C)
        entry["labels"] = np.stack(entry["labels"])  # (n, segment, bands)
        out.append(entry)
    return out


def model_of(model, entry: dict):
    """The model for a `group_segments` entry: ``model`` itself, or ``model[subject]`` for per-subject runs."""
    if isinstance(model, dict):
        if entry["subject"] not in model:
            raise EEGKitError(f"{entry['subject']}: no per-subject model for this subject (models: "
                              f"{', '.join(sorted(model))})")
        return model[entry["subject"]]
    return model


@torch.no_grad()
def predict_stack(model, target: str, eeg: np.ndarray, transform=None, batch_size: int = 8) -> np.ndarray:
    """(n, segment, C) EEG -> (n, segment, bands) predictions, padded at the end to the segment length.

    ``transform`` (optional) maps one (segment, C) EEG segment to what the model sees (e.g. a
    per-segment z-score for unseen subjects); it is applied to real, noise and mismatched EEG alike.
    """
    from task2_regression.predict import pad_to_length

    segment = eeg.shape[1]
    out = []
    for start in range(0, len(eeg), batch_size):
        chunk = eeg[start : start + batch_size]
        if transform is not None:
            chunk = np.stack([transform(x) for x in chunk])
        pred = model(torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)))[target].float().numpy()
        out.extend(pad_to_length(p, segment) for p in pred)  # (time_out, bands) -> (segment, bands)
    return np.stack(out)


def score_with_controls(model, target: str, groups: list[dict], fs: float = FS, costly_controls: bool = True,
                        n_shifts: int | None = None, min_shift_s: float = 2.0, seed: int = 0, transform=None,
                        progress: bool = False) -> dict:
    """Score ``groups`` (see `group_segments`) with the official rule, beside the three controls.

    ``model``: one model, or ``{subject: model}`` (per-subject runs: each subject's own model scores
    its segments and its controls).

    - the score: `evaluation.task2.score` of the model's predictions;
    - ``noise_eeg`` (costly): the same model on Gaussian EEG with each recording's per-channel mean
      and std (`evaluation.controls.noise_eeg`), scored against the same labels;
    - ``circular_shift`` (cheap): per subject, the subject's predictions and labels concatenated in
      segment order, the labels shifted circularly by >= ``min_shift_s`` and re-scored with the
      segment rule (`evaluation.controls.circular_shift_null`); the top-level null averages the
      subjects' null draws;
    - ``mismatched_eeg`` (costly): each recording's labels against the predictions from the EEG of
      another recording of the same subject (another stimulus where one exists;
      `evaluation.controls.mismatched_pairs`), its segments taken in order (cyclically if it has fewer).

    Returns the `evaluation.task2.score` report plus ``controls``, ``score_above_noise``,
    ``warnings``, ``per_subject_controls`` ({subject: the same block}), ``per_subject_bands``
    (per-band mean/std over each subject's segments) and ``significance``
    (permutation p-values of the subjects, Holm-corrected). ``costly_controls=False`` leaves the
    two model reruns out (their slots are None).
    """
    from evaluation.controls import mismatched_pairs, noise_eeg

    if not groups:
        raise EEGKitError("no segments to score")
    noise_rng, shift_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    labels: dict[str, dict[str, np.ndarray]] = {}
    predictions: dict[str, np.ndarray] = {}
    for entry in tqdm(groups, desc="segments", disable=not progress):
        pred = predict_stack(model_of(model, entry), target, entry["eeg"], transform)  # (n, segment, bands)
        for segment_id, p, label in zip(entry["ids"], pred, entry["labels"]):
            predictions[segment_id] = p
            labels.setdefault(entry["subject"], {})[segment_id] = label
    noise_predictions = mismatched_predictions = None
    if costly_controls:
        noise_predictions = {}
        for entry in tqdm(groups, desc="noise EEG control", disable=not progress):
            flat = entry["eeg"].reshape(-1, entry["eeg"].shape[-1])  # (n * segment, C)
            noise = noise_eeg(flat, noise_rng).reshape(entry["eeg"].shape)  # (n, segment, C)
            noise_predictions.update(zip(entry["ids"], predict_stack(model_of(model, entry), target, noise, transform)))
        mismatched_predictions = {}
        pairs = mismatched_pairs([(entry["subject"], entry["stimulus"]) for entry in groups])
        for entry, other in tqdm(list(zip(groups, pairs)), desc="mismatched EEG control", disable=not progress):
            if other is not None:
                donor = groups[other]["eeg"]
                eeg = donor[np.arange(len(entry["ids"])) % len(donor)]  # (n, segment, C)
                mismatched_predictions.update(zip(entry["ids"], predict_stack(model_of(model, entry), target, eeg, transform)))
    report = task2_score_with_controls(predictions, labels, noise_predictions, mismatched_predictions, fs,
                                       n_shifts, min_shift_s, seed=int(shift_rng.integers(2**31)))
    per_subject_bands = {}
    for subject, segments in labels.items():
        rows = np.array([pearson_per_band(predictions[i], label) for i, label in segments.items()])  # (n, bands)
        per_subject_bands[subject] = {"band_mean": rows.mean(axis=0).tolist(), "band_std": rows.std(axis=0).tolist(),
                                      "segment_std": float(rows.mean(axis=1).std()), "n_segments": len(rows)}
    report.update({"per_subject_bands": per_subject_bands, "costly_controls": bool(costly_controls)})
    return report


def evaluate_within_subject(run_dir, data_dir, split: str = "test", segment_s: float = 30.0,
                            checkpoint: str = "best", progress: bool = True, costly_controls: bool = True,
                            n_shifts: int | None = None, seed: int = 0) -> dict:
    """Score report (see `score_with_controls`) plus per-subject per-band mean/std.

    ``run_dir`` may be the parent folder of per-subject runs (``train.py --per-subject``): each
    subject's segments are then scored with that subject's own model.
    """
    from task2_regression.predict import load_run_models, model_channels
    from task2_regression.data import load_recordings

    import math

    if not math.isfinite(float(segment_s)) or float(segment_s) <= 0:
        raise EEGKitError(f"--segment-s {segment_s}: must be a positive finite number of seconds")
    model, cfg = load_run_models(run_dir, checkpoint)
    target = cfg.get("target", "mel")
    normalize = cfg.get("data", {}).get("normalize", "recording")
    segment = seconds_to_samples(segment_s, FS, name="--segment-s")
    if segment < 16:
        raise EEGKitError(f"--segment-s {segment_s}: too short (need at least 16 frames)")
    if n_shifts is not None and n_shifts < 1:
        raise EEGKitError(f"--n-shifts {n_shifts}: must be at least 1")
    recordings = load_recordings(data_dir, split, features=("eeg", target), normalize=normalize,
                                 n_channels=model_channels(cfg),
                                 subjects=sorted(model) if isinstance(model, dict) else None)
    groups = group_segments(recordings, target, segment)
    if not groups:
        longest = max(r.n_samples for r in recordings) / FS
        raise EEGKitError(f"{data_dir}: no {split!r} recording is at least {segment_s:g} s long "
                          f"(longest {longest:.1f} s); use a shorter --segment-s")
    report = score_with_controls(model, target, groups, FS, costly_controls, n_shifts, seed=seed,
                                 progress=progress)
    report.update({"split": split, "segment_s": float(segment_s), "checkpoint": checkpoint,
                   "run": str(run_dir)})
    return report


def format_within(report: dict) -> str:
    """The printout: the score table, the controls (overall and per subject), significance, warnings."""
    lines = [format_report(report)]
    for subject, bands in report["per_subject_bands"].items():
        means = " ".join(f"{v:.3f}" for v in bands["band_mean"])
        lines.append(f"{subject}: per-band mean {means}")
    lines.append(format_controls_report(report))
    return "\n".join(lines)


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
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--plot", default=None, help="write a PNG: per-subject scores beside their controls, per band")
    parser.add_argument("--no-costly-controls", action="store_true",
                        help="leave out the controls that rerun the model (noise EEG, mismatched EEG); the "
                             "circular-shift null (cheap) stays")
    parser.add_argument("--n-shifts", type=int_arg(1, 100000), default=None,
                        help="circular shifts (>= 2 s) per subject for the null (default: chosen by the scorer, "
                             "ceil(20 x subjects / 0.05) within [100, 20000], so Holm over the subjects can reach "
                             "p < 0.05; the report states the count)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the noise EEG and of the shifts (default 0)")
    args = parser.parse_args(argv)
    check_out_files([("--out", args.out), ("--plot", args.plot)], args.overwrite, [args.run, args.data])
    report = evaluate_within_subject(args.run, args.data, args.split, args.segment_s, args.checkpoint,
                                     progress=sys.stderr.isatty(), costly_controls=not args.no_costly_controls,
                                     n_shifts=args.n_shifts, seed=args.seed)
    print(format_within(report))
    if args.out:
        atomic_write_json(args.out, report, indent=2)
        print(f"report written to {args.out}")
    if args.plot:
        plot_report(report, args.plot)
        print(f"plot written to {args.plot}")
    return 0


# --------------------------------------------------------------------------- held-out subjects
CURVE_SEGMENTS_S = (5.0, 10.0, 20.0, 30.0)  # the score-vs-segment-length curve


def heldout_groups(recordings, target: str, segment: int) -> list[dict]:
    """`group_segments`-shaped entries from `task2_regression.data.whole_recordings` (raw EEG and target).

    Each whole recording is cut into consecutive non-overlapping segments (the tail shorter than one
    is dropped); the EEG stays raw here: `score_with_controls` z-scores every segment on its own.
    """
    out = []
    for subject, stimulus, arrays in recordings:
        n = (len(arrays["eeg"]) // segment) * segment
        if n == 0:
            continue
        out.append({"subject": subject, "stimulus": stimulus,
                    "ids": [f"{subject}_{stimulus}_{k}" for k in range(n // segment)],
                    "eeg": arrays["eeg"][:n].reshape(n // segment, segment, -1),  # (n, segment, C)
                    "labels": arrays[target][:n].reshape(n // segment, segment, -1)})  # (n, segment, bands)
    return out


def evaluate_heldout(run_dir, data_dir, segment_s: float = 30.0, curve_s=CURVE_SEGMENTS_S,
                     checkpoint: str = "best", costly: bool = True, n_shifts: int | None = None,
                     seed: int = 0, progress: bool = False) -> dict:
    """Subject-independent score of a run on its held-out subjects (``data.holdout_subjects`` in its config).

    Their whole recordings are scored by `score_with_controls` with every EEG segment z-scored on its
    own (``transform=zscore_time``, exactly what `task2_regression.predict` does on the test set).
    The main report is at ``segment_s``; ``curve`` holds the score and its controls at each length of
    ``curve_s`` (short segments inflate the spread and reward EEG-independent patterns).
    """
    from task2_regression.data import whole_recordings, zscore_time
    from task2_regression.predict import is_per_subject, load_run_model, model_channels

    if is_per_subject(run_dir):
        raise EEGKitError(f"{run_dir}: a per-subject parent folder; held-out subjects have no model of their own "
                          f"there (score one subject's run folder, or train one run with --holdout-subjects)")
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
    for length in tqdm(lengths, desc="segment lengths", disable=not progress):
        if longest < length:
            continue
        groups = heldout_groups(recordings, target, seconds_to_samples(length, FS))
        curve[format(length, "g")] = score_with_controls(model, target, groups, FS, costly, n_shifts, seed=seed,
                                                         transform=zscore_time)
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
    parser.add_argument("--n-shifts", type=int_arg(1, 100000), default=None,
                        help="circular shifts (>= 2 s) per subject for the null (default: chosen by the scorer, "
                             "ceil(20 x subjects / 0.05) within [100, 20000], so Holm over the subjects can reach "
                             "p < 0.05; the report states the count)")
    parser.add_argument("--no-costly-controls", action="store_true",
                        help="skip the controls that need extra model passes (noise EEG, mismatched EEG); the "
                             "circular-shift null is always computed")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the noise EEG and the shifts (default 0)")
    parser.add_argument("--out", default=None, help="write the report (with the curve) as JSON to this file")
    parser.add_argument("--plot", default=None, help="write the score-vs-segment-length curve to this PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    args = parser.parse_args(argv)
    check_out_files([("--out", args.out), ("--plot", args.plot)], args.overwrite, [args.run, args.data])
    if args.n_shifts is not None and args.n_shifts < 1:
        raise EEGKitError(f"--n-shifts {args.n_shifts}: must be >= 1")
    curve = parse_windows(args.curve, "--curve")
    report = evaluate_heldout(args.run, args.data, args.segment_s, curve, args.checkpoint,
                              costly=not args.no_costly_controls, n_shifts=args.n_shifts, seed=args.seed,
                              progress=sys.stderr.isatty())
    print(f"held-out subjects {', '.join(report['heldout_subjects'])} (never trained or validated on), "
          f"{report['segment_s']:g}-s segments, each z-scored on its own:")
    print(format_within(report))
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
