"""Reproduce the seed paper's Task 2 tables (small CPU-sized models) on a dataset with a held-out test set.

    python -m task2_regression.experiments.paper_tables --data DATASET [--out results/task2] \
        [--epochs-scale F] [--cache-dir DIR] [--threads N] [--rows a,b] [--quick]

Rows (reference section 4; the paper's numbers are on the authors' validation subjects 27-42):
  Table 1: Linear (added; paper column: the organisers' baseline on the 2024 test set), VLAAI, DPRNN,
           Proposed (CAT-guided WaveNet);
  Table 2: Ablation-1 (the WaveNet mel10 stage alone), Ablation-2 (no Mel80/Mag stages),
           Ablation-3 (no mixup), Proposed;
  Control: the Proposed model with the EEG segments permuted across segment ids within each
           subject before prediction (expected ~0: the model must use the EEG); a subject with
           one segment gets its EEG circularly shifted by half a segment instead.
Each row is trained with `task2_regression.train.train` on the split_data train split (model
selection and early stopping on the val split only), then predicted on
DATASET/test_set/TASK2_regression with `task2_regression.predict`, checked with submit.py's
validator (the exact challenge format), and scored against DATASET/test_set/labels with
`evaluation.task2.score` -- the test labels are used only for this final scoring. A within-subject
score (`task2_regression.evaluate`, split_data test split) is given as an extra column.

Configs are the *_small.yaml versions (and this task's ablation configs) so that the whole table
trains on one thread of a shared 2-core CPU: on the default synthetic dataset
(`python -m synthetic task2 --out DATASET`) the committed results/task2 run took 1437 s.
`--quick` shrinks every model and trains one
epoch: it proves the pipeline, its numbers mean nothing (the tables say so).

Outputs in --out: tables.md, scores.png (ours vs the paper), results.json (every report),
COMMAND.txt (the exact command line), runs/<row>/ and predictions/<row>/.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


import numpy as np

from util.atomic import atomic_savefig, atomic_write_json, atomic_write_text
from util.outdir import check_out_dir, prepare_out_dir
from util.errors import EEGKitError, run_cli

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "task2_regression" / "configs"


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    config: str
    paper: float | None
    paper_note: str = "validation, subjects 27-42"


ROWS = {
    "linear": Row("linear", "Linear (added)", "linear.yaml", 0.0214, "organisers' baseline, 2024 test set"),
    "vlaai": Row("vlaai", "VLAAI", "vlaai_small.yaml", 0.0470),
    "dprnn": Row("dprnn", "DPRNN", "dprnn_small.yaml", 0.0554),
    "proposed": Row("proposed", "Proposed (CAT-guided WaveNet)", "cat_wavenet_small.yaml", 0.0651),
    "ablation1": Row("ablation1", "Ablation-1 (WaveNet mel10 only)", "ablation1_wavenet_only.yaml", 0.0580),
    "ablation2": Row("ablation2", "Ablation-2 (no Mel80/Mag stages)", "ablation2_no_last_two.yaml", 0.0631),
    "ablation3": Row("ablation3", "Ablation-3 (no mixup)", "ablation3_no_mixup.yaml", 0.0612),
}
TABLE1 = ["linear", "vlaai", "dprnn", "proposed"]
TABLE2 = ["ablation1", "ablation2", "ablation3", "proposed"]

# --quick: tiny models, one epoch, short windows (pipeline check only)
QUICK_MODEL = {
    "linear": [],
    "vlaai": ["model.filters=[8,8,8,8,8]", "model.kernels=8", "model.context_kernel=8"],
    "dprnn": [],
    "cat_wavenet": ["model.layers=2", "model.dilation_cycle=2", "model.residual_channels=8",
                    "model.skip_channels=8", "model.last_stage_channels=8", "model.attention_dim=8",
                    "model.attention_heads=1", "model.attention_depth=1"],
}
QUICK_DATA = ["data.window_s=5.0", "data.hop_s=5.0", "data.sampling=fixed", "data.batch_size=8"]


def row_config(row: Row, epochs_scale: float, quick: bool) -> dict:
    from util.config import apply_overrides, load_config

    config = load_config(CONFIGS / row.config)
    if quick:
        config = apply_overrides(config, QUICK_MODEL.get(config["model"]["type"], []) + QUICK_DATA
                                 + ["train.epochs=1"])
    else:
        epochs = max(1, int(round(float(config.get("train", {}).get("epochs", 1)) * epochs_scale)))
        config = apply_overrides(config, [f"train.epochs={epochs}"])
    return config


def shuffle_within_subject(seed: int):
    """EEG transform for the control: a random derangement of the segments within each subject.

    A subject with a single segment gets that segment circularly shifted by half its length in time
    instead (the same "EEG no longer aligned with its stimulus" null).
    """
    def transform(subject: str, ids: list[str], segments: list[np.ndarray]) -> list[np.ndarray]:
        if len(segments) < 2:
            return [np.roll(segment, segment.shape[0] // 2, axis=0) for segment in segments]
        rng = np.random.default_rng(seed + sum(map(ord, subject)))
        order = rng.permutation(len(segments))
        shifted = np.roll(order, 1)  # segment order[i] gets the EEG of order[i-1]: nobody keeps its own
        out = list(segments)
        for target_index, source_index in zip(order, shifted):
            out[target_index] = segments[source_index]
        return out
    return transform


def score_predictions(subjects: dict, pred_dir: Path, test_dir: Path, labels_dir: Path) -> dict:
    """Write predictions, check them with submit.py's validator, score with evaluation.task2."""
    import submit
    from evaluation.task2 import load_labels, load_predictions, score
    from task2_regression.predict import write_predictions

    write_predictions(subjects, pred_dir)
    _, problems = submit.validate(pred_dir, submit.load_mappings(test_dir))
    if problems:
        raise EEGKitError(f"{pred_dir}: submission check failed: {problems[0]} ({len(problems)} problems)")
    return score(load_predictions(pred_dir), load_labels(labels_dir))


def within_segment_s(data_dir: Path, wanted: float = 30.0) -> float:
    """30 s, or the longest whole-second length every split_data test recording can hold."""
    from task2_regression.data import load_recordings

    recordings = load_recordings(data_dir, "test", features=("eeg",), normalize="none", check_finite=False)
    shortest = min(r.n_samples for r in recordings) / 64.0
    return float(min(wanted, max(1.0, np.floor(shortest))))


def run_row(row: Row, args, out: Path, data: Path, segment_s: float, log) -> dict:
    from task2_regression.evaluate import evaluate_within_subject
    from util.training import count_parameters
    from task2_regression.predict import load_run_model, predict_test_set
    from task2_regression.train import train

    test_dir = data / "test_set" / "TASK2_regression"
    labels_dir = data / "test_set" / "labels"
    config = row_config(row, args.epochs_scale, args.quick)
    run_dir = out / "runs" / row.key
    start = time.time()
    result = train(config, data, run_dir, cache_dir=args.cache_dir, say=lambda message: log(f"[{row.key}] {message}"),
                   overwrite=True)  # --out itself passed the overwrite rule
    train_s = time.time() - start
    model, resolved = load_run_model(run_dir, "best")
    subjects = predict_test_set(run_dir, test_dir, "best", progress=False)
    heldout = score_predictions(subjects, out / "predictions" / row.key, test_dir, labels_dir)
    within = evaluate_within_subject(run_dir, data, "test", segment_s, "best", progress=False)
    entry = {"key": row.key, "label": row.label, "config": row.config, "paper": row.paper,
             "targets": resolved["targets"], "epochs_run": result["epochs_run"], "best_val": result["best_val"],
             "parameters": count_parameters(model), "train_s": round(train_s, 1), "heldout": heldout,
             "within": {k: within[k] for k in ("score", "std_over_subjects", "per_band", "n_segments")}}
    log(f"[{row.key}] held-out {heldout['score']:.4f} +- {heldout['std_over_subjects']:.4f}, within-subject "
        f"{within['score']:.4f}, val {result['best_val']:.4f}, {train_s:.0f} s")
    if row.key == "proposed":
        shuffled = predict_test_set(run_dir, test_dir, "best", eeg_transform=shuffle_within_subject(0), progress=False)
        control = score_predictions(shuffled, out / "predictions" / "proposed_eeg_shuffled", test_dir, labels_dir)
        entry["shuffled_control"] = control
        log(f"[proposed] EEG-shuffled control {control['score']:.4f} +- {control['std_over_subjects']:.4f}")
    return entry


def _fmt(value: float | None, std: float | None = None) -> str:
    if value is None:
        return "--"
    return f"{value:.4f}" if std is None else f"{value:.4f} ± {std:.4f}"


def markdown(results: dict, command: str, quick: bool, segment_s: float) -> str:
    head = ("| system | paper | paper note | ours: held-out test subjects | ours: within-subject "
            f"({segment_s:g}-s segments) | val (model selection) | params (inference: weight norm folded) | epochs | train s |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def line(key: str) -> str:
        e = results[key]
        return (f"| {e['label']} | {_fmt(e['paper'])} | {ROWS[key].paper_note} | "
                f"{_fmt(e['heldout']['score'], e['heldout']['std_over_subjects'])} | "
                f"{_fmt(e['within']['score'], e['within']['std_over_subjects'])} | {_fmt(e['best_val'])} | "
                f"{e['parameters']:,} | {e['epochs_run']} | {e['train_s']:.0f} |")

    parts = ["# Task 2 paper tables (eegkit reproduction)", "",
             f"Made by: `{command}`", ""]
    if quick:
        parts += ["**--quick run: tiny models, 1 epoch. These numbers only prove the pipeline works; "
                  "they are not a reproduction.**", ""]
    parts += ["Ours: mean ± std over test subjects of the challenge score (per-segment band-averaged Pearson r), "
              "held-out subjects never seen in training; test labels used only for this scoring. "
              "Paper: the seed paper's validation numbers (reference section 4); the linear row's paper "
              "number is the organisers' baseline on the real 2024 test set. Synthetic data: compare "
              "orderings, not absolute values.", "",
              "## Table 1", "", head] + [line(k) for k in TABLE1 if k in results]
    parts += ["", "## Table 2 (ablations)", "", head] + [line(k) for k in TABLE2 if k in results]
    if "proposed" in results and "shuffled_control" in results["proposed"]:
        control = results["proposed"]["shuffled_control"]
        parts += ["", "## Control", "",
                  "| system | expected | ours: held-out test subjects |", "| --- | --- | --- |",
                  f"| Proposed, EEG segments permuted within subject | ~0 | "
                  f"{_fmt(control['score'], control['std_over_subjects'])} |"]
    parts += ["", "## Orderings (ours on the held-out test subjects vs the paper)", ""]
    for title, keys in (("Table 1", [k for k in TABLE1 if k in results]), ("Table 2", [k for k in TABLE2 if k in results])):
        if len(keys) < 2:
            continue
        paper_order = sorted((k for k in keys if results[k]["paper"] is not None), key=lambda k: -results[k]["paper"])
        ours_order = sorted(keys, key=lambda k: -results[k]["heldout"]["score"])
        same = [k for k in ours_order if k in paper_order] == paper_order
        parts.append(f"- {title}: paper {' > '.join(results[k]['label'] for k in paper_order)}; ours "
                     f"{' > '.join(results[k]['label'] for k in ours_order)} -- "
                     + ("same ordering." if same else "**the ordering differs from the paper's** "
                        "(reported as measured; nothing was tuned to match)."))
    parts += ["", "Per-band held-out means (band 0 = lowest):", ""]
    for key, e in results.items():
        parts.append(f"- {e['label']}: " + " ".join(f"{v:.3f}" for v in e["heldout"]["per_band"]))
    return "\n".join(parts) + "\n"


def bar_plot(results: dict, png: Path, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    x = np.arange(len(keys))
    ours = [results[k]["heldout"]["score"] for k in keys]
    ours_std = [results[k]["heldout"]["std_over_subjects"] for k in keys]
    within = [results[k]["within"]["score"] for k in keys]
    paper = [results[k]["paper"] if results[k]["paper"] is not None else np.nan for k in keys]
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(keys)), 4))
    ax.bar(x - 0.27, paper, 0.27, label="paper", color="tab:gray")
    ax.bar(x, ours, 0.27, yerr=ours_std, capsize=3, label="ours, held-out subjects", color="tab:blue")
    ax.bar(x + 0.27, within, 0.27, label="ours, within-subject", color="tab:orange")
    if "proposed" in results and "shuffled_control" in results["proposed"]:
        ax.axhline(results["proposed"]["shuffled_control"]["score"], color="k", ls="--", lw=1,
                   label="proposed, EEG shuffled")
    ax.set_xticks(x, [results[k]["label"] for k in keys], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("mean Pearson r")
    ax.set_title("Task 2 scores" + (" (--quick: pipeline check only)" if quick else ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, png, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train, predict and score every row of the paper's Task 2 tables "
                                                 "and write markdown tables beside the paper's numbers.")
    parser.add_argument("--data", required=True, help="dataset root with derivatives/split_data, stimuli/ and test_set/")
    parser.add_argument("--out", default="results/task2", help="output folder (default: results/task2)")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply every config's train.epochs by this (at least 1 epoch; default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and 1 epoch: a fast pipeline check whose numbers mean nothing")
    parser.add_argument("--cache-dir", default=None,
                        help="cache folder for the mel80/mag targets (default: DATA/derivatives/stimulus_targets; "
                             "set it to leave a shared dataset folder untouched)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: runs side by side with other jobs on a shared box)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow a non-empty --out (its runs, predictions and tables are replaced)")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated subset of rows to run (default all: {','.join(ROWS)})")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    argv_list = list(sys.argv[1:] if argv is None else argv)
    command = shlex.join(["python", "-m", "task2_regression.experiments.paper_tables"] + argv_list)

    data, out = Path(args.data), Path(args.out)
    for needed in (data / "test_set" / "TASK2_regression", data / "test_set" / "labels"):
        if not needed.is_dir():
            raise EEGKitError(f"{needed}: folder not found (the tables need a held-out test set with labels)")
    keys = [k.strip() for k in args.rows.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise EEGKitError(f"--rows: unknown rows {unknown} (known: {list(ROWS)})")
    for key in keys:
        if not (CONFIGS / ROWS[key].config).is_file():
            raise EEGKitError(f"{CONFIGS / ROWS[key].config}: config not found")
    check_out_dir(out, overwrite=args.overwrite, inputs=[data])
    prepare_out_dir(out)
    segment_s = within_segment_s(data)

    def log(message: str) -> None:
        print(message, flush=True)

    start = time.time()
    results: dict[str, dict] = {}
    for key in keys:
        results[key] = run_row(ROWS[key], args, out, data, segment_s, log)
        atomic_write_json(out / "results.json", {"command": command, "quick": args.quick, "within_segment_s": segment_s,
                                                 "threads": args.threads, "rows": results}, indent=2)
    atomic_write_text(out / "tables.md", markdown(results, command, args.quick, segment_s))
    bar_plot(results, out / "scores.png", args.quick)
    atomic_write_text(out / "COMMAND.txt", command + "\n")
    log(f"wrote {out / 'tables.md'}, {out / 'scores.png'}, {out / 'results.json'} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
