"""Task 2 loader benchmark: windows/s and peak RSS for a 1x and a 10x split_data set.

A 1x dataset of random data in the exact split_data format (eeg (T, 64)
float32, mel (T, 10), envelope (T, 1); 80/10/10 train/val/test parts) is
written, and the 10x one replicates its files under new subject names. Each
measurement runs in a fresh subprocess whose peak RSS (``ru_maxrss``) is
reported beside its RSS right after imports, so the figures are side by side
in one run. Loader rows: ``task2_regression.data.load_recordings`` (train split,
train-part statistics, NaN check) + ``util.windowing.FixedWindows`` (5-s windows,
1-s hop) through a shuffling ``DataLoader`` (batch 64). ``naive`` rows load every
array fully with ``np.load`` for contrast (what the lazy loader avoids).

Usage: ``python -m benchmarks.task2_data [--subjects 2 --stimuli 3 --minutes 8 --max-windows 6000]``
Target: peak-RSS growth from 1x to 10x below 100 MB for the lazy loader.
"""
from __future__ import annotations
if not __package__:  # run by path (python benchmarks/task2_data.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from util.errors import run_cli

SPLIT_FRACTIONS = (("train", 0.8), ("val", 0.1), ("test", 0.1))


def write_random_dataset(root: Path, subjects: int, stimuli: int, minutes: float, seed: int = 0) -> Path:
    """Random split_data folder (not a realistic signal: for loader speed/memory only)."""
    rng = np.random.default_rng(seed)
    split_dir = root / "derivatives" / "split_data"
    split_dir.mkdir(parents=True, exist_ok=True)
    total = int(minutes * 60 * 64)
    for s in range(subjects):
        for k in range(stimuli):
            stimulus = f"audiobook_{k + 1}_1"
            for split, fraction in SPLIT_FRACTIONS:
                n = int(total * fraction)
                arrays = {"eeg": rng.standard_normal((n, 64), dtype=np.float32),
                          "mel": rng.random((n, 10), dtype=np.float32),
                          "envelope": rng.random((n, 1), dtype=np.float32)}
                for feature, array in arrays.items():
                    np.save(split_dir / f"{split}_-_sub-{s + 1:03d}_-_{stimulus}_-_{feature}.npy", array)
    return split_dir


def replicate(split_dir: Path, out_root: Path, factor: int) -> Path:
    """Copy every file ``factor`` times under new subject names (sub-XXX -> sub-XXX-rK)."""
    out_dir = out_root / "derivatives" / "split_data"
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(split_dir.glob("*.npy")):
        split, subject, stimulus, feature = path.name[:-4].split("_-_")
        for copy in range(factor):
            shutil.copyfile(path, out_dir / f"{split}_-_{subject}r{copy}_-_{stimulus}_-_{feature}.npy")
    return out_dir


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def child(split_dir: Path, mode: str, max_windows: int, batch_size: int) -> dict:
    """Runs inside the fresh subprocess; returns the figures as a dict."""
    import torch
    from torch.utils.data import DataLoader

    from task2_regression.data import load_recordings
    from util.windowing import FixedWindows

    torch.manual_seed(0)
    rss_start = _maxrss_mb()
    data_mb = sum(p.stat().st_size for p in split_dir.glob("train_*.npy")) / 2 ** 20
    start = time.perf_counter()
    if mode == "naive":
        arrays = [np.load(p).astype(np.float32) for p in sorted(split_dir.glob("train_*.npy"))]
        load_s = time.perf_counter() - start
        return {"mode": mode, "train_mb": data_mb, "load_s": load_s, "windows": 0, "windows_per_s": float("nan"),
                "rss_start_mb": rss_start, "peak_rss_mb": _maxrss_mb(), "arrays": len(arrays)}
    recordings = load_recordings(split_dir, "train", features=("eeg", "mel", "envelope"))
    load_s = time.perf_counter() - start
    dataset = FixedWindows(recordings, window=320, hop=64, features=("eeg", "mel", "envelope"))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    n_windows = 0
    start = time.perf_counter()
    for batch in loader:
        n_windows += len(batch["eeg"])
        if n_windows >= max_windows:
            break
    elapsed = time.perf_counter() - start
    return {"mode": mode, "train_mb": data_mb, "load_s": load_s, "windows": n_windows,
            "windows_per_s": n_windows / elapsed, "dataset_windows": len(dataset),
            "rss_start_mb": rss_start, "peak_rss_mb": _maxrss_mb()}


def run_child(split_dir: Path, mode: str, max_windows: int, batch_size: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.task2_data", "--child", str(split_dir), "--mode", mode,
               "--max-windows", str(max_windows), "--batch-size", str(batch_size)]
    result = subprocess.run(command, capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=2, help="subjects in the 1x dataset (default 2)")
    parser.add_argument("--stimuli", type=int, default=3, help="stimuli per subject in the 1x dataset (default 3)")
    parser.add_argument("--minutes", type=float, default=8.0, help="minutes per recording, all splits (default 8)")
    parser.add_argument("--factor", type=int, default=10, help="size of the big dataset relative to 1x (default 10)")
    parser.add_argument("--max-windows", type=int, default=6000,
                        help="windows read per throughput measurement (default 6000)")
    parser.add_argument("--batch-size", type=int, default=64, help="DataLoader batch size (default 64)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive full-np.load contrast rows")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where to write the temporary datasets (default: a fresh temp folder, removed after)")
    parser.add_argument("--child", type=Path, default=None,
                        help="internal: measure one split_data folder in this process and print JSON")
    parser.add_argument("--mode", default="lazy", choices=("lazy", "naive"),
                        help="internal, with --child: lazy (kit loader) or naive (np.load everything)")
    args = parser.parse_args(argv)
    from util.inputs import check_number_flags

    check_number_flags(args, {
        "--subjects": (1, True, False),
        "--stimuli": (1, True, False),
        "--minutes": (0.0, False, True),
        "--factor": (1, True, False),
        "--max-windows": (1, True, False),
        "--batch-size": (1, True, False),
    })
    if args.child is not None:
        print(json.dumps(child(args.child, args.mode, args.max_windows, args.batch_size)))
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="task2_data_bench_", dir=args.workdir))
    try:
        small = write_random_dataset(workdir / "x1", args.subjects, args.stimuli, args.minutes)
        big = replicate(small, workdir / f"x{args.factor}", args.factor)
        rows = []
        modes = ("lazy",) if args.no_naive else ("lazy", "naive")
        for mode in modes:
            for label, split_dir in (("1x", small), (f"{args.factor}x", big)):
                row = run_child(split_dir, mode, args.max_windows, args.batch_size)
                row["size"] = label
                rows.append(row)
        print(f"{'mode':<6} {'size':<5} {'train MB':>9} {'load s':>7} {'windows':>8} {'windows/s':>10} "
              f"{'RSS start MB':>13} {'peak RSS MB':>12}")
        for row in rows:
            print(f"{row['mode']:<6} {row['size']:<5} {row['train_mb']:9.1f} {row['load_s']:7.2f} {row['windows']:8d} "
                  f"{row['windows_per_s']:10.0f} {row['rss_start_mb']:13.1f} {row['peak_rss_mb']:12.1f}")
        for mode in modes:
            sizes = [r for r in rows if r["mode"] == mode]
            growth = sizes[1]["peak_rss_mb"] - sizes[0]["peak_rss_mb"]
            note = " (target < 100 MB)" if mode == "lazy" else ""
            print(f"{mode}: peak-RSS growth 1x -> {args.factor}x = {growth:.1f} MB{note}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
