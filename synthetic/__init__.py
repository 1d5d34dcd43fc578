"""Synthetic datasets in the real on-disk formats (espeak-ng speech, simulated EEG), and their command line.

    python -m synthetic task2 --out DIR [--subjects 8] [--minutes 8] [--seed 0] ...
    python -m synthetic kul   --out DIR [--subjects 2] [--trials 8] [--minutes 1] [--seed 0]

``task2`` runs ``synthetic.task2.generate`` (ICASSP 2024 Task 2 layout:
derivatives/split_data, stimuli/eeg, test_set with held-out labels, and the Task 1
match-mismatch test set of the same test subjects, ``synthetic.task1_test_set``); ``kul`` runs
``synthetic.kul.generate`` (KU Leuven AAD layout: S*.mat + stimuli/*.wav),
imported only when asked for. Modules: ``speech`` (espeak-ng TTS), ``eeg_forward`` (the EEG
forward model), ``task2``, ``task1_test_set``, ``kul``. This package sits above the tasks: it may use them, they never use it.
"""
from __future__ import annotations

import argparse

from util.errors import run_cli  # noqa: F401  (tests call synthetic.run_cli(synthetic.main, ...))
from util.config import seed_arg


def build_parser() -> argparse.ArgumentParser:
    from synthetic import task2 as synthetic_task2

    parser = argparse.ArgumentParser(prog="python -m synthetic", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="{task2,kul}")
    task2 = sub.add_parser("task2", help="synthetic ICASSP 2024 Task 2 dataset (mel reconstruction)",
                           description=synthetic_task2.__doc__.split("\n\n")[0])
    synthetic_task2.add_arguments(task2)
    task2.add_argument("--overwrite", action="store_true", help="allow a non-empty --out (its files are replaced)")
    kul = sub.add_parser("kul", help="synthetic KU Leuven auditory-attention dataset (speaker extraction)")
    kul.add_argument("--out", required=True, help="output dataset folder (created; must be new or empty unless --overwrite)")
    kul.add_argument("--overwrite", action="store_true", help="allow a non-empty --out (its files are replaced)")
    kul.add_argument("--subjects", type=int, default=2, help="number of subjects S1..Sn (default 2)")
    kul.add_argument("--trials", type=int, default=8, help="trials per subject (default 8)")
    kul.add_argument("--minutes", type=float, default=1.0, help="minutes per trial (default 1)")
    kul.add_argument("--seed", type=seed_arg, default=0, help="random seed; the same seed gives identical files")
    kul.add_argument("--no-progress", action="store_true", help="hide the tqdm progress bar")
    return parser


def check_flags(args: argparse.Namespace) -> None:
    """Refuse NaN/Inf, negative seeds and counts or durations out of range, naming the flag (nothing written)."""
    from pathlib import Path

    from util.errors import EEGKitError
    from util.inputs import finite_number

    finite_number(args.seed, "--seed", minimum=0, integer=True)
    finite_number(args.subjects, "--subjects", minimum=1, integer=True)
    if args.dataset == "task2":
        finite_number(args.minutes, "--minutes", minimum=0.5)
        finite_number(args.test_subjects, "--test-subjects", minimum=1, integer=True)
        if args.test_minutes is not None:
            finite_number(args.test_minutes, "--test-minutes", minimum=0.5)
        finite_number(args.snr_db, "--snr-db")
    else:
        finite_number(args.trials, "--trials", minimum=1, integer=True)
        finite_number(args.minutes, "--minutes", minimum=0.0, strict_minimum=True)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise EEGKitError(f"--out {out}: exists and is not a folder")


# what each generator writes at the top of --out (and the caches the kit adds there later): with
# --overwrite, a folder holding anything else is refused; the new dataset replaces the old folder whole
OWN = {"task2": ("derivatives", "stimuli", "test_set", "synthetic_task2.json"),
       "kul": ("S*.mat", "stimuli", ".eegkit_cache")}


def main(argv=None) -> int:
    from util.outdir import check_out_dir, staged_dir

    args = build_parser().parse_args(argv)
    check_flags(args)
    check_out_dir(args.out, overwrite=args.overwrite, own=OWN[args.dataset])
    out = args.out
    with staged_dir(out, "--out", overwrite=args.overwrite) as tmp:  # locked; replaces --out whole at the end
        args.out = str(tmp)
        if args.dataset == "task2":
            from synthetic import task2 as synthetic_task2

            synthetic_task2.main_args(args, shown=out)
        else:
            from synthetic import kul as synthetic_kul  # lazy: only needed for this dataset

            synthetic_kul.generate(tmp, subjects=args.subjects, trials=args.trials, minutes=args.minutes,
                                   seed=args.seed, progress=not args.no_progress)
            print(f"wrote {out}: {args.subjects} subjects x {args.trials} trials of {args.minutes:g} min")
    return 0

