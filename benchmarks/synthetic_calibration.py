"""Difficulty calibration of the synthetic Task 2 data with a closed-form ridge backward model.

For each requested SNR this generates a synthetic Task 2 dataset (or uses ``--data``),
fits a linear backward model mel(t) ~ sum_{lag=0..400 ms} W_lag eeg(t + lag) in closed
form on the training split (recording-wise z-scored EEG and mel), picks the ridge
penalty on the val split (never on test), and scores the held-out test subjects
with the challenge metric: per 30-s segment the Pearson r per mel band, averaged
over the 10 bands; mean over a subject's segments; mean over subjects. As a control
the same model is scored on mismatched EEG (each segment's prediction comes from
another segment of the same subject), which should be ~0.

    python -m benchmarks.synthetic_calibration --snr-db -6 -9 -12
    python -m benchmarks.synthetic_calibration --data DIR
"""
from __future__ import annotations
if not __package__:  # run by path (python benchmarks/synthetic_calibration.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import os

# Single-threaded BLAS: on a shared 2-core machine threaded BLAS oversubscribes and runs ~5x slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from util.errors import EEGKitError, run_cli  # noqa: E402
from util.metrics import pearson_np  # noqa: E402
from util.config import float_arg, seed_arg  # noqa: E402

FS = 64
LAMBDAS = [1e-1, 1e0, 1e1, 1e2, 1e3, 1e4]  # relative to mean diagonal of X^T X / n


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)


def _lagged(eeg: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """(T, 64) -> (T, 64 * n_lags); row t holds eeg[t + lag] (zero past the end)."""
    n, c = eeg.shape
    out = np.zeros((n, c * len(lags)), dtype=np.float32)
    for i, lag in enumerate(lags):
        out[:n - lag, i * c:(i + 1) * c] = eeg[lag:]
    return out


def _recordings(split_dir: Path, split: str):
    for eeg_path in sorted(split_dir.glob(f"{split}_-_*_-_eeg.npy")):
        mel_path = eeg_path.with_name(eeg_path.name[: -len("eeg.npy")] + "mel.npy")
        eeg, mel = np.load(eeg_path).astype(np.float32), np.load(mel_path).astype(np.float32)
        n = min(len(eeg), len(mel))
        yield eeg_path.name.split("_-_")[1], eeg[:n], mel[:n]


def _gram(eeg: np.ndarray, mel: np.ndarray, lags: np.ndarray):
    """X^T X and X^T Y of the lagged design without building it (block-Toeplitz trick).

    Block (i, j) of X^T X is sum_t eeg[t + l_i]^T eeg[t + l_j], approximated by the
    lag-(l_j - l_i) cross-covariance over the whole recording (differs from the exact
    zero-padded sum only in the last 400 ms). X^T Y blocks are exact.
    """
    eeg, mel = np.asarray(eeg, np.float64), np.asarray(mel, np.float64)  # one dtype -> BLAS
    n, c = eeg.shape
    cross = {}
    for d in {abs(int(b) - int(a)) for a in lags for b in lags}:
        cross[d] = eeg[:n - d].T @ eeg[d:]  # (64, 64): sum_t eeg[t]^T eeg[t + d]
    xtx = np.empty((c * len(lags), c * len(lags)))
    for i, li in enumerate(lags):
        for j, lj in enumerate(lags):
            block = cross[lj - li] if lj >= li else cross[li - lj].T
            xtx[i * c:(i + 1) * c, j * c:(j + 1) * c] = block
    xty = np.concatenate([eeg[lag:].T @ mel[:n - lag] for lag in lags])  # (64 L, 10)
    return xtx, xty


def fit_ridge(data_dir: Path, lags: np.ndarray):
    """Fit on train, choose lambda on val. Returns (weights (64*L, 10), lambda, val score)."""
    split_dir = data_dir / "derivatives" / "split_data"
    xtx, xty = None, None
    for _sid, eeg, mel in _recordings(split_dir, "train"):
        gram_x, gram_y = _gram(_zscore(eeg), _zscore(mel), lags)
        xtx = gram_x if xtx is None else xtx + gram_x
        xty = gram_y if xty is None else xty + gram_y
    if xtx is None:
        raise EEGKitError(f"{split_dir}: no train_-_*_-_eeg.npy files")
    scale = np.trace(xtx) / xtx.shape[0]
    val = [(_lagged(_zscore(eeg), lags), mel) for _sid, eeg, mel in _recordings(split_dir, "val")]
    best = None
    evals, evecs = np.linalg.eigh(xtx)  # one decomposition serves every lambda
    projected = evecs.T @ xty
    for lam in LAMBDAS:
        weights = (evecs @ (projected / (evals + lam * scale)[:, None])).astype(np.float32)
        score = float(np.mean([pearson_np(x @ weights, mel).mean() for x, mel in val]))
        if best is None or score > best[2]:
            best = (weights, lam, score)
    return best


def score_test_set(data_dir: Path, weights: np.ndarray, lags: np.ndarray, mismatched: bool = False):
    """Challenge metric on test_set/: (mean over subjects, per-subject dict, per-band mean (10,))."""
    test_dir = data_dir / "test_set" / "TASK2_regression"
    segments = []  # (subject, eeg (1920, 64), label (1920, 10))
    from evaluation.task2 import mapping_files

    for mapping_path in mapping_files(test_dir):
        sid = mapping_path.name.split("_")[0]
        mapping = json.loads(mapping_path.read_text())
        labels = json.loads((data_dir / "test_set" / "labels" / f"{sid}.json").read_text())
        with np.load(test_dir / "preprocessed_eeg" / f"{sid}_eeg.npz") as arrays:
            for segment_id in sorted(mapping):
                segments.append((sid, arrays[mapping[segment_id]["eeg"]].astype(np.float32),
                                 np.asarray(labels[segment_id], dtype=np.float32)))
    if not segments:
        raise EEGKitError(f"{test_dir}: no *_mapping.json files")
    by_subject, per_band = {}, []
    for k, (sid, eeg, label) in enumerate(segments):
        if mismatched:  # EEG of the next segment in the list (another segment or subject)
            eeg = segments[(k + 1) % len(segments)][1]
        pred = _lagged(_zscore(eeg), lags) @ weights  # (1920, 10)
        bands = pearson_np(pred, label)
        per_band.append(bands)
        by_subject.setdefault(sid, []).append(bands.mean())
    per_subject = {sid: float(np.mean(scores)) for sid, scores in by_subject.items()}
    return float(np.mean(list(per_subject.values()))), per_subject, np.mean(per_band, axis=0)


def evaluate(data_dir: Path, lag_step: int = 1) -> dict:
    lags = np.arange(0, int(0.4 * FS) + 1, lag_step)
    weights, lam, val_score = fit_ridge(data_dir, lags)
    score, per_subject, per_band = score_test_set(data_dir, weights, lags)
    null, _null_subjects, _ = score_test_set(data_dir, weights, lags, mismatched=True)
    return {"lambda": lam, "val": val_score, "test": score, "test_per_subject": per_subject,
            "test_per_band": np.round(per_band.astype(np.float64), 3).tolist(), "mismatched_eeg": null}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None,
                        help="evaluate this existing synthetic Task 2 folder instead of generating")
    parser.add_argument("--snr-db", type=float_arg(-100, 100), nargs="+", default=None,
                        help="SNRs (dB) to generate and evaluate (default: the generator's default)")
    parser.add_argument("--subjects", type=int, default=8, help="training subjects to generate (default 8)")
    parser.add_argument("--minutes", type=float, default=8.0, help="minutes per training subject (default 8)")
    parser.add_argument("--test-subjects", type=int, default=4, help="test subjects to generate (default 4)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="generation seed (default 0)")
    parser.add_argument("--lag-step", type=int, default=1, help="use every n-th lag of 0-400 ms (default 1)")
    args = parser.parse_args(argv)
    from util.inputs import check_number_flags

    check_number_flags(args, {
        "--snr-db": (None, False, False),
        "--subjects": (1, True, False),
        "--minutes": (0.5, False, False),
        "--test-subjects": (1, True, False),
        "--seed": (0, True, False),
        "--lag-step": (1, True, False),
    })

    if args.data is not None:
        if not (args.data / "derivatives" / "split_data").is_dir():
            raise EEGKitError(f"{args.data}: not a Task 2 dataset (no derivatives/split_data)")
        runs = [("given", args.data)]
        tmp = None
    else:
        from synthetic.task2 import DEFAULT_SNR_DB, generate

        tmp = tempfile.TemporaryDirectory(prefix="eegkit_calib_")
        runs = []
        for snr in args.snr_db or [DEFAULT_SNR_DB]:
            start = time.perf_counter()
            out = generate(Path(tmp.name) / f"snr{snr:g}", subjects=args.subjects, minutes=args.minutes,
                           seed=args.seed, test_subjects=args.test_subjects, snr_db=snr, progress=False)
            print(f"generated snr_db={snr:g} in {time.perf_counter() - start:.1f} s")
            runs.append((f"{snr:g}", out))
    print("snr_db | lambda | val r | test r (held-out subjects) | mismatched-EEG r | per-band test r")
    for label, data_dir in runs:
        res = evaluate(data_dir, args.lag_step)
        print(f"{label} | {res['lambda']:g} | {res['val']:.3f} | {res['test']:.3f} "
              f"(per subject {', '.join(f'{v:.3f}' for v in res['test_per_subject'].values())}) | "
              f"{res['mismatched_eeg']:.3f} | {res['test_per_band']}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    run_cli(main)
