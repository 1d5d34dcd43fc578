"""bf16 vs fp32 training on the synthetic Task 2 data: best validation Pearson over 3 seeds each.

Generates a small synthetic SparrKULee-format dataset (synthetic.task2.generate) in --work, then
trains the run config --config (default cat_wavenet_small; targets without stimulus audio are
dropped by the trainer, as in every run) with ``train.precision`` fp32 and bf16 for each seed, through
the one training engine (task2_regression.train.train -> util.trainer.fit), and prints per run the best
validation Pearson (the validation split only) and the wall time, then per precision the mean, the
seed-to-seed standard deviation and range, and whether the bf16 mean lies within the fp32 seed range.

    python -m benchmarks.bf16_validation --out results/task2/bf16_validation.txt
"""
from __future__ import annotations
if not __package__:  # run by path (python benchmarks/bf16_validation.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="cat_wavenet_small", help="run config name in task2_regression/configs")
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "bf16_validation",
                        help="working folder (dataset + runs); reused when the dataset is already there")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed values")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run")
    parser.add_argument("--subjects", type=int, default=4, help="synthetic training subjects")
    parser.add_argument("--minutes", type=float, default=2.0, help="minutes of EEG per subject")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this text file")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out file and leftover run folders of an earlier --work run")
    args = parser.parse_args(argv)

    import torch

    from synthetic.task2 import generate
    from task2_regression.train import train
    from util.config import load_config
    from util.errors import EEGKitError
    from util.outdir import check_out_dir, check_out_files

    config_path = REPO / "task2_regression" / "configs" / f"{args.config}.yaml"
    if not config_path.is_file():
        raise EEGKitError(f"--config: no {config_path}")
    data = args.work / "data"
    # every output is checked before anything is generated or trained (nothing written on a refusal)
    check_out_files([("--out", args.out)], args.overwrite, inputs=[config_path])
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):
            out = args.work / f"{precision}_seed{seed}"
            if out.exists() and not args.overwrite:
                raise EEGKitError(f"--work {args.work}: holds the run {out.name} of an earlier run; pass --overwrite "
                                  f"to replace it or use a fresh --work folder")
            check_out_dir(out, "--work", overwrite=args.overwrite, resumable=True, inputs=[data])
    torch.set_num_threads(args.threads)
    if not (data / "derivatives").is_dir():
        from util.outdir import staged_dir

        check_out_dir(data, "--work", overwrite=args.overwrite, own=("derivatives", "stimuli", "test_set",
                                                                      "synthetic_task2.json"))
        with staged_dir(data, "--work") as tmp:  # whole or nothing: a failed generation leaves no partial dataset
            generate(tmp, subjects=args.subjects, minutes=args.minutes, seed=0, test_subjects=1, snr_db=-10,
                     progress=False)
    rows = []
    for seed in args.seeds:
        for precision in ("fp32", "bf16"):
            cfg = load_config(config_path, [f"train.precision={precision}", f"train.seed={seed}"])
            out = args.work / f"{precision}_seed{seed}"
            start = time.perf_counter()
            result = train(cfg, data, out, epochs=args.epochs, say=lambda message: None, overwrite=args.overwrite)
            rows.append((precision, seed, float(result["best_val"]), time.perf_counter() - start))
    lines = [f"command: python -m benchmarks.bf16_validation --config {args.config} --epochs {args.epochs} "
             f"--seeds {' '.join(map(str, args.seeds))} --subjects {args.subjects} --minutes {args.minutes:g} "
             f"--threads {args.threads}",
             "synthetic Task 2 data (snr -10 dB); best validation Pearson (validation split only)",
             f"{'precision':10s} {'seed':>4s} {'best val r':>10s} {'wall s':>7s}"]
    lines += [f"{p:10s} {s:>4d} {v:>10.4f} {t:>7.1f}" for p, s, v, t in rows]
    stats = {}
    for precision in ("fp32", "bf16"):
        values = [v for p, _, v, _ in rows if p == precision]
        stats[precision] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0,
                            min(values), max(values), statistics.mean(t for p, _, _, t in rows if p == precision))
        mean, std, low, high, wall = stats[precision]
        lines.append(f"{precision}: mean {mean:.4f}, seed std {std:.4f}, range {low:.4f}-{high:.4f}, "
                     f"mean wall {wall:.1f} s")
    inside = stats["fp32"][2] <= stats["bf16"][0] <= stats["fp32"][3]
    lines.append(f"bf16 - fp32 mean: {stats['bf16'][0] - stats['fp32'][0]:+.4f}; bf16 mean "
                 f"{'inside' if inside else 'outside'} the fp32 seed range")
    print("\n".join(lines))
    if args.out is not None:
        from util.atomic import atomic_write_text

        atomic_write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    from util.errors import run_cli

    run_cli(main)
