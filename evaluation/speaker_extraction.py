"""Evaluate EEG-guided speaker extraction: SI-SDR, SI-SDRi, PESQ (nb, 8 kHz), STOI.

A trained run is scored on a dataset split by `speaker_extraction.evaluate`, which uses the
functions here. File mode (wav files produced elsewhere, matched by file name):

    python -m evaluation.speaker_extraction --estimates EST_DIR --references REF_DIR --mixtures MIX_DIR \
        --out report.json [--plot report.png]

The report holds per-window scores, per-subject and overall mean/std for the
model ("overall") and for the unprocessed mixture ("mixture", the oracle-mixture
row: SI-SDRi 0 by definition), and the windows where PESQ or STOI could not be
computed, counted by reason (the run never crashes on them).

Library API: `evaluate_files(estimates, references, mixtures) -> report`, `score_window(...)`,
`summarise(rows)`, `build_report(rows, meta)`, `plot_report(report, path)`, `write_and_print(report, out, plot)`.
"""
from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path
from typing import Sequence


import numpy as np
from tqdm import tqdm

from evaluation.speech_metrics import pesq_nb, si_sdr, stoi_score
from util.atomic import atomic_savefig, atomic_write_json
from util.errors import EEGKitError, run_cli
from util.features import load_audio

METRICS = ("si_sdr", "si_sdri", "pesq", "stoi")
PESQ_FS = 8000


def score_window(estimate: np.ndarray, target: np.ndarray, mixture: np.ndarray, fs: int) -> dict:
    """Scores of one estimate and of the mixture itself against the target (1-D arrays, same length)."""
    mixture_sdr = si_sdr(mixture, target)
    row = {"si_sdr": si_sdr(estimate, target), "mixture_si_sdr": mixture_sdr}
    row["si_sdri"] = row["si_sdr"] - mixture_sdr
    row["mixture_si_sdri"] = 0.0
    pesq_target, pesq_estimate, pesq_mixture, pesq_fs = target, estimate, mixture, fs
    if fs not in (8000, 16000):
        from math import gcd

        from scipy.signal import resample_poly

        divisor = gcd(fs, PESQ_FS)
        pesq_target, pesq_estimate, pesq_mixture = (resample_poly(x, PESQ_FS // divisor, fs // divisor)
                                                    for x in (target, estimate, mixture))
        pesq_fs = PESQ_FS
    for prefix, signal, pesq_signal in (("", estimate, pesq_estimate), ("mixture_", mixture, pesq_mixture)):
        row[prefix + "pesq"], row[prefix + "pesq_reason"] = pesq_nb(pesq_target, pesq_signal, pesq_fs)
        row[prefix + "stoi"], row[prefix + "stoi_reason"] = stoi_score(target, signal, fs)
    return row


def _stats(values: list) -> dict:
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "n": len(finite)}


def summarise(rows: list[dict], prefix: str = "") -> dict:
    """``{metric: mean, metric_std: std, metric_n: count, n_windows}`` over rows (None scores skipped)."""
    summary: dict = {"n_windows": len(rows)}
    for metric in METRICS:
        stats = _stats([row.get(prefix + metric) for row in rows])
        summary[metric], summary[metric + "_std"], summary[metric + "_n"] = stats["mean"], stats["std"], stats["n"]
    return summary


def _failures(rows: list[dict], key: str) -> dict:
    reasons = Counter(row[key] for row in rows if row.get(key))
    return {"count": int(sum(reasons.values())), "reasons": dict(reasons)}


def build_report(rows: list[dict], meta: dict) -> dict:
    """Assemble the JSON report from per-window rows (each with a ``subject`` key)."""
    subjects = sorted({row["subject"] for row in rows}, key=lambda s: (str(type(s)), s))
    per_subject = {}
    for subject in subjects:
        subject_rows = [row for row in rows if row["subject"] == subject]
        per_subject[str(subject)] = {"model": summarise(subject_rows), "mixture": summarise(subject_rows, "mixture_")}
    return {
        **meta,
        "n_windows": len(rows),
        "overall": summarise(rows),
        "mixture": summarise(rows, "mixture_"),
        "per_subject": per_subject,
        "failures": {
            "pesq": {"model": _failures(rows, "pesq_reason"), "mixture": _failures(rows, "mixture_pesq_reason")},
            "stoi": {"model": _failures(rows, "stoi_reason"), "mixture": _failures(rows, "mixture_stoi_reason")},
        },
        "windows": rows,
    }


def _read_wav_folder(folder: str | Path, role: str) -> dict[str, tuple[int, np.ndarray]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EEGKitError(f"{folder}: {role} folder not found")
    files = {}
    for path in sorted(folder.glob("*.wav")):
        audio, fs = load_audio(path, np.float64)  # (samples,) mono
        files[path.name] = (fs, audio)
    if not files:
        raise EEGKitError(f"{folder}: no .wav files in the {role} folder")
    return files


def evaluate_files(estimates: str | Path, references: str | Path, mixtures: str | Path,
                   progress: bool = True) -> dict:
    """Score wav files matched by name across three folders (same rate and length per name)."""
    estimate_files = _read_wav_folder(estimates, "estimates")
    reference_files = _read_wav_folder(references, "references")
    mixture_files = _read_wav_folder(mixtures, "mixtures")
    for folder, files, role in ((references, reference_files, "reference"), (mixtures, mixture_files, "mixture")):
        missing = sorted(set(estimate_files) - set(files))
        if missing:
            raise EEGKitError(f"{folder}: no {role} for estimate(s) {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}")
    extra = sorted((set(reference_files) | set(mixture_files)) - set(estimate_files))
    if extra:
        raise EEGKitError(f"{estimates}: no estimate for {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    for name in sorted(estimate_files):  # check every file before scoring any
        (fs_est, estimate), (fs_ref, reference), (fs_mix, mixture) = (
            estimate_files[name], reference_files[name], mixture_files[name])
        if not fs_est == fs_ref == fs_mix:
            raise EEGKitError(f"{Path(estimates) / name}: sampling rates differ (estimate {fs_est}, "
                              f"reference {fs_ref}, mixture {fs_mix} Hz)")
        if not len(estimate) == len(reference) == len(mixture):
            raise EEGKitError(f"{Path(estimates) / name}: lengths differ (estimate {len(estimate)}, "
                              f"reference {len(reference)}, mixture {len(mixture)} samples)")
    rows = []
    for name in tqdm(sorted(estimate_files), desc="score files", unit="file", disable=not progress):
        (fs, estimate), (_, reference), (_, mixture) = estimate_files[name], reference_files[name], mixture_files[name]
        row = {"subject": "files", "file": name}
        row.update(score_window(estimate, reference, mixture, fs))
        rows.append(row)
    meta = {"mode": "files", "estimates": str(estimates), "references": str(references), "mixtures": str(mixtures),
            "shuffle_eeg": False}
    return build_report(rows, meta)


def plot_report(report: dict, path: str | Path) -> Path:
    """Box plots of per-window SI-SDRi, PESQ and STOI per subject (model vs mixture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["windows"]
    subjects = sorted({str(row["subject"]) for row in rows})
    panels = (("si_sdr", "SI-SDR (dB)"), ("si_sdri", "SI-SDRi (dB)"), ("pesq", "PESQ (nb)"), ("stoi", "STOI"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    for axis, (metric, label) in zip(axes, panels):
        data, positions, colors = [], [], []
        for k, subject in enumerate(subjects):
            for offset, prefix, color in ((-0.18, "", "tab:blue"), (0.18, "mixture_", "tab:gray")):
                values = [row[prefix + metric] for row in rows
                          if str(row["subject"]) == subject and row.get(prefix + metric) is not None]
                if values:
                    data.append(values)
                    positions.append(k + offset)
                    colors.append(color)
        if data:
            boxes = axis.boxplot(data, positions=positions, widths=0.3, patch_artist=True, showfliers=True)
            for patch, color in zip(boxes["boxes"], colors):
                patch.set_facecolor(color)
                patch.set_alpha(0.6)
        axis.set_xticks(range(len(subjects)))
        axis.set_xticklabels([s if s.startswith(("S", "f")) else f"S{s}" for s in subjects], rotation=45)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, axis="y")
    axes[0].plot([], [], color="tab:blue", lw=6, alpha=0.6, label="model")
    axes[0].plot([], [], color="tab:gray", lw=6, alpha=0.6, label="mixture")
    axes[0].legend(fontsize=8)
    title = "speaker extraction per subject" + (" (shuffled EEG)" if report.get("shuffle_eeg") else "")
    fig.suptitle(f"{title}: {report['n_windows']} windows")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_and_print(report: dict, out: str | Path, plot: str | Path | None = None) -> None:
    """Write the report JSON (and the optional plot) atomically and print the one-line summary."""
    if plot:
        plot_report(report, plot)
    atomic_write_json(out, report, indent=1)
    overall, mixture = report["overall"], report["mixture"]

    def fmt(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}"

    print(f"{report['n_windows']} windows: SI-SDR {fmt(overall['si_sdr'], 2)} dB, SI-SDRi {fmt(overall['si_sdri'], 2)} dB, "
          f"PESQ {fmt(overall['pesq'], 3)}, STOI {fmt(overall['stoi'], 3)} | mixture SI-SDR {fmt(mixture['si_sdr'], 2)} dB, "
          f"PESQ {fmt(mixture['pesq'], 3)}, STOI {fmt(mixture['stoi'], 3)}; PESQ failures "
          f"{report['failures']['pesq']['model']['count']}")


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--out``, ``--plot`` and ``--no-progress``, shared with `speaker_extraction.evaluate`."""
    parser.add_argument("--out", required=True, help="report JSON path (written atomically)")
    parser.add_argument("--plot", help="optional PNG of the per-subject score distributions")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score EEG-guided speaker extraction (SI-SDR, SI-SDRi, PESQ nb, STOI) on wav files matched by "
                    "name (to score a trained run on a dataset split: python -m speaker_extraction.evaluate).")
    parser.add_argument("--estimates", required=True, help="folder of estimate wavs")
    parser.add_argument("--references", required=True, help="folder of reference (target talker) wavs, same names")
    parser.add_argument("--mixtures", required=True, help="folder of mixture wavs, same names")
    return add_report_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = evaluate_files(args.estimates, args.references, args.mixtures, progress=not args.no_progress)
    write_and_print(report, args.out, args.plot)
    return 0


if __name__ == "__main__":
    run_cli(main)
