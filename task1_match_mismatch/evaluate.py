"""Task 1 accuracy of a trained run without a test set: within-subject, and on held-out subjects.

    python -m task1_match_mismatch.evaluate --run RUN --data DATASET --out report.json [--plot report.png]
        [--heldout] [--split test] [--window-s S] [--hop-s S] [--n-imposters N] [--checkpoint best]
        [--seed 0] [--overwrite]

Trials (`task1_match_mismatch.data.MatchMismatchWindows` with ``all_positions=False``): each
recording is cut into windows of ``--window-s`` (default: the run's ``data.window_s``) every
``--hop-s`` (default: the window length, so trials do not overlap and are independent, as the
binomial figures assume); each window is one trial, its matched stimulus at a position drawn from
the seed among ``--n-imposters`` (default: the run's) imposters, which are the stimulus windows of
other trials of the same recording that do not overlap it.

- within-subject (default): the split_data ``--split`` (default ``test``: the last 10 % of every
  training recording, unseen in training) of the run's subjects, z-scored with each recording's
  train statistics as in training;
- ``--heldout``: the run's held-out subjects (``data.holdout_subjects``, from
  ``train.py --holdout-subjects``) over their whole recordings, every EEG window and every
  stimulus candidate z-scored on its own (as `task1_match_mismatch.predict` does on the test set).

The report is `evaluation.task1.score`'s: accuracy per subject and the mean over subjects, each
beside chance 1/K, its Clopper-Pearson interval, the central 95 % of a guesser's accuracy and the
significance threshold for its number of trials; plus the two no-EEG controls, scored the same way:

- ``noise EEG``: every trial's EEG replaced by Gaussian noise with its per-channel mean and std
  (`evaluation.controls.noise_eeg`);
- ``mismatched EEG``: every trial's EEG taken from a window of another recording of the same
  subject (another story where one exists; `evaluation.controls.mismatched_pairs`), so no candidate
  matches it. The donor window is drawn for every trial on its own from the seed: a fixed pairing
  (window i with the donor's window i) would give every trial of a recording the same pairing of
  contents, and the trials would no longer be independent draws (observed: with such a pairing the
  control moved by +-2 % with the donor offset, one offset beat chance in every cell of the grid).

Both should sit at chance; the report warns (`evaluation.task1.control_warnings`) when one is
significantly above it: the model then picks the matched stimulus without the EEG. ``--plot``
draws the accuracies per subject with the chance band and the controls.
"""
from __future__ import annotations
if not __package__:  # run by path (python task1_match_mismatch/evaluate.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from util.atomic import atomic_write_json
from util.errors import EEGKitError, run_cli
from util.features import FS_TASK2 as FS
from util.outdir import check_out_files
from util.windowing import seconds_to_samples
from util.config import seed_arg

BATCH_SIZE = 64
CONTROLS = ("noise EEG", "mismatched EEG")


# --------------------------------------------------------------------------- trials -> predictions
def donor_recordings(dataset) -> dict[int, int | None]:
    """{usable slot: slot whose EEG is the mismatched-EEG control} (another recording of the same subject,
    another story where one exists; else a recording of another story of any subject; else None)."""
    from evaluation.controls import mismatched_pairs

    recs = [dataset.recordings[i] for i in dataset.usable]
    pairs = mismatched_pairs([(rec.subject, rec.stimulus) for rec in recs])
    donors = {}
    for slot, other in enumerate(pairs):
        if other is None or recs[other].stimulus == recs[slot].stimulus:
            others = [j for j, rec in enumerate(recs) if rec.stimulus != recs[slot].stimulus]
            other = others[slot % len(others)] if others else other
        donors[slot] = other
    return donors


@torch.no_grad()
def predict_trials(model, dataset, eeg: str = "real", seed: int = 0, progress: bool = False,
                   batch_size: int = BATCH_SIZE) -> dict[str, int]:
    """{trial id: index of the highest-scoring candidate} for every trial of ``dataset``.

    ``eeg``: ``real``; ``noise`` (Gaussian EEG with the trial's per-channel mean and std, drawn from
    ``(seed, trial)``); ``mismatched`` (the EEG of a window of the donor recording, `donor_recordings`,
    drawn from ``(seed, recording, window)`` for every trial on its own; trials without a donor are
    left out).
    """
    from evaluation.controls import noise_eeg

    donors = donor_recordings(dataset) if eeg == "mismatched" else {}
    out: dict[str, int] = {}
    indices = np.arange(len(dataset))
    for start in tqdm(range(0, len(indices), batch_size), desc=f"trials ({eeg} EEG)", disable=not progress,
                      leave=False):
        chunk = indices[start:start + batch_size]
        items, ids = [], []
        for index in chunk:
            info = dataset.trial(int(index))
            item = dataset[int(index)]
            if eeg == "noise":
                item["eeg"] = torch.from_numpy(noise_eeg(item["eeg"].numpy(), np.random.default_rng([seed, int(index)])))
            elif eeg == "mismatched":
                slot = dataset.usable.index(info["recording"])
                donor = donors.get(slot)
                if donor is None:
                    continue
                rec = dataset.recordings[dataset.usable[donor]]
                window = int(np.random.default_rng([seed, info["recording"], info["window"]]).integers(
                    dataset.n_windows[donor]))  # a random window of the donor: no fixed alignment between trials
                item["eeg"] = torch.from_numpy(rec.window("eeg", window * dataset.hop, dataset.window))
            items.append(item)
            ids.append(info["id"])
        if not items:
            continue
        eeg_batch = torch.stack([item["eeg"] for item in items]).float()  # (batch, T, 64)
        stimuli = torch.stack([item["stimuli"] for item in items]).float()  # (batch, K, T, bands)
        logits = model(eeg_batch, stimuli).float()  # (batch, K)
        if not torch.isfinite(logits).all():
            raise EEGKitError("the model scored NaN/Inf (are the run's weights finite?)")
        out.update(zip(ids, logits.argmax(dim=1).tolist()))
    return out


def labels_of(dataset) -> dict[str, dict[str, int]]:
    """{subject: {trial id: matched position}}."""
    labels: dict[str, dict[str, int]] = {}
    for index in range(len(dataset)):
        info = dataset.trial(index)
        labels.setdefault(info["subject"], {})[info["id"]] = int(info["label"])
    return labels


def score_trials(model, dataset, seed: int = 0, controls: bool = True, progress: bool = False) -> dict:
    """`evaluation.task1.score` of the model on every trial of ``dataset``, with the noise-EEG and
    mismatched-EEG controls (``controls=False`` leaves them out)."""
    from evaluation.task1 import score

    predictions = predict_trials(model, dataset, "real", seed, progress)
    control_predictions = {}
    if controls:
        control_predictions["noise EEG"] = predict_trials(model, dataset, "noise", seed, progress)
        mismatched = predict_trials(model, dataset, "mismatched", seed, progress)
        control_predictions["mismatched EEG"] = mismatched or None
    labels = labels_of(dataset)
    report = score(predictions, labels, dataset.n_candidates, controls=control_predictions)
    if controls and not control_predictions["mismatched EEG"]:
        report["warnings"].append("mismatched-EEG control not run: every recording is of the same story")
    return report


# --------------------------------------------------------------------------- runs
def evaluate_run(run_dir, data_dir, split: str = "test", heldout: bool = False, window_s: float | None = None,
                 hop_s: float | None = None, n_imposters: int | None = None, checkpoint: str = "best",
                 seed: int = 0, controls: bool = True, progress: bool = False) -> dict:
    """Score a run (see the module docstring); returns the report."""
    from task1_match_mismatch.data import ArrayRecording, MatchMismatchWindows, load_split
    from task1_match_mismatch.predict import load_run, run_feature
    from util.split_data import discover, resolve_split_dir, used_subjects, whole_recordings

    model, cfg = load_run(run_dir, checkpoint)
    feature = run_feature(cfg, Path(run_dir) / f"{checkpoint}.pt")
    window_s = float(cfg["data"]["window_s"] if window_s is None else window_s)
    window = seconds_to_samples(window_s, FS, name="--window-s")
    hop = seconds_to_samples(window_s if hop_s is None else hop_s, FS, name="--hop-s")
    n_imposters = int(cfg["data"]["n_imposters"] if n_imposters is None else n_imposters)
    if hop < 1:
        raise EEGKitError(f"--hop-s {hop_s}: less than one frame at {FS} Hz")
    shrink = int(getattr(model, "shrink", getattr(model, "n_taps", 1)))
    if window <= shrink:
        raise EEGKitError(f"--window-s {window_s:g}: {window} frames; this model needs more than {shrink}")
    if n_imposters < 1:
        raise EEGKitError(f"--n-imposters {n_imposters}: must be >= 1")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise EEGKitError(f"{data_dir}: dataset folder not found")
    groups = discover(resolve_split_dir(data_dir))
    if heldout:
        subjects = list(cfg["data"].get("holdout_subjects") or [])
        if not subjects:
            raise EEGKitError(f"{run_dir}: the run has no held-out subjects (data.holdout_subjects is empty); train "
                              f"it with --holdout-subjects")
        recordings = [ArrayRecording(subject, stimulus, arrays)
                      for subject, stimulus, arrays in whole_recordings(data_dir, subjects, ("eeg", feature),
                                                                        groups=groups)]
        where = f"{data_dir} (held-out subjects {', '.join(subjects)})"
    else:
        subjects = used_subjects(cfg, groups)
        recordings = load_split(cfg, data_dir, split, groups, subjects=subjects)
        where = f"{data_dir} ({split} split)"
    dataset = MatchMismatchWindows(recordings, feature, window, hop, n_imposters, seed=seed, all_positions=False,
                                   where=where, hint="; use a shorter --window-s or --hop-s, or fewer --n-imposters")
    report = score_trials(model, dataset, seed, controls, progress)
    report.update({"run": str(run_dir), "checkpoint": checkpoint, "model_type": cfg["model"]["type"],
                   "mode": "heldout_subjects" if heldout else "within_subject", "split": None if heldout else split,
                   "feature": feature, "window_s": window / FS, "hop_s": hop / FS, "n_imposters": n_imposters,
                   "seed": int(seed), "n_recordings": len(dataset.usable),
                   "normalisation": "each window on its own (z-score over time)" if heldout
                   else "each recording with its train-part statistics (as in training)"})
    return report


# --------------------------------------------------------------------------- output
def summary_line(report: dict) -> str:
    """One line: accuracy, chance with its 95 % range, and the two controls."""
    overall = report["overall"]
    lo, hi = overall["chance_range95"]
    parts = [f"accuracy {100 * report['score']:.1f} % (pooled CI {100 * overall['ci95'][0]:.1f}-"
             f"{100 * overall['ci95'][1]:.1f}), chance {100 * overall['chance']:.1f} % (95 % of guessers "
             f"{100 * lo:.1f}-{100 * hi:.1f}, significant above {100 * overall['significance_threshold']:.1f})"]
    for name in CONTROLS:
        block = report["controls"].get(name)
        shown = "n/a" if block is None else f"{100 * block['score']:.1f} %"
        parts.append(f"{name} {shown}")
    return "; ".join(parts)


def plot_report(report: dict, png_path) -> None:
    """Accuracy per subject and pooled, with Clopper-Pearson bars, the chance band and the controls; atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from util.atomic import atomic_savefig

    subjects = list(report["per_subject_detail"])
    blocks = [report["per_subject_detail"][s] for s in subjects] + [report["overall"]]
    labels = subjects + ["pooled"]
    x = np.arange(len(blocks))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(blocks) + 2) + 2.2, 4))
    for i, block in enumerate(blocks):
        lo, hi = block["chance_range95"]
        ax.fill_between([i - 0.4, i + 0.4], lo, hi, color="grey", alpha=0.25, lw=0,
                        label="chance: 95 % of guessers" if i == 0 else None)
        ax.plot([i - 0.4, i + 0.4], [block["significance_threshold"]] * 2, "k:", lw=1,
                label="significance threshold" if i == 0 else None)
    accuracy = [b["accuracy"] for b in blocks]
    errors = np.array([[b["accuracy"] - b["ci95"][0], b["ci95"][1] - b["accuracy"]] for b in blocks]).T
    ax.errorbar(x, accuracy, yerr=errors, fmt="o", capsize=4, color="C0", label="accuracy (95 % CI)")
    for name, marker, color in (("noise EEG", "s", "C1"), ("mismatched EEG", "^", "C2")):
        block = report["controls"].get(name)
        if block is None:
            continue
        values = [block["per_subject"].get(s, np.nan) for s in subjects] + [block["overall"]["accuracy"]]
        ax.plot(x + 0.15, values, marker, color=color, ls="none", label=name)
    ax.axhline(report["overall"]["chance"], color="k", lw=0.8, label=f"chance 1/{report['n_candidates']}")
    ax.set_xticks(x, labels, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    where = "held-out subjects" if report.get("mode") == "heldout_subjects" else f"{report.get('split')} split"
    ax.set_title(f"{report.get('model_type', '')}: {where}, {report.get('window_s', 0):g}-s windows, "
                 f"{report['n_candidates']} candidates", fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    atomic_savefig(fig, png_path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m task1_match_mismatch.evaluate",
        description="Score a trained Task 1 run: match-mismatch accuracy per subject and over subjects on the "
                    "within-subject split_data test split (or, with --heldout, on the run's held-out subjects), "
                    "beside chance 1/K with its binomial interval and significance threshold, and the noise-EEG "
                    "and mismatched-EEG controls (a warning when one beats chance).")
    parser.add_argument("--run", required=True, help="run folder written by task1_match_mismatch/train.py")
    parser.add_argument("--data", required=True, help="dataset root holding derivatives/split_data/")
    parser.add_argument("--out", default=None, help="write the report as JSON to this file")
    parser.add_argument("--plot", default=None, help="write a PNG: accuracy per subject with the chance band and "
                                                     "the controls")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    parser.add_argument("--heldout", action="store_true",
                        help="score the run's held-out subjects (train.py --holdout-subjects) over their whole "
                             "recordings, each window z-scored on its own, instead of the within-subject split")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="split_data split of the within-subject score (default test; never tune on it)")
    parser.add_argument("--window-s", type=float, default=None,
                        help="trial length in seconds (default: the run's data.window_s)")
    parser.add_argument("--hop-s", type=float, default=None,
                        help="seconds between trial starts (default: the window length: trials do not overlap)")
    parser.add_argument("--n-imposters", type=int, default=None,
                        help="imposters per trial, K - 1 (default: the run's data.n_imposters)")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last", "averaged"),
                        help="which checkpoint of the run to use (default: best)")
    parser.add_argument("--no-controls", action="store_true",
                        help="leave out the noise-EEG and mismatched-EEG controls (two more passes of the model)")
    parser.add_argument("--seed", type=seed_arg, default=0,
                        help="seed of the matched positions, the imposters and the noise EEG (default 0)")
    return parser


def check_flags(args: argparse.Namespace) -> None:
    """Numbers of the flags: one error line naming the flag."""
    for flag, value in (("--window-s", args.window_s), ("--hop-s", args.hop_s)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise EEGKitError(f"{flag} {value}: must be a positive number of seconds")
    if args.n_imposters is not None and not 1 <= args.n_imposters <= 64:
        raise EEGKitError(f"--n-imposters {args.n_imposters}: must be 1 to 64")
    if args.seed < 0:
        raise EEGKitError(f"--seed {args.seed}: must be >= 0")


def main(argv: Sequence[str] | None = None) -> int:
    from evaluation.task1 import format_report

    args = build_parser().parse_args(argv)
    check_flags(args)
    check_out_files([("--out", args.out), ("--plot", args.plot)], args.overwrite, [args.run, args.data])
    report = evaluate_run(args.run, args.data, args.split, args.heldout, args.window_s, args.hop_s, args.n_imposters,
                          args.checkpoint, args.seed, controls=not args.no_controls, progress=sys.stderr.isatty())
    where = (f"held-out subjects {', '.join(report['per_subject'])}" if args.heldout
             else f"within-subject {args.split} split")
    print(f"{report['model_type']} ({args.run}), {where}: {report['window_s']:g}-s trials every {report['hop_s']:g} s, "
          f"{report['n_candidates']} candidates ({report['feature']})")
    print(format_report(report))
    if args.out:
        atomic_write_json(args.out, report, indent=2)
        print(f"report written to {args.out}")
    if args.plot:
        plot_report(report, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    run_cli(main)
