"""The kit's main job on built-in synthetic data, end to end, through the real command-line scripts.

Task 2 (default): generate a synthetic SparrKULee-format dataset, train the
linear baseline and a small VLAAI, predict the held-out test subjects, write
the submission zips, score them with the local evaluator, and print a table
plus the path of a PNG report.

Speaker extraction (``--task speaker-extraction``): generate a synthetic
KU Leuven-format dataset, train a small NeuroSpex, evaluate it on held-out
trials (SI-SDR, SI-SDRi, PESQ, STOI, speaker confusion) beside the unprocessed
mixture and a shuffled-EEG control, compare its extraction-derived attention
decoding accuracy with a ridge stimulus-reconstruction decoder on the same
trials, and print the tables plus the PNG path.

Task 1 (``--task match-mismatch``): generate the same synthetic SparrKULee-format
dataset (4 subjects x 16 min by default, so that the within-subject test parts
hold 9 independent 5-s trials per recording), train the dilated convolutional
baseline, the kit-encoder model (the VLAAI stack of Task 2 as the EEG branch) and
the ridge decoder, score each on the within-subject test split (5-s trials, 4
imposters) beside chance and the noise-EEG / mismatched-EEG controls, then predict
the synthetic Task 1 test set (held-out subjects), zip it with ``submit.py --task 1``
and score it with ``python -m evaluation.task1``, and print the table.

Every step is a subprocess call of the same script a user would run, printed
before it runs, so the demo doubles as a worked example.

The working folder carries the kit's marker file (`util.outdir.MARKER`): re-running reuses it,
``--fresh`` deletes it only when the marker is there, and a non-empty folder without the marker
is refused (``--overwrite`` allows it; ``--fresh`` never deletes it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent

from util.outdir import is_kit_folder  # noqa: E402
from util.config import seed_arg  # noqa: E402

# model name -> (config, overrides). The challenge's linear config uses batch 64 of 60-s windows,
# i.e. only 2 steps per epoch on the demo's ~1 hour of data; batch 8 converges in ~20 epochs.
TASK2_MODELS = {
    "linear": ("task2_regression/configs/linear.yaml", ["data.batch_size=8"]),
    "vlaai_small": ("task2_regression/configs/vlaai_small.yaml", []),
}


WITHIN_SEGMENT_S = 20.0

# Task 1 (match-mismatch): model name -> config (brief CPU trainings; task1_match_mismatch/configs)
MATCH_MISMATCH_MODELS = {
    "dilated_conv": "task1_match_mismatch/configs/dilated_conv_small.yaml",
    "vlaai_encoder": "task1_match_mismatch/configs/vlaai_small.yaml",
    "ridge": "task1_match_mismatch/configs/ridge.yaml",
}
MATCH_MISMATCH_DATA = {"subjects": 4, "minutes": 16.0}  # recordings of 8 min: test parts of 48 s


def run(cmd: list[str]) -> None:
    """Run one step, echoing the command; stop the demo on failure."""
    print("\n$ " + " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"demo: step failed with exit code {result.returncode}: {' '.join(cmd)}")


def prepare_workdir(args: argparse.Namespace) -> Path:
    """The demo's working folder: checked, ``--fresh`` only on a folder carrying the kit's marker, marked."""
    from util.errors import EEGKitError
    from util.outdir import check_out_dir, is_kit_folder, prepare_out_dir

    out = Path(args.out).resolve()
    if out.exists() and not out.is_dir():
        raise EEGKitError(f"--out {args.out}: exists and is a file, not a folder")
    if args.fresh and out.exists():
        if not is_kit_folder(out):
            raise EEGKitError(f"--out {args.out}: --fresh deletes only folders the kit made (with its marker file); "
                              f"this one has none, so nothing was deleted")
        shutil.rmtree(out)
    check_out_dir(out, flag="--out", overwrite=args.overwrite or is_kit_folder(out))
    return prepare_out_dir(out)


def task2(args: argparse.Namespace) -> None:
    out = prepare_workdir(args)
    data = out / "data"
    if not (data / "test_set").is_dir():
        run([sys.executable, "-m", "synthetic", "task2", "--out", str(data), "--seed", str(args.seed)]
            + (["--subjects", str(args.subjects)] if args.subjects else [])
            + (["--minutes", str(args.minutes)] if args.minutes else []))
    test_set = data / "test_set" / "TASK2_regression"
    labels = data / "test_set" / "labels"
    rows = []
    for name, (config, config_overrides) in TASK2_MODELS.items():
        run_dir, predictions = out / "runs" / name, out / "predictions" / name
        submissions, report = out / "submissions" / name, out / "reports" / f"{name}.json"
        overrides = config_overrides + ([f"train.epochs={args.epochs}"] if args.epochs else [])
        if not (run_dir / "best.pt").is_file():  # (a run folder without best.pt is an unfinished one: replaced)
            run([sys.executable, "-m", "task2_regression.train", "--config", config, "--data", str(data),
                 "--out", str(run_dir), "--overwrite"] + overrides)
        run([sys.executable, "-m", "task2_regression.predict", "--run", str(run_dir), "--test-set", str(test_set),
             "--out", str(predictions), "--overwrite"])
        if submissions.is_dir() and is_kit_folder(submissions):
            shutil.rmtree(submissions)
        run([sys.executable, "submit.py", "--task", "2", "--predictions", str(predictions), "--test-set",
             str(test_set), "--group", f"demo_{name}", "--out", str(submissions)])
        zip_path = next(submissions.glob("task_2_group_*_submission_1.zip"))
        run([sys.executable, "-m", "evaluation.task2", "--predictions", str(zip_path), "--labels", str(labels),
             "--out", str(report), "--plot", str(report.with_suffix(".png")), "--overwrite"])
        within = out / "reports" / f"{name}_within_subject.json"
        # the synthetic recordings are 4 min long, so their test parts (last 10 %) hold 24 s:
        # score within-subject on 20-s segments (30 s on real SparrKULee recordings)
        run([sys.executable, "-m", "task2_regression.evaluate", "--run", str(run_dir), "--data", str(data),
             "--segment-s", str(WITHIN_SEGMENT_S), "--out", str(within), "--overwrite"])
        # (the scorer chooses enough circular shifts for Holm over the subjects and states the count)
        held_out, within_report = json.loads(report.read_text()), json.loads(within.read_text())
        rows.append((name, held_out, within_report, zip_path))
    oracle, shuffled = _label_controls(labels, seed=args.seed)
    summary_png = out / "reports" / "summary.png"
    _task2_summary_plot(rows, summary_png)
    print("\nTask 2 on synthetic data (mean Pearson r over mel bands; official rule)")
    print(f"{'model':<14}{'held-out subjects':>20}{'std':>8}{f'within-subject ({WITHIN_SEGMENT_S:g}-s)':>22}")
    for name, held_out, within_report, _ in rows:
        print(f"{name:<14}{held_out['score']:>20.4f}{held_out['std_over_subjects']:>8.4f}{within_report['score']:>22.4f}")
    print("\nwithin-subject controls (python -m task2_regression.evaluate; evaluation/controls.py)")
    print(f"{'model':<14}{'score':>8}{'noise EEG':>11}{'null p95':>10}{'mismatched':>12}{'above noise':>13}")
    for name, _, within_report, _ in rows:
        controls = within_report["controls"]
        shift = controls["circular_shift"] or {"p95": float("nan")}
        cells = [controls["noise_eeg"]["score"], shift["p95"], controls["mismatched_eeg"]["score"],
                 within_report["score_above_noise"]]
        print(f"{name:<14}{within_report['score']:>8.4f}" + "".join(
            f"{'n/a' if v is None else f'{v:.4f}':>{w}}" for v, w in zip(cells, (11, 10, 12, 13))))
        for warning in within_report["warnings"]:
            print(f"  WARNING: {warning}")
    print(f"{'labels':<14}{oracle['score']:>20.4f}{oracle['std_over_subjects']:>8.4f}{'(must be 1)':>22}")
    print(f"{'shuffled':<14}{shuffled['score']:>20.4f}{shuffled['std_over_subjects']:>8.4f}{'(other segments)':>22}")
    print("\nsubmissions: " + ", ".join(str(r[3]) for r in rows))
    print(f"PNG report: {summary_png}")


def _label_controls(labels_dir: Path, seed: int):
    """Score the held-out labels themselves (must give 1.0) and the labels with segment ids
    shuffled within each subject (a predictor unrelated to the EEG: about 0)."""
    import numpy as np

    from evaluation.task2 import load_labels, score

    labels = load_labels(labels_dir)
    exact = {sid: mel for subject in labels.values() for sid, mel in subject.items()}
    rng = np.random.default_rng(seed)
    shuffled = {}
    for subject in labels.values():
        ids = sorted(subject)
        for sid, other in zip(ids, np.roll(ids, 1 + int(rng.integers(max(len(ids) - 1, 1))))):
            shuffled[sid] = subject[other]
    return score(exact, labels), score(shuffled, labels)


def _task2_summary_plot(rows, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from util.atomic import atomic_savefig

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(rows)
    for i, (name, held_out, _, _) in enumerate(rows):
        subjects = sorted(held_out["per_subject"])
        left.bar(np.arange(len(subjects)) + i * width, [held_out["per_subject"][s] for s in subjects], width, label=name)
        bands = held_out["per_band"]
        right.bar(np.arange(len(bands)) + i * width, bands, width, label=name)
    left.set_xticks(np.arange(len(subjects)) + width * (len(rows) - 1) / 2, subjects, rotation=45)
    left.set_title("held-out subjects: score per subject")
    right.set_xticks(np.arange(len(bands)) + width * (len(rows) - 1) / 2, [str(b) for b in range(len(bands))])
    right.set_title("per mel band")
    right.set_xlabel("mel band")
    for axis in (left, right):
        axis.set_ylabel("Pearson r")
        axis.axhline(0, color="k", lw=0.5)
        axis.legend()
    fig.tight_layout()
    atomic_savefig(fig, png, dpi=110)


def speaker_extraction(args: argparse.Namespace) -> None:
    out = prepare_workdir(args)
    data = out / "data"
    if not any(data.glob("S*.mat")):
        run([sys.executable, "-m", "synthetic", "kul", "--out", str(data), "--seed", str(args.seed)]
            + (["--subjects", str(args.subjects)] if args.subjects else [])
            + (["--minutes", str(args.minutes)] if args.minutes else []))
    run_dir = out / "runs" / "neurospex_small"
    overrides = [f"train.epochs={args.epochs}"] if args.epochs else []
    if not (run_dir / "best.pt").is_file():
        run([sys.executable, "-m", "speaker_extraction.train", "--config", "speaker_extraction/configs/neurospex_small.yaml",
             "--data", str(data), "--out", str(run_dir), "--overwrite"] + overrides)
    reports = {}
    for label, extra in (("neurospex_small", []), ("shuffled_eeg", ["--shuffle-eeg"])):
        report = out / "reports" / f"{label}.json"
        run([sys.executable, "-m", "speaker_extraction.evaluate", "--run", str(run_dir), "--data", str(data),
             "--split", "test", "--out", str(report), "--plot", str(report.with_suffix(".png")), "--overwrite"] + extra)
        reports[label] = json.loads(report.read_text())
    # stimulus-reconstruction AAD (ridge backward decoder) on the same held-out trials, for comparison
    aad_dir = out / "reports" / "aad_ridge"
    run([sys.executable, "-m", "speaker_extraction.experiments.aad", "--data", str(data), "--model", "ridge",
         "--split-from-run", str(run_dir), "--out", str(aad_dir), "--overwrite"])
    ridge = json.loads((aad_dir / "report.json").read_text())
    print("\nSpeaker extraction on synthetic KUL data (held-out trials; mean over 4-s windows)")
    print(f"{'system':<18}{'SI-SDR':>9}{'SI-SDRi':>9}{'PESQ':>7}{'STOI':>7}{'confusion':>11}")
    model = reports["neurospex_small"]["overall"]
    mixture = reports["neurospex_small"]["mixture"]
    shuffled = reports["shuffled_eeg"]["overall"]
    for name, row in (("mixture", mixture), ("neurospex_small", model), ("shuffled EEG", shuffled)):
        print(f"{name:<18}{row['si_sdr']:>9.2f}{row.get('si_sdri', 0.0):>9.2f}"
              f"{row['pesq']:>7.2f}{row['stoi']:>7.3f}{row.get('confusion_rate', float('nan')):>11.3f}")
    print("(confusion: fraction of windows closer to the unattended talker, SI-SDR; the mixture's is a coin flip)")
    extraction, shuffled_aad = (reports[k]["extraction_aad"] for k in ("neurospex_small", "shuffled_eeg"))
    print("\nAttention decoding on the same held-out trials: accuracy per decision window (mean over subjects)")
    print(f"{'window (s)':<12}{'windows':>8}{'neurospex_small':>17}{'shuffled EEG':>14}{'ridge (stim. rec.)':>20}")
    for window, pooled in extraction["pooled"].items():
        print(f"{window:<12}{pooled['n_windows']:>8}{extraction['mean_accuracy'][window]:>17.3f}"
              f"{shuffled_aad['mean_accuracy'].get(window, float('nan')):>14.3f}"
              f"{ridge['mean_accuracy'].get(window, float('nan')):>20.3f}")
    print("(neurospex: 1 - speaker-confusion rate of its whole-trial output; ridge: r(attended) > r(unattended) of "
          "its envelope reconstruction, lags 0-250 ms)")
    print(f"PNG report: {out / 'reports' / 'neurospex_small.png'}")


def match_mismatch(args: argparse.Namespace) -> None:
    """Task 1: data -> three models -> within-subject accuracy with controls -> test set -> submit -> score."""
    out = prepare_workdir(args)
    data = out / "data"
    test_set, labels = data / "test_set" / "TASK1_match_mismatch", data / "test_set" / "labels_task1"
    if not test_set.is_dir():
        run([sys.executable, "-m", "synthetic", "task2", "--out", str(data), "--seed", str(args.seed), "--overwrite",
             "--subjects", str(args.subjects or MATCH_MISMATCH_DATA["subjects"]),
             "--minutes", str(args.minutes or MATCH_MISMATCH_DATA["minutes"])])
    rows = []
    for name, config in MATCH_MISMATCH_MODELS.items():
        run_dir, reports = out / "runs" / name, out / "reports"
        overrides = [f"train.epochs={args.epochs}"] if args.epochs is not None and name != "ridge" else []
        if not (run_dir / "best.pt").is_file():
            run([sys.executable, "-m", "task1_match_mismatch.train", "--config", config, "--data", str(data),
                 "--out", str(run_dir), "--overwrite"] + overrides)
        within = reports / f"{name}_within_subject.json"
        run([sys.executable, "-m", "task1_match_mismatch.evaluate", "--run", str(run_dir), "--data", str(data),
             "--out", str(within), "--plot", str(within.with_suffix(".png")), "--overwrite"])
        predictions = {}
        for control in ("none", "noise", "mismatched"):
            folder = out / "predictions" / (name if control == "none" else f"{name}_{control}_eeg")
            run([sys.executable, "-m", "task1_match_mismatch.predict", "--run", str(run_dir), "--test-set",
                 str(test_set), "--out", str(folder), "--control", control, "--overwrite"])
            predictions[control] = folder
        submissions = out / "submissions" / name
        if submissions.is_dir() and is_kit_folder(submissions):
            shutil.rmtree(submissions)
        run([sys.executable, "submit.py", "--task", "1", "--predictions", str(predictions["none"]), "--test-set",
             str(test_set), "--group", f"demo_{name}", "--out", str(submissions)])
        zip_path = next(submissions.glob("task_1_group_*_submission_1.zip"))
        held_out = reports / f"{name}_test_set.json"
        run([sys.executable, "-m", "evaluation.task1", "--predictions", str(zip_path), "--labels", str(labels),
             "--noise-predictions", str(predictions["noise"]), "--mismatched-predictions",
             str(predictions["mismatched"]), "--out", str(held_out), "--overwrite"])
        rows.append((name, json.loads(within.read_text()), json.loads(held_out.read_text()), zip_path))

    def cell(block) -> str:
        return "n/a" if block is None else f"{100 * block['score']:.1f}"

    for title, index in (("within-subject test split (python -m task1_match_mismatch.evaluate)", 1),
                         ("synthetic Task 1 test set, held-out subjects (predict -> submit.py --task 1 -> "
                          "python -m evaluation.task1)", 2)):
        first = rows[0][index]
        print(f"\nTask 1 match-mismatch on synthetic data, {title}: 5-s segments, "
              f"{first['n_candidates']} candidates, accuracy in % (mean over subjects)")
        print(f"{'model':<15}{'accuracy':>9}{'pooled 95% CI':>15}{'chance':>8}{'95% of guessers':>17}"
              f"{'threshold':>10}{'noise EEG':>11}{'mismatched':>12}{'segments':>10}")
        for name, *reports, _ in rows:
            report = reports[index - 1]
            overall, controls = report["overall"], report["controls"]
            interval = "{:.1f}-{:.1f}".format(*(100 * v for v in overall["ci95"]))
            guessers = "{:.1f}-{:.1f}".format(*(100 * v for v in overall["chance_range95"]))
            print(f"{name:<15}{100 * report['score']:>9.1f}{interval:>15}{100 * overall['chance']:>8.1f}{guessers:>17}"
                  f"{100 * overall['significance_threshold']:>10.1f}{cell(controls.get('noise EEG')):>11}"
                  f"{cell(controls.get('mismatched EEG')):>12}{overall['n_segments']:>10}")
            for warning in report["warnings"]:
                print(f"  WARNING ({name}): {warning}")
    print("\nsubmissions: " + ", ".join(str(r[3]) for r in rows))
    print(f"PNG reports: {out / 'reports'}/<model>_within_subject.png")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["task2", "speaker-extraction", "match-mismatch"], default="task2",
                        help="which half of the kit to demonstrate (default: task2)")
    parser.add_argument("--out", default=None,
                        help="working folder (default: runs/demo_task2 or runs/demo_speaker_extraction)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the working folder first (regenerate data, retrain); only a folder carrying the "
                             "kit's marker file is ever deleted")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow a non-empty --out that the kit did not make (its files may be replaced)")
    parser.add_argument("--subjects", type=int, default=None, help="synthetic subjects (default: the generator's)")
    parser.add_argument("--minutes", type=float, default=None, help="synthetic minutes (default: the generator's)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs of the configs")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the synthetic data")
    args = parser.parse_args(argv)
    from util.errors import EEGKitError

    for flag, value, low in (("--subjects", args.subjects, 1), ("--epochs", args.epochs, 0), ("--seed", args.seed, 0)):
        if value is not None and value < low:
            raise EEGKitError(f"{flag} {value}: must be >= {low}")
    if args.minutes is not None and not (args.minutes > 0 and args.minutes < float("inf")):
        raise EEGKitError(f"--minutes {args.minutes}: must be a positive finite number")
    args.out = args.out or f"runs/demo_{args.task.replace('-', '_')}"
    start = time.time()
    {"task2": task2, "speaker-extraction": speaker_extraction, "match-mismatch": match_mismatch}[args.task](args)
    print(f"\ndemo wall time: {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    from util.errors import run_cli

    run_cli(main)
