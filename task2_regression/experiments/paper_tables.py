"""Reproduce the seed paper's Task 2 tables (small CPU-sized models) on a dataset with a held-out test set.

    python -m task2_regression.experiments.paper_tables --data DATASET [--out results/task2] \
        [--epochs-scale F] [--cache-dir DIR] [--threads N] [--rows a,b] [--quick] [--merge] \
        [--no-costly-controls]

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

Controls (every row, held-out and within-subject; `evaluation.controls`): the noise-EEG control,
the circular-shift null (mean, p95, permutation p; Holm across subjects) and the mismatched-EEG
control, with the score above noise and the warning when the noise control exceeds the null's
p95 ("## Controls" in tables.md). `--no-costly-controls` keeps only the null. `--merge` keeps the
other rows of an existing results.json, so a long remake can run as several commands.

Configs are the *_small.yaml versions (and this task's ablation configs) so that the whole table
trains on one thread of a shared 2-core CPU: on the default synthetic dataset
(`python -m synthetic task2 --out DATASET`) the committed results/task2 run took 1437 s.
`--quick` shrinks every model and trains one
epoch: it proves the pipeline, its numbers mean nothing (the tables say so).

Outputs in --out: tables.md, scores.png (ours vs the paper), results.json (every report),
COMMAND.txt (the exact command line), runs/<row>/ and predictions/<row>/.
"""
from __future__ import annotations
if not __package__:  # run by path (python task2_regression/experiments/paper_tables.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])  # noqa: E401,E702

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
from util.config import float_arg, int_arg

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
    """The mismatched-EEG control of the test set (`task2_regression.predict.mismatched_control`)."""
    from task2_regression.predict import mismatched_control

    return mismatched_control(seed)


def score_predictions(subjects: dict, pred_dir: Path, test_dir: Path, labels_dir: Path,
                      noise: dict | None = None, mismatched: dict | None = None, n_shifts: int | None = None) -> dict:
    """Write predictions, check them with submit.py's validator, score with evaluation.task2 and its controls.

    ``noise`` / ``mismatched``: the same model's {subject: {id: prediction}} on noise / mismatched
    EEG (`task2_regression.predict.noise_control` / `mismatched_control`), or None.
    """
    import submit
    from evaluation.task2 import load_labels, load_predictions, score_with_controls
    from task2_regression.predict import write_predictions

    write_predictions(subjects, pred_dir)
    _, problems = submit.validate(pred_dir, submit.load_mappings(test_dir))
    if problems:
        raise EEGKitError(f"{pred_dir}: submission check failed: {problems[0]} ({len(problems)} problems)")

    def merged(by_subject):
        return None if by_subject is None else {i: p for segs in by_subject.values() for i, p in segs.items()}

    return score_with_controls(load_predictions(pred_dir), load_labels(labels_dir), merged(noise), merged(mismatched),
                               n_shifts=n_shifts)


CONTROL_KEYS = ("controls", "score_above_noise", "warnings", "per_subject_controls", "significance")


def within_segment_s(data_dir: Path, wanted: float = 30.0) -> float:
    """30 s, or the longest whole-second length every split_data test recording can hold."""
    from task2_regression.data import load_recordings

    recordings = load_recordings(data_dir, "test", features=("eeg",), normalize="none", check_finite=False)
    shortest = min(r.n_samples for r in recordings) / 64.0
    return float(min(wanted, max(1.0, np.floor(shortest))))


def run_row(row: Row, args, out: Path, data: Path, segment_s: float, log) -> dict:
    from task2_regression.evaluate import evaluate_within_subject
    from util.training import count_parameters
    from task2_regression.predict import load_run_model, noise_control, predict_test_set
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
    costly = not getattr(args, "no_costly_controls", False)
    noise = mismatched = None
    if costly:
        noise = predict_test_set(run_dir, test_dir, "best", eeg_transform=noise_control(0), progress=False)
        mismatched = predict_test_set(run_dir, test_dir, "best", eeg_transform=shuffle_within_subject(0),
                                      progress=False)
    n_shifts = getattr(args, "n_shifts", None)
    heldout = score_predictions(subjects, out / "predictions" / row.key, test_dir, labels_dir, noise, mismatched,
                                n_shifts)
    within = evaluate_within_subject(run_dir, data, "test", segment_s, "best", progress=False,
                                     costly_controls=costly, n_shifts=n_shifts)
    entry = {"key": row.key, "label": row.label, "config": row.config, "paper": row.paper,
             "targets": resolved["targets"], "epochs_run": result["epochs_run"], "best_val": result["best_val"],
             "select_on": result.get("select_on", "score"), "val_noise_eeg": _best_val_noise(run_dir, result.get("select_on", "score")),
             "parameters": count_parameters(model), "train_s": round(train_s, 1), "heldout": heldout,
             "within": {k: within[k] for k in ("score", "std_over_subjects", "per_band", "n_segments") + CONTROL_KEYS}}
    log(f"[{row.key}] held-out {heldout['score']:.4f} +- {heldout['std_over_subjects']:.4f} "
        f"(noise EEG {_fmt(heldout['controls']['noise_eeg']['score'])}), within-subject "
        f"{within['score']:.4f} (noise EEG {_fmt(within['controls']['noise_eeg']['score'])}), "
        f"val {result['best_val']:.4f}, {train_s:.0f} s")
    for where, report in (("held-out", heldout), ("within-subject", within)):
        for warning in report["warnings"]:
            log(f"[{row.key}] {where} WARNING: {warning}")
    if row.key == "proposed" and mismatched is not None:
        from evaluation.task2 import score as plain_score

        from evaluation.task2 import load_labels

        control = plain_score({i: p for segs in mismatched.values() for i, p in segs.items()}, load_labels(labels_dir))
        entry["shuffled_control"] = control
        log(f"[proposed] EEG-shuffled control {control['score']:.4f} +- {control['std_over_subjects']:.4f}")
    return entry


def _best_val_noise(run_dir: Path, select_on: str) -> float | None:
    """The validation noise-EEG control in log.csv at the epoch that chose best.pt (None if not logged)."""
    import csv

    from task2_regression.train import SELECT_ON

    path = Path(run_dir) / "log.csv"
    rows = [r for r in csv.DictReader(path.read_text().splitlines()) if r.get("val_noise_eeg")] if path.is_file() else []
    if not rows:
        return None
    column = SELECT_ON.get(select_on, "val_pearson")
    return float(max(rows, key=lambda r: float(r[column]))["val_noise_eeg"])


CONTROLS_HEAD = ("| system | scored on | score | noise EEG | circular shift: mean / p95 (p) | mismatched EEG | "
                 "score above noise | significant subjects (Holm, p < 0.05) | warning |\n"
                 "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
CONTROLS_NOTE = ("Controls (`evaluation.controls`): the same model on Gaussian EEG with the recording's per-channel "
                 "mean and std (noise EEG: the EEG-independent part of the score); the labels circularly shifted "
                 "by >= 2 s, as many times as the scorer chooses for Holm (stated in each report) unless `--n-shifts` says otherwise (null mean, 95th percentile, permutation p of the overall score); the EEG of "
                 "another segment (held-out test set: a derangement within the subject) or another recording of "
                 "the same subject, another stimulus where one exists (within-subject). Warning: the noise "
                 "control exceeds the null's 95th percentile (the score contains an EEG-independent part).")


def control_line(label: str, where: str, report: dict) -> str:
    """One markdown row: a score beside its three controls."""
    controls = report.get("controls") or {}
    shift = controls.get("circular_shift")
    shift_text = "--" if not shift else f"{shift['mean']:.4f} / {shift['p95']:.4f} ({shift['p_value']:.3f})"
    sig = report.get("significance") or {}
    n_sig = "--" if not sig else f"{len(sig['significant'])} of {sig['n_subjects']}"
    warned = any(w.startswith("the score contains") for w in report.get("warnings", []))
    return (f"| {label} | {where} | {_fmt(report['score'])} | {_fmt((controls.get('noise_eeg') or {}).get('score'))} | "
            f"{shift_text} | {_fmt((controls.get('mismatched_eeg') or {}).get('score'))} | "
            f"{_fmt(report.get('score_above_noise'))} | {n_sig} | {'**EEG-independent part**' if warned else '--'} |")


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
    parts += ["", "## Controls (every row)", "", CONTROLS_NOTE, "", CONTROLS_HEAD]
    for key, e in results.items():
        for where, name in (("heldout", "held-out"), ("within", "within-subject")):
            parts.append(control_line(e["label"], name, e[where]))
    parts += ["", "Validation (model selection, `train.select_on`): "
              + "; ".join(f"{e['label']} {_fmt(e['best_val'])} on {e.get('select_on', 'score')}"
                          f" (noise EEG {_fmt(e.get('val_noise_eeg'))})" for e in results.values())]
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
    noise = [((results[k]["heldout"].get("controls") or {}).get("noise_eeg") or {}).get("score") for k in keys]
    noise = [np.nan if v is None else v for v in noise]
    p95 = [((results[k]["heldout"].get("controls") or {}).get("circular_shift") or {}).get("p95", np.nan) for k in keys]
    ours_std = [results[k]["heldout"]["std_over_subjects"] for k in keys]
    within = [results[k]["within"]["score"] for k in keys]
    paper = [results[k]["paper"] if results[k]["paper"] is not None else np.nan for k in keys]
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * len(keys)), 4))
    ax.bar(x - 0.3, paper, 0.2, label="paper", color="tab:gray")
    ax.bar(x - 0.1, ours, 0.2, yerr=ours_std, capsize=3, label="ours, held-out subjects", color="tab:blue")
    ax.bar(x + 0.1, noise, 0.2, label="held-out, noise-EEG control", color="tab:red")
    ax.bar(x + 0.3, within, 0.2, label="ours, within-subject", color="tab:orange")
    ax.scatter(x - 0.1, p95, marker="_", s=200, color="k", zorder=3, label="held-out, circular-shift null p95")
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
    parser.add_argument("--epochs-scale", type=float_arg(0, 1000, low_open=True), default=1.0,
                        help="multiply every config's train.epochs by this (at least 1 epoch; default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny models and 1 epoch: a fast pipeline check whose numbers mean nothing")
    parser.add_argument("--cache-dir", default=None,
                        help="cache folder for the mel80/mag targets (default: DATA/derivatives/stimulus_targets; "
                             "set it to leave a shared dataset folder untouched)")
    parser.add_argument("--threads", type=int_arg(1, 4096), default=1,
                        help="torch intra-op threads (default 1: runs side by side with other jobs on a shared box)")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow a non-empty --out (its runs, predictions and tables are replaced)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other rows of an existing OUT/results.json and re-make the tables from all "
                             "of them (to split a long remake into several commands)")
    parser.add_argument("--n-shifts", type=int_arg(1, 100000), default=None,
                        help="circular shifts per subject for the null (default: chosen by the scorer, "
                             "ceil(20 x subjects / 0.05) within [100, 20000], so Holm can reach p < 0.05)")
    parser.add_argument("--no-costly-controls", action="store_true",
                        help="leave out the controls that rerun each model (noise EEG, mismatched EEG); the "
                             "circular-shift null stays")
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
    if not keys:
        raise EEGKitError(f"--rows {args.rows!r}: names no row (known: {','.join(ROWS)})")
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        raise EEGKitError(f"--rows: unknown rows {unknown} (known: {list(ROWS)})")
    for key in keys:
        if not (CONFIGS / ROWS[key].config).is_file():
            raise EEGKitError(f"{CONFIGS / ROWS[key].config}: config not found")
    check_out_dir(out, overwrite=args.overwrite or args.merge, inputs=[data])  # --merge continues an OUT
    prepare_out_dir(out)
    segment_s = within_segment_s(data)

    def log(message: str) -> None:
        print(message, flush=True)

    start = time.time()
    results: dict[str, dict] = {}
    commands = [command]
    if args.merge and (out / "results.json").is_file():
        previous = json.loads((out / "results.json").read_text())
        if bool(previous.get("quick")) != bool(args.quick):
            raise EEGKitError(f"--merge: {out / 'results.json'} was made {'with' if previous.get('quick') else 'without'} "
                              "--quick; merge only runs of the same kind")
        results = {k: v for k, v in previous.get("rows", {}).items() if k not in keys}
        commands = [c for c in previous.get("commands", [previous.get("command")]) if c] + commands
    for key in keys:
        results[key] = run_row(ROWS[key], args, out, data, segment_s, log)
        results = {k: results[k] for k in ROWS if k in results}  # table order
        atomic_write_json(out / "results.json", {"command": command, "commands": commands, "quick": args.quick,
                                                 "within_segment_s": segment_s, "threads": args.threads,
                                                 "rows": results}, indent=2)
    atomic_write_text(out / "tables.md", markdown(results, " && ".join(f"`{c}`" for c in commands)[1:-1],
                                                  args.quick, segment_s))
    bar_plot(results, out / "scores.png", args.quick)
    atomic_write_text(out / "COMMAND.txt", "\n".join(commands) + "\n")
    log(f"wrote {out / 'tables.md'}, {out / 'scores.png'}, {out / 'results.json'} in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    run_cli(main)
