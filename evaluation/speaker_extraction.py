"""Evaluate EEG-guided speaker extraction: SI-SDR, SI-SDRi, PESQ (nb, 8 kHz), STOI.

A trained run is scored on a dataset split by `speaker_extraction.evaluate`, which uses the
functions here. File mode (wav files produced elsewhere, matched by file name):

    python -m evaluation.speaker_extraction --estimates EST_DIR --references REF_DIR --mixtures MIX_DIR \
        --out report.json [--plot report.png]

The report holds per-window scores, per-subject and overall mean/std for the
model ("overall") and for the unprocessed mixture ("mixture", the oracle-mixture
row: SI-SDRi 0 by definition), and the windows where PESQ or STOI could not be
computed, counted by reason (the run never crashes on them).

Attention decoding (``../shared/reference/aad.md``), when the competing talker is
known (`speaker_extraction.evaluate`; file mode with ``--interferers``):

- **speaker confusion**: a window is confused when SI-SDR(estimate, unattended)
  > SI-SDR(estimate, attended); ``confusion_rate`` is the fraction of confused
  windows (overall, per subject, and for the mixture: ~0.5 by construction);
- **extraction-derived AAD accuracy**: `decision_windows` cuts a whole-trial
  extraction into non-overlapping decision windows (1, 2, 5, 10, 20, 30, 60 s,
  those that fit), and `extraction_aad` scores them with `evaluation.aad`
  (accuracy = 1 - confusion rate, Clopper-Pearson CI, significance threshold,
  MESD), the two SI-SDRs being the decision statistics; so it sits beside the
  stimulus-reconstruction accuracy of ``python -m speaker_extraction.experiments.aad``.

Controls (`se_control_block`, keys shared with every scorer): noise EEG, shuffled (mismatched)
EEG and the unprocessed mixture, overall and per subject, with ``score_above_noise`` and
``warnings``; `speaker_extraction.evaluate` computes them (file mode has no model to rerun).

Library API: `evaluate_files(estimates, references, mixtures, interferers=None) -> report`,
`score_window(...)`, `summarise(rows)`, `build_report(rows, meta)`, `decision_windows(...)`,
`extraction_aad(rows)`, `plot_report(report, path)`, `write_and_print(report, out, plot)`.
"""
from __future__ import annotations
if not __package__:  # run by path (python evaluation/speaker_extraction.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
from collections import Counter
from pathlib import Path
from typing import Sequence


import numpy as np
from tqdm import tqdm

from evaluation.aad import DECISION_WINDOWS_S
from evaluation.speech_metrics import pesq_nb, si_sdr, stoi_score
from util.atomic import atomic_savefig, atomic_write_json
from util.errors import EEGKitError, run_cli
from util.features import load_audio

METRICS = ("si_sdr", "si_sdri", "pesq", "stoi")
PESQ_FS = 8000
AAD_WINDOWS_S = DECISION_WINDOWS_S


def score_window(estimate: np.ndarray, target: np.ndarray, mixture: np.ndarray, fs: int,
                 interferer: np.ndarray | None = None, where: str | None = None) -> dict:
    """Scores of one estimate and of the mixture itself against the target (1-D arrays, same length).

    With ``interferer`` (the unattended talker) the row also holds
    ``si_sdr_unattended`` and ``confused`` (SI-SDR to the unattended talker is higher).
    ``where`` (a file or window name) prefixes any error, e.g. a NaN in a model's estimate.
    """
    try:
        return _score_window(estimate, target, mixture, fs, interferer)
    except EEGKitError as error:
        if where is None:
            raise
        raise EEGKitError(f"{where}: {error}") from None


def _score_window(estimate, target, mixture, fs, interferer) -> dict:
    mixture_sdr = si_sdr(mixture, target)
    row = {"si_sdr": si_sdr(estimate, target), "mixture_si_sdr": mixture_sdr}
    row["si_sdri"] = row["si_sdr"] - mixture_sdr
    row["mixture_si_sdri"] = 0.0
    if interferer is not None:
        row["si_sdr_unattended"] = si_sdr(estimate, interferer)
        row["confused"] = bool(row["si_sdr_unattended"] > row["si_sdr"])
        row["mixture_si_sdr_unattended"] = si_sdr(mixture, interferer)
        row["mixture_confused"] = bool(row["mixture_si_sdr_unattended"] > mixture_sdr)
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
    confused = [bool(row[prefix + "confused"]) for row in rows if prefix + "confused" in row]
    if confused:  # speaker confusion: windows closer to the unattended talker
        summary["confusion_rate"] = float(np.mean(confused))
        summary["confused_windows"] = int(sum(confused))
    return summary


def decision_windows(estimate: np.ndarray, target: np.ndarray, interferer: np.ndarray, fs: int,
                     windows_s: Sequence[float] = AAD_WINDOWS_S) -> list[dict]:
    """Cut one whole-trial extraction (samples,) into non-overlapping decision windows.

    Returns one row per window and window length that fits in the trial:
    ``{"window_s", "start_s", "r_attended": SI-SDR(est, attended), "r_unattended": SI-SDR(est, unattended)}``
    (the two SI-SDRs are the decision statistics that ``evaluation.aad`` compares).
    """
    rows = []
    n = min(len(estimate), len(target), len(interferer))
    for window_s in windows_s:
        length = int(round(float(window_s) * fs))
        for start in range(0, n - length + 1, length) if length > 0 else ():
            part = slice(start, start + length)
            rows.append({"window_s": float(window_s), "start_s": start / fs,
                         "r_attended": si_sdr(estimate[part], target[part]),
                         "r_unattended": si_sdr(estimate[part], interferer[part])})
    return rows


def extraction_aad(rows: list[dict]) -> dict:
    """Extraction-derived AAD from decision-window rows (each with ``subject``): accuracy per window
    length per subject with its CI, significance threshold and MESD (``evaluation.aad``), plus the
    confusion rate (1 - accuracy) pooled over subjects."""
    from evaluation.aad import score_correlations

    scored = [{"subject": str(row["subject"]), "window": format(row["window_s"], "g"),
               "window_s": float(row["window_s"]), "r_attended": float(row["r_attended"]),
               "r_unattended": float(row["r_unattended"])} for row in rows]
    report = score_correlations(scored) if scored else {"subjects": {}, "mean_accuracy": {}}
    pooled: dict = {}
    for row in scored:
        pooled.setdefault(row["window"], []).append(row["r_unattended"] >= row["r_attended"])
    order = sorted(pooled, key=float)
    report["pooled"] = {window: {"n_windows": len(pooled[window]),
                                 "confusion_rate": float(np.mean(pooled[window])),
                                 "accuracy": 1.0 - float(np.mean(pooled[window]))} for window in order}
    return report


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


def se_control_block(rows: list[dict], noise_rows: list[dict] | None, mismatched_rows: list[dict] | None,
                     metric: str = "si_sdri") -> dict:
    """The controls block of a speaker-extraction report (same keys as every scorer; `evaluation.controls`).

    ``rows``: the model's per-window rows; ``noise_rows`` / ``mismatched_rows``: the same windows
    with noise EEG / another trial's EEG (``{"subject", "si_sdr", "si_sdri", ...}``), or None.
    Scores are mean SI-SDRi (dB). ``controls`` holds ``noise_eeg``, ``mismatched_eeg`` (the
    shuffled-EEG control), ``mixture`` (the unprocessed mixture: SI-SDRi 0 dB, with its SI-SDR) and
    ``circular_shift`` (None: a circularly shifted reference has no meaning for SI-SDR, and shifting
    the EEG instead needs one model pass per shift; the noise and shuffled EEG are the nulls here).
    Warning "the score contains an EEG-independent part" when the noise-EEG SI-SDRi is above the
    mixture's 0 dB by more than two standard errors over windows (the model improves the mixture
    without any EEG). Per subject and overall.
    """
    from evaluation.controls import EEG_INDEPENDENT_WARNING

    def mean(values):
        values = [float(v) for v in values if v is not None and np.isfinite(v)]
        return (float(np.mean(values)), float(np.std(values) / np.sqrt(len(values)))) if values else (None, None)

    def block(subset: list[dict], noise: list[dict] | None, mismatched: list[dict] | None) -> dict:
        score = mean([r.get(metric) for r in subset])[0]
        noise_score, noise_se = (None, None) if noise is None else mean([r.get(metric) for r in noise])
        mismatched_score = None if mismatched is None else mean([r.get(metric) for r in mismatched])[0]
        warnings = []
        if noise_score is not None and noise_se is not None and noise_score > 2 * noise_se and noise_score > 0:
            warnings.append(f"{EEG_INDEPENDENT_WARNING}: with noise EEG the model still improves the mixture by "
                            f"{noise_score:.2f} dB SI-SDRi (> 2 standard errors, {noise_se:.2f} dB)")
        return {"controls": {"noise_eeg": {"score": noise_score},
                             "circular_shift": None,
                             "mismatched_eeg": {"score": mismatched_score},
                             "mixture": {"score": 0.0, "si_sdr": mean([r.get("mixture_si_sdr") for r in subset])[0]}},
                "score": score,
                "score_above_noise": None if noise_score is None or score is None else score - noise_score,
                "warnings": warnings}

    def of(subject_rows, subject):
        return None if subject_rows is None else [r for r in subject_rows if str(r["subject"]) == subject]

    subjects = sorted({str(r["subject"]) for r in rows})
    out = block(rows, noise_rows, mismatched_rows)
    out["metric"] = metric
    out["circular_shift_note"] = ("not computed for speaker extraction: a shifted reference has no meaning for "
                                  "SI-SDR; the noise-EEG and shuffled-EEG controls are the nulls")
    out["per_subject_controls"] = {s: block(of(rows, s), of(noise_rows, s), of(mismatched_rows, s)) for s in subjects}
    return out


def format_se_controls(report: dict) -> str:
    """Printout lines of a report's speaker-extraction controls (overall and per subject)."""
    def v(x):
        return "n/a" if x is None else f"{x:.2f}"

    lines = []
    for name, b in [("overall", report)] + list(report.get("per_subject_controls", {}).items()):
        c = b["controls"]
        lines.append(f"controls {name}: SI-SDRi {v(b.get('score', report.get('overall', {}).get('si_sdri')))} dB | "
                     f"noise EEG {v(c['noise_eeg']['score'])} | shuffled (mismatched) EEG "
                     f"{v(c['mismatched_eeg']['score'])} | mixture {v(c['mixture']['score'])} "
                     f"(SI-SDR {v(c['mixture']['si_sdr'])}) | above noise {v(b['score_above_noise'])}")
        lines += [f"  WARNING: {w}" for w in b["warnings"]]
    return "\n".join(lines)


def _read_wav_folder(folder: str | Path, role: str) -> dict[str, tuple[int, np.ndarray]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise EEGKitError(f"{folder}: {role} folder not found")
    files = {}
    for path in sorted(folder.glob("*.wav")):
        # one signal per file: multi-channel wavs are refused, not mixed down; a silent estimate is a
        # (bad) result to score, a silent reference, mixture or interferer makes SI-SDR meaningless
        audio, fs = load_audio(path, np.float64, channels="mono", allow_silent=role == "estimates")  # (samples,)
        files[path.name] = (fs, audio)
    if not files:
        raise EEGKitError(f"{folder}: no .wav files in the {role} folder")
    return files


def evaluate_files(estimates: str | Path, references: str | Path, mixtures: str | Path,
                   interferers: str | Path | None = None, progress: bool = True) -> dict:
    """Score wav files matched by name across the folders (same rate and length per name).

    ``interferers`` (optional): the unattended talker of each file, for the speaker-confusion rate.
    """
    folders = [(estimates, "estimates"), (references, "references"), (mixtures, "mixtures")]
    if interferers is not None:
        folders.append((interferers, "interferers"))
    files = [_read_wav_folder(folder, role) for folder, role in folders]
    estimate_files = files[0]
    for (folder, role), other in zip(folders[1:], files[1:]):
        missing = sorted(set(estimate_files) - set(other))
        if missing:
            raise EEGKitError(f"{folder}: no {role[:-1]} for estimate(s) {', '.join(missing[:5])}"
                              f"{' ...' if len(missing) > 5 else ''}")
    extra = sorted(set().union(*(set(other) for other in files[1:])) - set(estimate_files))
    if extra:
        raise EEGKitError(f"{estimates}: no estimate for {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
    for name in sorted(estimate_files):  # check every file before scoring any
        rates = [other[name][0] for other in files]
        lengths = [len(other[name][1]) for other in files]
        roles = [role[:-1] for _, role in folders]
        if len(set(rates)) != 1:
            raise EEGKitError(f"{Path(estimates) / name}: sampling rates differ ("
                              + ", ".join(f"{r} {v}" for r, v in zip(roles, rates)) + " Hz)")
        if len(set(lengths)) != 1:
            raise EEGKitError(f"{Path(estimates) / name}: lengths differ ("
                              + ", ".join(f"{r} {v}" for r, v in zip(roles, lengths)) + " samples)")
    rows = []
    for name in tqdm(sorted(estimate_files), desc="score files", unit="file", disable=not progress):
        (fs, estimate), (_, reference), (_, mixture) = (other[name] for other in files[:3])
        row = {"subject": "files", "file": name}
        row.update(score_window(estimate, reference, mixture, fs,
                                interferer=files[3][name][1] if interferers is not None else None,
                                where=str(Path(estimates) / name)))
        rows.append(row)
    meta = {"mode": "files", "estimates": str(estimates), "references": str(references), "mixtures": str(mixtures),
            "interferers": None if interferers is None else str(interferers), "shuffle_eeg": False}
    return build_report(rows, meta)


def plot_report(report: dict, path: str | Path) -> Path:
    """Box plots of per-window SI-SDRi, PESQ and STOI per subject (model vs mixture)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["windows"]
    subjects = sorted({str(row["subject"]) for row in rows})
    panels = (("si_sdr", "SI-SDR (dB)"), ("si_sdri", "SI-SDRi (dB)"), ("pesq", "PESQ (nb)"), ("stoi", "STOI"))
    aad = report.get("extraction_aad", {}).get("subjects") or {}
    fig, axes = plt.subplots(1, len(panels) + bool(aad), figsize=(4.2 * (len(panels) + bool(aad)), 3.8))
    if aad:  # extraction-derived AAD accuracy against decision-window length, per subject
        axis = axes[-1]
        for subject, entry in sorted(aad.items()):
            windows = sorted(entry["accuracy"], key=float)
            axis.plot([float(w) for w in windows], [entry["accuracy"][w] for w in windows], marker="o",
                      label=f"{subject} (confusion {1 - entry['accuracy'][windows[0]]:.2f} at {windows[0]} s)")
        axis.axhline(0.5, color="k", lw=0.7, ls="--")
        axis.set_xscale("log")
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("decision window (s)")
        axis.set_ylabel("extraction-derived AAD accuracy")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
        axes = axes[:-1]
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
    title = f"{title}: {report['n_windows']} windows"
    controls = report.get("controls")
    if controls:  # the controls beside the score (evaluation.controls keys)
        def v(x):
            return "n/a" if x is None else f"{x:.2f}"

        title += (f"\nSI-SDRi {v(report.get('score'))} dB | noise EEG {v(controls['noise_eeg']['score'])} | "
                  f"shuffled EEG {v(controls['mismatched_eeg']['score'])} | mixture 0.00 | above noise "
                  f"{v(report.get('score_above_noise'))}")
        if report.get("warnings"):
            title += "\nWARNING: " + report["warnings"][0].split(":")[0]
    fig.suptitle(title, fontsize=9)
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
    if "confusion_rate" in overall:
        print(f"speaker confusion ({report.get('window_s', 'file')}-s windows): model {overall['confusion_rate']:.3f} "
              f"({overall['confused_windows']}/{report['n_windows']}), mixture {mixture['confusion_rate']:.3f}")
    if "controls" in report:
        print(format_se_controls(report))
    if report.get("extraction_aad", {}).get("pooled"):
        print("extraction-derived AAD accuracy (whole held-out trials): " + ", ".join(
            f"{w} s {v['accuracy']:.3f} (n={v['n_windows']})" for w, v in report["extraction_aad"]["pooled"].items()))


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--out``, ``--plot`` and ``--no-progress``, shared with `speaker_extraction.evaluate`."""
    parser.add_argument("--out", required=True, help="report JSON path (written atomically)")
    parser.add_argument("--plot", help="optional PNG of the per-subject score distributions")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out / --plot file")
    return parser


def check_report_outputs(args: argparse.Namespace, inputs: Sequence = ()) -> None:
    """The `util.outdir` rule for ``--out`` and ``--plot`` (before anything is read or written)."""
    from util.outdir import check_out_file, check_out_files

    check_out_file(args.out, "--out", overwrite=args.overwrite, inputs=inputs)  # required
    check_out_files([("--plot", args.plot or None)], args.overwrite, list(inputs) + [args.out])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score EEG-guided speaker extraction (SI-SDR, SI-SDRi, PESQ nb, STOI) on wav files matched by "
                    "name (to score a trained run on a dataset split: python -m speaker_extraction.evaluate).")
    parser.add_argument("--estimates", required=True, help="folder of estimate wavs")
    parser.add_argument("--references", required=True, help="folder of reference (target talker) wavs, same names")
    parser.add_argument("--mixtures", required=True, help="folder of mixture wavs, same names")
    parser.add_argument("--interferers", help="optional folder of the unattended talker's wavs, same names; adds "
                                              "the speaker-confusion rate")
    return add_report_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_report_outputs(args, [args.estimates, args.references, args.mixtures, args.interferers])
    report = evaluate_files(args.estimates, args.references, args.mixtures, args.interferers,
                            progress=not args.no_progress)
    write_and_print(report, args.out, args.plot)
    return 0


if __name__ == "__main__":
    run_cli(main)
