"""Real-data check on the SparrKULee excerpt: envelope reconstruction from real EEG.

For each subject of ``../shared/data/sparrkulee_excerpt`` (EEG stored channels
first (64, T) float64, envelope (T, 1); every array is cut to the shortest
length) the first half is used for training and the second half for testing:

(a) ``task2_regression.models.linear.RidgeDecoder`` (closed form, lags 0-400 ms =
    26 taps); alpha chosen on the last 20 % of the training half, then refitted
    on the whole training half;
(b) optionally a small VLAAI (``task2_regression.models.vlaai``, anticausal padding) trained for 150
    Adam steps with the negative Pearson loss on 5-s windows (``--vlaai-steps``).

Z-scoring uses the training half's statistics only. Printed per subject: r on
the test half and a circular-shift null (r of the same prediction with the
envelope circularly shifted by random offsets of at least 2 s): mean and 95th
percentile. The excerpt README says ridge gives r ~0.2-0.25 and the null ~0.

Usage: ``python -m benchmarks.task2_excerpt [--data DIR] [--vlaai-steps 150]``
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from util.errors import EEGKitError, run_cli
from util.features import FS_TASK2

DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sparrkulee_excerpt"
N_TAPS = 26  # 0-400 ms at 64 Hz


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path)
    except (OSError, ValueError) as exc:
        raise EEGKitError(f"{path}: unreadable .npy file ({exc})") from None


def load_excerpt(folder=DEFAULT_DIR) -> dict:
    """``{subject: (eeg (T, 64) float64, envelope (T, 1) float64)}``, all cut to the shortest length."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EEGKitError(f"{folder}: excerpt folder not found")
    envelope_files = sorted(folder.glob("*_-_envelope.npy"))
    eeg_files = sorted(folder.glob("sub-*_eeg.npy"))
    if not envelope_files or not eeg_files:
        raise EEGKitError(f"{folder}: expected sub-*_eeg.npy and *_-_envelope.npy files")
    envelope = _load_npy(envelope_files[0]).reshape(-1, 1)
    eegs = {}
    for path in eeg_files:
        eeg = _load_npy(path)
        if eeg.ndim != 2 or 64 not in eeg.shape:
            raise EEGKitError(f"{path}: expected (64, T) EEG, found shape {eeg.shape}")
        eegs[path.name.split("_")[0]] = eeg.T if eeg.shape[0] == 64 else eeg  # -> (T, 64)
    length = min([len(envelope)] + [len(e) for e in eegs.values()])
    return {subject: (eeg[:length].astype(np.float64), envelope[:length].astype(np.float64))
            for subject, eeg in eegs.items()}


def split_halves(eeg: np.ndarray, envelope: np.ndarray) -> tuple:
    """First half train, second half test; both z-scored with the TRAIN half's mean/std."""
    half = len(eeg) // 2
    parts = []
    for array in (eeg, envelope):
        train, test = array[:half], array[half:]
        mean, std = train.mean(axis=0), train.std(axis=0)
        std[std == 0] = 1.0
        parts.append(((train - mean) / std, (test - mean) / std))
    (eeg_train, eeg_test), (env_train, env_test) = parts
    return eeg_train, env_train, eeg_test, env_test


def circular_null(prediction: np.ndarray, target: np.ndarray, n_shifts: int = 200, min_shift_s: float = 2.0,
                  seed: int = 0) -> np.ndarray:
    """r of ``prediction`` with ``target`` circularly shifted by random offsets (>= min_shift_s from 0)."""
    from util.metrics import pearson_np

    rng = np.random.default_rng(seed)
    min_shift = int(min_shift_s * FS_TASK2)
    shifts = rng.integers(min_shift, len(target) - min_shift, size=n_shifts)
    return np.array([float(pearson_np(prediction[:, 0], np.roll(target[:, 0], s))) for s in shifts])


def ridge_fit_predict(eeg_train, env_train, eeg_test, env_test, alphas=(1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)) -> tuple:
    """Ridge backward decoder (RidgeDecoder): alpha on the last 20 % of train, refit on all of train.

    A single alpha skips the selection. Returns ``(prediction (T_test - 25, 1), aligned target (T_test - 25, 1), alpha)``.
    """
    import torch

    from task2_regression.models.linear import RidgeDecoder

    model = RidgeDecoder({"envelope": 1}, n_taps=N_TAPS, alphas=alphas)
    best_alpha = float(alphas[0])
    if len(alphas) > 1:  # choose alpha on the end of the training half, never on the test half
        cut = int(len(eeg_train) * 0.8)
        model.partial_fit(eeg_train[:cut], {"envelope": env_train[:cut]})
        scores = model.select_alpha(alphas, [(eeg_train[cut:], {"envelope": env_train[cut:]})])
        best_alpha = max(scores, key=scores.get)
        model.reset_statistics()
    model.partial_fit(eeg_train, {"envelope": env_train})
    model.solve(best_alpha)
    with torch.no_grad():
        prediction = model(torch.from_numpy(eeg_test[None]).float())["envelope"][0].numpy()
    return prediction.astype(np.float64), env_test[: len(prediction)], best_alpha


def vlaai_fit_predict(eeg_train, env_train, eeg_test, steps: int = 150, seed: int = 0) -> np.ndarray:
    """A small VLAAI (2 blocks, filters 32/32, kernel 8) trained for ``steps`` Adam steps on random 5-s windows (negative Pearson).

    Anticausal padding (output t sees EEG t..t+k-1, the direction in which EEG lags the
    stimulus): with the published causal padding this model stayed within the null here.
    """
    import torch

    from task2_regression.models.vlaai import VLAAI
    from util.losses import neg_pearson_loss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = VLAAI({"envelope": 1}, n_blocks=2, filters=(32, 32), kernels=8, context_kernel=8,
                  padding="anticausal")  # ~1 min on CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    eeg_t = torch.from_numpy(eeg_train).float()
    env_t = torch.from_numpy(env_train).float()
    window, batch = 5 * FS_TASK2, 8
    model.train()
    for _ in range(steps):
        starts = rng.integers(0, len(eeg_t) - window, size=batch)
        eeg_batch = torch.stack([eeg_t[s:s + window] for s in starts])  # (batch, time, 64)
        env_batch = torch.stack([env_t[s:s + window] for s in starts])  # (batch, time, 1)
        loss = neg_pearson_loss(model(eeg_batch)["envelope"], env_batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        prediction = model(torch.from_numpy(eeg_test[None]).float())["envelope"][0].numpy()
    return prediction.astype(np.float64)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DIR,
                        help="folder of the SparrKULee excerpt (default: ../shared/data/sparrkulee_excerpt)")
    parser.add_argument("--vlaai-steps", type=int, default=150,
                        help="Adam steps (batch 8 x 5 s) for the small VLAAI (0 skips VLAAI; default 150)")
    parser.add_argument("--shifts", type=int, default=200, help="number of circular shifts for the null (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed for VLAAI training and null shifts (default 0)")
    args = parser.parse_args(argv)
    from util.inputs import check_number_flags

    check_number_flags(args, {
        "--vlaai-steps": (1, True, False),
        "--shifts": (1, True, False),
        "--seed": (0, True, False),
    })
    from util.metrics import pearson_np

    data = load_excerpt(args.data)
    print(f"{'subject':<9} {'model':<6} {'r_test':>7} {'null_mean':>10} {'null_p95':>9} {'note'}")
    for subject, (eeg, envelope) in data.items():
        eeg_train, env_train, eeg_test, env_test = split_halves(eeg, envelope)
        start = time.perf_counter()
        prediction, target, alpha = ridge_fit_predict(eeg_train, env_train, eeg_test, env_test)
        r = float(pearson_np(prediction[:, 0], target[:, 0]))
        null = circular_null(prediction, target, args.shifts, seed=args.seed)
        print(f"{subject:<9} {'ridge':<6} {r:7.3f} {null.mean():10.3f} {np.percentile(null, 95):9.3f} "
              f"alpha={alpha:g}, {time.perf_counter() - start:.1f}s")
        if args.vlaai_steps > 0:
            start = time.perf_counter()
            prediction = vlaai_fit_predict(eeg_train, env_train, eeg_test, args.vlaai_steps, args.seed)
            r = float(pearson_np(prediction[:, 0], env_test[:, 0]))
            null = circular_null(prediction, env_test, args.shifts, seed=args.seed)
            print(f"{subject:<9} {'vlaai':<6} {r:7.3f} {null.mean():10.3f} {np.percentile(null, 95):9.3f} "
                  f"{args.vlaai_steps} steps, {time.perf_counter() - start:.1f}s")
    print(f"train = first half, test = second half of {len(eeg)} samples ({len(eeg) / FS_TASK2:.0f} s) per subject")
    return 0


if __name__ == "__main__":
    run_cli(main)
