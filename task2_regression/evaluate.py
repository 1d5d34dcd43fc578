"""Within-subject Task 2 score of a trained run on the `test` split of split_data.

    python -m task2_regression.evaluate --run RUN --data DATASET [--split test] [--segment-s 30] \
        [--checkpoint best] [--out report.json]

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
    segment = seconds_to_samples(segment_s, FS, name="--segment-s")
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
    parser = argparse.ArgumentParser(
        prog="python -m task2_regression.evaluate",
        description="Score a trained Task 2 run on the within-subject split_data test split (30-s segments, "
                    "official scoring rule), per subject and per band.")
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


if __name__ == "__main__":
    run_cli(main)
