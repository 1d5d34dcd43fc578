"""The Task 1 accuracy grid: window length x number of imposters, as the organisers report it.

    python -m task1_match_mismatch.experiments.accuracy_grid --data DATASET [--out results/task1] \
        [--config task1_match_mismatch/configs/dilated_conv_small.yaml] [--windows 3,5] [--imposters 1,2,4,8] \
        [--train-per-cell] [--seed 0] [--overwrite]

For every window length (default 3 s and 5 s) the baseline is trained once with
`task1_match_mismatch.train.train` (``data.window_s`` set, the config's other settings kept, 4
imposters), and scored with `task1_match_mismatch.evaluate.evaluate_run` on the within-subject
split_data test split at every number of imposters (default 1, 2, 4, 8: chance 1/2 .. 1/9):
trials of one window every window length (independent), imposters from the other trials of the same
recording. The models score each candidate on its own (a shared head), so the number of candidates
is a test-time setting; ``--train-per-cell`` trains one model per cell (``data.n_imposters`` set)
instead.

Each cell holds the accuracy (mean over subjects), its pooled Clopper-Pearson interval, chance with
the central 95 % of a guesser and the significance threshold for its number of trials, and the
noise-EEG and mismatched-EEG controls (`evaluation.task1.score`). Outputs in --out:
accuracy_grid.md (the table), accuracy_grid.json (every report), accuracy_grid.png (accuracy against
the number of candidates with the chance band), COMMAND.txt (the exact command line), runs/<cell>/.
"""
from __future__ import annotations
if not __package__:  # run by path (python task1_match_mismatch/experiments/accuracy_grid.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[2])  # noqa: E401,E702

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from util.atomic import atomic_savefig, atomic_write_json, atomic_write_text
from util.errors import EEGKitError, run_cli
from util.outdir import check_out_dir, prepare_out_dir
from util.config import seed_arg

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO / "task1_match_mismatch" / "configs" / "dilated_conv_small.yaml"
TRAIN_IMPOSTERS = 4  # the training setting of the per-window models (the 2024 task's)


def parse_list(text: str, flag: str, kind=float, low: float = 0.0) -> list:
    """``"3,5"`` -> sorted unique values above ``low``; one error line naming ``flag``."""
    values = []
    for item in str(text).split(","):
        try:
            value = kind(item.strip())
        except ValueError:
            raise EEGKitError(f"{flag} {text}: {item.strip()!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(value) or value <= low:
            raise EEGKitError(f"{flag} {text}: values must be above {low:g}, got {item.strip()}")
        values.append(value)
    return sorted(set(values))


def run_grid(config: dict, data_dir, out: Path, windows_s: Sequence[float], imposters: Sequence[int],
             train_per_cell: bool = False, seed: int = 0, say=print) -> dict:
    """Train and score every cell; returns ``{"cells": {f"{w}s_{n}": report}, "trained": {...}, "seconds"}``."""
    from task1_match_mismatch.evaluate import evaluate_run
    from task1_match_mismatch.train import train
    from util.config import apply_overrides

    cells, trained, started = {}, {}, time.time()
    for window_s in windows_s:
        for n in imposters:
            train_n = n if train_per_cell else TRAIN_IMPOSTERS
            name = f"{window_s:g}s_{train_n}imp"
            run = out / "runs" / name
            if name not in trained:
                overrides = [f"data.window_s={window_s:g}", f"data.n_imposters={train_n}", f"train.seed={seed}"]
                say(f"--- training {name} ({' '.join(overrides)})")
                tic = time.time()
                result = train(apply_overrides(config, overrides), data_dir, run, overwrite=True, say=say)
                trained[name] = {"best_val": result["best_val"], "epochs_run": result["epochs_run"],
                                 "seconds": round(time.time() - tic, 1)}
            report = evaluate_run(run, data_dir, window_s=window_s, n_imposters=n, seed=seed)
            report["trained_as"] = name
            cells[f"{window_s:g}s_{n}"] = report
            say(f"{window_s:g} s, {n} imposter(s): accuracy {100 * report['score']:.1f} % (chance "
                f"{100 / (n + 1):.1f} %, {report['overall']['n_segments']} trials)")
    return {"cells": cells, "trained": trained, "seconds": round(time.time() - started, 1)}


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def format_table(result: dict, windows_s, imposters, command: str) -> str:
    """The grid as markdown: accuracy per cell, then every cell with its chance figures and controls."""
    lines = ["# Task 1 accuracy grid (within-subject test split)", "", f"Command: `{command}`", "",
             f"Wall time: {result['seconds']:.0f} s. Trained: " + ", ".join(
                 f"{name} ({info['epochs_run']} epochs, {info['seconds']:.0f} s)" for name, info in result["trained"].items()),
             "", "Accuracy (%, mean over subjects; chance in brackets):", "",
             "| window | " + " | ".join(f"{n} imposter{'s' if n > 1 else ''}" for n in imposters) + " |",
             "|---|" + "---|" * len(imposters)]
    for window_s in windows_s:
        cells = [result["cells"][f"{window_s:g}s_{n}"] for n in imposters]
        lines.append(f"| {window_s:g} s | " + " | ".join(
            f"{_pct(c['score'])} ({_pct(c['overall']['chance'])})" for c in cells) + " |")
    lines += ["", "Every cell (pooled trials): accuracy [95 % CI], chance [95 % of guessers], significance threshold, "
              "noise-EEG and mismatched-EEG controls:", "",
              "| cell | trials | accuracy [CI] | chance [guessers] | threshold | noise EEG | mismatched EEG | warnings |",
              "|---|---|---|---|---|---|---|---|"]
    for key, report in result["cells"].items():
        overall = report["overall"]
        controls = report["controls"]
        cell = f"{report['window_s']:g} s, {report['n_imposters']} imposter{'s' if report['n_imposters'] > 1 else ''}"
        lines.append(
            f"| {cell} | {overall['n_segments']} | "
            f"{_pct(overall['accuracy'])} [{_pct(overall['ci95'][0])}, {_pct(overall['ci95'][1])}] | "
            f"{_pct(overall['chance'])} [{_pct(overall['chance_range95'][0])}, {_pct(overall['chance_range95'][1])}] | "
            f"{_pct(overall['significance_threshold'])} | "
            f"{_pct((controls.get('noise EEG') or {}).get('score'))} | "
            f"{_pct((controls.get('mismatched EEG') or {}).get('score'))} | {len(report['warnings'])} |")
    warned = [(key, w) for key, report in result["cells"].items() for w in report["warnings"]]
    if warned:
        lines += ["", "Warnings:", ""] + [f"- {key}: {w}" for key, w in warned]
    return "\n".join(lines) + "\n"


def plot_grid(result: dict, windows_s, imposters, png: Path) -> None:
    """Accuracy against the number of candidates, one line per window length, with chance and its band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = [n + 1 for n in imposters]
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, window_s in enumerate(windows_s):
        cells = [result["cells"][f"{window_s:g}s_{n}"] for n in imposters]
        accuracy = [c["score"] for c in cells]
        errors = np.array([[c["overall"]["accuracy"] - c["overall"]["ci95"][0],
                            c["overall"]["ci95"][1] - c["overall"]["accuracy"]] for c in cells]).T
        ax.errorbar(np.array(candidates) + 0.08 * i, accuracy, yerr=errors, marker="o", capsize=3,
                    label=f"{window_s:g}-s windows")
        ax.plot(candidates, [(c["controls"].get("noise EEG") or {}).get("score", np.nan) for c in cells], "s:",
                color=f"C{i}", alpha=0.6, label=f"{window_s:g} s: noise EEG")
        lows = [c["overall"]["chance_range95"][0] for c in cells]
        highs = [c["overall"]["chance_range95"][1] for c in cells]
        ax.fill_between(candidates, lows, highs, color="grey", alpha=0.15, lw=0,
                        label="chance: 95 % of guessers" if i == 0 else None)
    ax.plot(candidates, [1 / k for k in candidates], "k-", lw=0.8, label="chance 1/K")
    ax.set_xticks(candidates)
    ax.set_xlabel("candidates K (imposters + 1)")
    ax.set_ylabel("accuracy (mean over subjects)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("Task 1 baseline: accuracy grid (within-subject test split)", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, png, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m task1_match_mismatch.experiments.accuracy_grid",
        description="Task 1 accuracy grid: the baseline trained per window length and scored on the within-subject "
                    "test split at every number of imposters, each cell beside chance and the no-EEG controls.")
    parser.add_argument("--data", required=True, help="dataset root holding derivatives/split_data/")
    parser.add_argument("--out", default="results/task1", help="output folder (default results/task1)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG.relative_to(REPO)),
                        help="run config of the model (default: the baseline, dilated_conv_small.yaml)")
    parser.add_argument("--windows", default="3,5", help="window lengths in seconds (default 3,5)")
    parser.add_argument("--imposters", default="1,2,4,8", help="numbers of imposters (default 1,2,4,8)")
    parser.add_argument("--train-per-cell", action="store_true",
                        help="train one model per cell (data.n_imposters = the cell's) instead of one per window "
                             f"length trained with {TRAIN_IMPOSTERS} imposters")
    parser.add_argument("--seed", type=seed_arg, default=0, help="train.seed and the evaluation seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty --out (its files are replaced)")
    parser.add_argument("overrides", nargs="*", help="config overrides as dotted.key=value, e.g. train.epochs=4")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from util.config import load_config

    argv_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv_list)
    windows_s = parse_list(args.windows, "--windows")
    imposters = [int(n) for n in parse_list(args.imposters, "--imposters", kind=int)]
    if args.seed < 0:
        raise EEGKitError(f"--seed {args.seed}: must be >= 0")
    config = load_config(args.config, args.overrides)
    out, data = Path(args.out), Path(args.data)
    if not data.is_dir():
        raise EEGKitError(f"{data}: dataset folder not found")
    check_out_dir(out, overwrite=args.overwrite, inputs=[data, args.config])
    command = shlex.join(["python", "-m", "task1_match_mismatch.experiments.accuracy_grid"] + argv_list)
    result = run_grid(config, data, out, windows_s, imposters, args.train_per_cell, args.seed)
    prepare_out_dir(out)
    table = format_table(result, windows_s, imposters, command)
    atomic_write_text(out / "accuracy_grid.md", table)
    atomic_write_json(out / "accuracy_grid.json", {"command": command, "config": args.config, **result}, indent=1)
    plot_grid(result, windows_s, imposters, out / "accuracy_grid.png")
    atomic_write_text(out / "COMMAND.txt", command + "\n")
    print(table)
    print(f"written: {out / 'accuracy_grid.md'}, accuracy_grid.json, accuracy_grid.png, COMMAND.txt")
    return 0


if __name__ == "__main__":
    run_cli(main)
