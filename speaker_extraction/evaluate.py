"""Score a trained speaker-extraction run on a split of a KUL-format dataset (SI-SDR, SI-SDRi, PESQ, STOI).

    python -m speaker_extraction.evaluate --run RUN --data DIR [--split test] --out report.json \
        [--plot report.png] [--shuffle-eeg] [--no-costly-controls]

The windows and the split rule are those stored in the run's checkpoint config. Every window is
scored with `evaluation.speaker_extraction.score_window` (model and unprocessed mixture), and the
report is `evaluation.speaker_extraction.build_report`'s. ``--shuffle-eeg`` is the shuffled-EEG
control: every window gets the EEG of a window from another trial (same subject where possible,
seeded).

Controls (on by default; `--no-costly-controls` drops the two extra passes): the same windows with
noise EEG (`evaluation.controls.noise_eeg`, each window's per-channel mean and std; the trial is
z-scored per channel) and with shuffled EEG (another trial's), beside the unprocessed mixture;
report keys ``controls``, ``score`` (SI-SDRi), ``score_above_noise``, ``warnings`` and
``per_subject_controls``, as in every scorer.

Attention decoding: every window also gets its speaker-confusion flag (closer to the unattended
talker), and each whole held-out trial is extracted (overlap-add, as ``predict.py``) and cut into
decision windows of ``--aad-windows`` seconds (default 1, 2, 5, 10, 20, 30, 60; those that fit in a
trial) for the extraction-derived AAD accuracy (report key ``extraction_aad``; ``--no-aad`` skips it).

Library API: `evaluate_run(run, data_dir, split, shuffle_eeg, ...) -> report`, `trial_aad(...)`,
`shuffled_sources(keys, n, seed)`.
"""
from __future__ import annotations
if not __package__:  # run by path (python speaker_extraction/evaluate.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from evaluation.aad import parse_windows
from evaluation.controls import noise_eeg
from evaluation.speaker_extraction import (AAD_WINDOWS_S, add_report_arguments, build_report, check_report_outputs,
                                           decision_windows, extraction_aad, score_window, se_control_block,
                                           write_and_print)
from util.errors import EEGKitError, run_cli
from util.config import seed_arg


def shuffled_sources(keys: list[tuple], n_windows: int | None = None, seed: int = 0) -> list[int]:
    """For each of the first ``n_windows`` windows, the index (into ``keys``) of a window from another trial.

    ``keys`` are the (subject, trial) of every window of the split; a window from
    another trial of the same subject is preferred, else any other trial (seeded).
    """
    rng = np.random.default_rng(seed)
    keys = [tuple(k) for k in keys]
    n_windows = len(keys) if n_windows is None else n_windows
    sources = []
    for subject, trial in keys[:n_windows]:
        same_subject = [j for j, (s, t) in enumerate(keys) if s == subject and t != trial]
        other = same_subject or [j for j, (s, t) in enumerate(keys) if (s, t) != (subject, trial)]
        if not other:
            raise EEGKitError(f"--shuffle-eeg: the split has only one trial (S{subject} trial {trial}); "
                              f"no other trial's EEG to use")
        sources.append(int(other[rng.integers(len(other))]))
    return sources


def evaluate_run(run: str | Path, data_dir: str | Path, split: str = "test", shuffle_eeg: bool = False,
                 batch_size: int = 8, max_windows: int = 0, seed: int = 0, progress: bool = True,
                 device: str = "cpu", threads: int | None = None,
                 aad_windows: Sequence[float] | None = AAD_WINDOWS_S, costly_controls: bool = True) -> dict:
    """Run the model of RUN on the split's windows and score every window (see module docstring).

    ``costly_controls``: also run the model on noise EEG and on shuffled EEG (two more passes) for
    the controls block (`evaluation.speaker_extraction.se_control_block`); the mixture is always there.

    ``aad_windows``: decision-window lengths (s) of the extraction-derived AAD on whole trials
    (report key ``extraction_aad``); empty or None skips it.
    """
    import torch

    from speaker_extraction.data import build_datasets
    from speaker_extraction.predict import load_run, resolve_checkpoint

    checkpoint = resolve_checkpoint(run)
    model, config = load_run(checkpoint, device=device)  # the checkpoint's resolved config, nothing re-defaulted
    if threads is None:
        threads = int(config["train"].get("threads", 0))  # the run's own setting
    if threads > 0:
        torch.set_num_threads(threads)
    if not Path(data_dir).is_dir():
        raise EEGKitError(f"{data_dir}: dataset folder not found")
    corpus, datasets = build_datasets(data_dir, config["data"], progress=progress)
    if split not in datasets:
        raise EEGKitError(f"{data_dir}: unknown split {split!r} (train, val, test)")
    dataset = datasets[split]
    n_windows = len(dataset) if max_windows <= 0 else min(len(dataset), max_windows)
    if n_windows == 0:
        raise EEGKitError(f"{data_dir}: the {split} split has no windows")
    keys = [dataset.records[record_index].key for record_index, _ in dataset.index]  # every window of the split
    sources = shuffled_sources(keys, n_windows, seed) if shuffle_eeg else list(range(n_windows))
    noise_rows = mismatched_rows = None
    if costly_controls:
        noise_rng = np.random.default_rng([seed, 1])
        noise_rows = control_rows(model, dataset, n_windows, batch_size, device, progress, "noise EEG control",
                                  lambda i: noise_eeg(dataset[i]["eeg"].numpy(), noise_rng))
        if not shuffle_eeg:
            control_sources = shuffled_sources(keys, n_windows, seed)
            mismatched_rows = control_rows(model, dataset, n_windows, batch_size, device, progress,
                                           "shuffled EEG control",
                                           lambda i: dataset[control_sources[i]]["eeg"].numpy())
    rows = []
    for begin in tqdm(range(0, n_windows, batch_size), desc=f"evaluate {split}", unit="batch", disable=not progress):
        indices = list(range(begin, min(begin + batch_size, n_windows)))
        items = [dataset[i] for i in indices]
        mixture = torch.stack([item["mixture"] for item in items])  # (batch, samples)
        eeg = torch.stack([dataset[sources[i]]["eeg"] if shuffle_eeg else items[k]["eeg"]
                           for k, i in enumerate(indices)])  # (batch, time, C)
        with torch.no_grad():
            estimate = model(mixture.to(device), eeg.to(device)).cpu().numpy().astype(np.float64)  # (batch, samples)
        for k, item in enumerate(items):
            row = {"subject": int(item["subject"]), "trial": int(item["trial"]), "window": int(item["window"])}
            if shuffle_eeg:
                row["eeg_from"] = list(keys[sources[indices[k]]])
            row.update(score_window(estimate[k], item["target"].numpy().astype(np.float64),
                                    item["mixture"].numpy().astype(np.float64), corpus.fs_audio,
                                    interferer=item["interferer"].numpy().astype(np.float64),
                                    where=f"{checkpoint}: estimate of S{row['subject']} trial {row['trial']} window {row['window']}"))
            rows.append(row)
    meta = {"mode": "model", "run": str(run), "checkpoint": str(checkpoint), "data": str(data_dir), "split": split,
            "shuffle_eeg": bool(shuffle_eeg), "fs": corpus.fs_audio, "window_s": float(config["data"]["window_s"])}
    report = build_report(rows, meta)
    report.update(se_control_block(rows, noise_rows, rows if shuffle_eeg and costly_controls else mismatched_rows))
    report["costly_controls"] = bool(costly_controls)
    if aad_windows:
        trial_keys = sorted({tuple(key) for key in keys})
        report["extraction_aad"] = trial_aad(model, config, corpus, trial_keys, aad_windows, shuffle_eeg, seed,
                                             device, progress)
    return report


def control_rows(model, dataset, n_windows: int, batch_size: int, device: str, progress: bool, desc: str,
                 eeg_of) -> list[dict]:
    """SI-SDR / SI-SDRi rows of the first ``n_windows`` windows with the EEG of ``eeg_of(i)`` (time, C)
    in place of each window's own (a control; no PESQ/STOI, which are slow and not needed here)."""
    import torch

    from evaluation.speech_metrics import si_sdr

    rows = []
    for begin in tqdm(range(0, n_windows, batch_size), desc=desc, unit="batch", disable=not progress):
        indices = list(range(begin, min(begin + batch_size, n_windows)))
        items = [dataset[i] for i in indices]
        mixture = torch.stack([item["mixture"] for item in items])  # (batch, samples)
        eeg = torch.stack([torch.as_tensor(np.asarray(eeg_of(i), dtype=np.float32)) for i in indices])  # (batch, time, C)
        with torch.no_grad():
            estimate = model(mixture.to(device), eeg.to(device)).cpu().numpy().astype(np.float64)  # (batch, samples)
        for k, item in enumerate(items):
            target = item["target"].numpy().astype(np.float64)
            value = si_sdr(estimate[k], target)
            rows.append({"subject": int(item["subject"]), "trial": int(item["trial"]), "window": int(item["window"]),
                         "si_sdr": value,
                         "si_sdri": value - si_sdr(item["mixture"].numpy().astype(np.float64), target)})
    return rows


def trial_aad(model, config: dict, corpus, trial_keys: list[tuple], windows_s: Sequence[float],
              shuffle_eeg: bool = False, seed: int = 0, device: str = "cpu", progress: bool = True) -> dict:
    """Extraction-derived AAD on whole trials: extract each trial (overlap-add over training-length
    windows), cut decision windows, score with `extraction_aad`. With ``shuffle_eeg`` every trial gets
    the EEG of another trial (same subject where possible; cut or edge-padded to length)."""
    from speaker_extraction.predict import extract_long

    sources = shuffled_sources(trial_keys, seed=seed) if shuffle_eeg else list(range(len(trial_keys)))
    rows = []
    for k, (subject, trial) in enumerate(tqdm(trial_keys, desc="extract trials", unit="trial", disable=not progress)):
        arrays = corpus.trial_arrays(subject, trial)
        eeg = arrays["eeg"] if not shuffle_eeg else corpus.eeg(corpus.record(*trial_keys[sources[k]]))
        n_eeg = arrays["eeg"].shape[0]
        if eeg.shape[0] < n_eeg:  # another trial's EEG, edge-padded to this trial's length
            eeg = np.concatenate([eeg, np.repeat(eeg[-1:], n_eeg - eeg.shape[0], axis=0)])
        estimate = extract_long(model, arrays["mixture"], np.ascontiguousarray(eeg[:n_eeg]), config,
                                device=device).astype(np.float64)  # (samples,)
        for row in decision_windows(estimate, arrays["target"].astype(np.float64),
                                    arrays["interferer"].astype(np.float64), corpus.fs_audio, windows_s):
            rows.append({"subject": f"S{subject}", "trial": int(trial), **row})
    skipped = [w for w in windows_s if not any(row["window_s"] == float(w) for row in rows)]
    report = extraction_aad(rows)
    report.update(windows=rows, windows_s=[float(w) for w in windows_s],
                  skipped_windows_s=[float(w) for w in skipped])
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Score a trained EEG-guided speaker extractor (SI-SDR, SI-SDRi, PESQ nb, STOI) on a dataset split "
                    "(wav files produced elsewhere: python -m evaluation.speaker_extraction).")
    parser.add_argument("--run", required=True, help="training run folder (best.pt, else last.pt) or checkpoint")
    parser.add_argument("--data", required=True, help="KUL-format dataset folder")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"],
                        help="which split's windows to score (default test)")
    parser.add_argument("--shuffle-eeg", action="store_true",
                        help="shuffled-EEG control: each window gets EEG from another trial")
    parser.add_argument("--max-windows", type=int, default=0, help="score only the first N windows (0 = all)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the EEG shuffle (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: the run's train.threads, else torch's)")
    parser.add_argument("--aad-windows", default=",".join(format(w, "g") for w in AAD_WINDOWS_S),
                        help="decision-window lengths in s for the extraction-derived AAD accuracy on whole trials "
                             "(default %(default)s; windows longer than a trial are skipped)")
    parser.add_argument("--no-costly-controls", action="store_true",
                        help="leave out the noise-EEG and shuffled-EEG control passes (two extra model passes over "
                             "the windows); the mixture stays")
    parser.add_argument("--no-aad", action="store_true",
                        help="skip the whole-trial extraction-derived AAD (speaker confusion per window is still "
                             "reported)")
    return add_report_arguments(parser)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for flag, value, low in (("--batch-size", args.batch_size, 1), ("--max-windows", args.max_windows, 0),
                             ("--seed", args.seed, 0), ("--threads", args.threads, 0)):
        if value is not None and value < low:
            raise EEGKitError(f"{flag} {value}: must be >= {low}")
    check_report_outputs(args, [args.run, args.data])
    from util.distributed import check_device

    check_device(args.device)
    aad_windows = () if args.no_aad else parse_windows(args.aad_windows, "--aad-windows")
    report = evaluate_run(args.run, args.data, args.split, args.shuffle_eeg, args.batch_size, args.max_windows,
                          args.seed, progress=not args.no_progress, device=args.device, threads=args.threads,
                          aad_windows=aad_windows, costly_controls=not args.no_costly_controls)
    write_and_print(report, args.out, args.plot)
    return 0


if __name__ == "__main__":
    run_cli(main)
