"""Real-data check on the SparrKULee excerpt: envelope reconstruction from real EEG.

For each subject of ``../shared/data/sparrkulee_excerpt`` (EEG stored channels
first (64, T) float64, envelope (T, 1); every array is cut to the shortest
length) the first half is used for training and the second half for testing:

(a) ``task2_regression.models.linear.RidgeDecoder`` (closed form, lags 0-400 ms =
    26 taps); alpha chosen on the last 20 % of the training half, then refitted
    on the whole training half;
(b) optionally a small VLAAI (``task2_regression.models.vlaai``, anticausal padding) trained for 150
    Adam steps with the negative Pearson loss on 5-s windows (``--vlaai-steps``).

Z-scoring uses the training half's statistics only. Every score comes with the three controls of
`evaluation.controls` (the same block as the other scorers, via `evaluation.task2.score_with_controls`):

- noise EEG: the fitted model on Gaussian EEG with the test half's per-channel mean and std;
- circular-shift null: the prediction scored against the envelope circularly shifted by random
  offsets of at least 2 s (``--shifts``, default 200): mean, 95th percentile, permutation p;
- mismatched EEG: each subject has one recording here, so the mismatched EEG is the same subject's
  EEG of the *other* half (the training half: another part of the story), scored against the test
  half's envelope.

``--segment-s S`` scores 5-s (or S-s) segments of the test half with the challenge rule (mean over
segments) instead of one r over the whole half; the null then shifts the whole half and re-cuts it.
The excerpt README says ridge gives r ~0.2-0.25 and the null ~0.

Usage: ``python -m benchmarks.task2_excerpt [--data DIR] [--vlaai-steps 150] [--segment-s 0] [--out report.json]
[--plot report.png] [--no-costly-controls]``
"""
from __future__ import annotations
if not __package__:  # run by path (python benchmarks/task2_excerpt.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import time
from pathlib import Path

import numpy as np

from util.errors import EEGKitError, run_cli
from util.features import FS_TASK2
from util.config import seed_arg

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
    """(n_shifts,) r of ``prediction`` with ``target`` circularly shifted (>= min_shift_s): the values of
    `evaluation.controls.circular_shift_null`."""
    from evaluation.controls import circular_shift_null

    return circular_shift_null(prediction, target, FS_TASK2, n_shifts, min_shift_s, np.random.default_rng(seed))["values"]


def ridge_fit_predict(eeg_train, env_train, eeg_test, env_test, alphas=(1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)) -> tuple:
    """Ridge backward decoder (RidgeDecoder): alpha on the last 20 % of train, refit on all of train.

    A single alpha skips the selection. Returns ``(prediction (T_test - 25, 1), aligned target (T_test - 25, 1), alpha)``.
    """
    predict, best_alpha = ridge_model(eeg_train, env_train, alphas)
    prediction = predict(eeg_test)
    return prediction, env_test[: len(prediction)], best_alpha


def vlaai_fit_predict(eeg_train, env_train, eeg_test, steps: int = 150, seed: int = 0, return_model: bool = False):
    """A small VLAAI (2 blocks, filters 32/32, kernel 8) trained for ``steps`` Adam steps on random 5-s windows (negative Pearson).

    Anticausal padding (output t sees EEG t..t+k-1, the direction in which EEG lags the
    stimulus): with the published causal padding this model stayed within the null here.
    ``return_model``: return ``(prediction, predict)`` where ``predict(eeg (T, 64)) -> (T, 1)``.
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

    def predict(eeg: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(np.ascontiguousarray(eeg)[None]).float())["envelope"][0].numpy().astype(np.float64)

    prediction = predict(eeg_test)
    return (prediction, predict) if return_model else prediction


def ridge_model(eeg_train, env_train, alphas=(1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)):
    """(predict(eeg (T, 64)) -> (T - 25, 1), alpha): the ridge decoder of `ridge_fit_predict`."""
    import torch

    from task2_regression.models.linear import RidgeDecoder

    model = RidgeDecoder({"envelope": 1}, n_taps=N_TAPS, alphas=alphas)
    best_alpha = float(alphas[0])
    if len(alphas) > 1:
        cut = int(len(eeg_train) * 0.8)
        model.partial_fit(eeg_train[:cut], {"envelope": env_train[:cut]})
        scores = model.select_alpha(alphas, [(eeg_train[cut:], {"envelope": env_train[cut:]})])
        best_alpha = max(scores, key=scores.get)
        model.reset_statistics()
    model.partial_fit(eeg_train, {"envelope": env_train})
    model.solve(best_alpha)

    def predict(eeg: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(eeg[None]).float())["envelope"][0].numpy().astype(np.float64)

    return predict, best_alpha


def _segments(subject: str, prediction: np.ndarray, target: np.ndarray, segment: int | None) -> dict:
    """{segment id: (prediction, target)}: the whole half as one segment, or consecutive segments."""
    n = min(len(prediction), len(target))
    if segment is None or segment >= n:
        return {subject: (prediction[:n], target[:n])}
    return {f"{subject}_{k}": (prediction[k * segment:(k + 1) * segment], target[k * segment:(k + 1) * segment])
            for k in range(n // segment)}


def run(data_dir=DEFAULT_DIR, vlaai_steps: int = 150, n_shifts: int = 200, seed: int = 0,
        segment_s: float = 0.0, costly_controls: bool = True, alphas=(1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)) -> dict:
    """{"models": {model: score_with_controls report}, "notes": {...}} for ridge (and VLAAI).

    ``alphas``: the ridge candidates (one value skips the selection)."""
    from evaluation.controls import noise_eeg
    from evaluation.task2 import score_with_controls

    data = load_excerpt(data_dir)
    segment = int(round(segment_s * FS_TASK2)) if segment_s > 0 else None
    models = ["ridge"] + (["vlaai"] if vlaai_steps > 0 else [])
    collected = {m: {"pred": {}, "noise": {}, "mismatched": {}, "labels": {}} for m in models}
    notes = {}
    for subject, (eeg, envelope) in data.items():
        eeg_train, env_train, eeg_test, env_test = split_halves(eeg, envelope)
        noise = noise_eeg(eeg_test, np.random.default_rng([seed, sum(map(ord, subject))]))  # (T_test, 64)
        other = eeg_train[-len(eeg_test):] if len(eeg_train) >= len(eeg_test) else eeg_train  # the other half's EEG
        for name in models:
            start = time.perf_counter()
            if name == "ridge":
                predict, alpha = ridge_model(eeg_train, env_train, alphas)
                note = f"alpha={alpha:g}"
            else:
                _, predict = vlaai_fit_predict(eeg_train, env_train, eeg_test, vlaai_steps, seed, return_model=True)
                note = f"{vlaai_steps} steps"
            store = collected[name]
            for segment_id, (p, t) in _segments(subject, predict(eeg_test), env_test, segment).items():
                store["pred"][segment_id] = p
                store["labels"].setdefault(subject, {})[segment_id] = t
            if costly_controls:
                store["noise"].update({i: p for i, (p, _) in _segments(subject, predict(noise), env_test, segment).items()})
                store["mismatched"].update(
                    {i: p for i, (p, _) in _segments(subject, predict(other), env_test, segment).items()})
            notes[f"{subject} {name}"] = f"{note}, {time.perf_counter() - start:.1f}s"
    reports = {}
    for name, store in collected.items():
        reports[name] = score_with_controls(store["pred"], store["labels"],
                                            store["noise"] if costly_controls else None,
                                            store["mismatched"] if costly_controls else None,
                                            FS_TASK2, n_shifts, seed=seed)
    length = len(next(iter(data.values()))[0])
    return {"models": reports, "notes": notes, "segment_s": segment_s, "n_shifts": n_shifts,
            "samples_per_subject": length, "costly_controls": costly_controls}


def format_run(result: dict) -> str:
    """Per subject and model: the score beside its three controls; then each model's overall line."""
    def value(x):
        return "    n/a" if x is None else f"{x:7.3f}"

    lines = [f"{'subject':<9} {'model':<6} {'r_test':>7} {'noise':>7} {'null_mean':>10} {'null_p95':>9} "
             f"{'p':>6} {'mismatch':>8} {'above':>7}  note"]
    for name, report in result["models"].items():
        for subject, block in report["per_subject_controls"].items():
            c = block["controls"]
            shift = c["circular_shift"] or {"mean": np.nan, "p95": np.nan, "p_value": np.nan}
            lines.append(f"{subject:<9} {name:<6} {report['per_subject'][subject]:7.3f} {value(c['noise_eeg']['score'])} "
                         f"{shift['mean']:10.3f} {shift['p95']:9.3f} {shift['p_value']:6.3f} "
                         f"{value(c['mismatched_eeg']['score']):>8} {value(block['score_above_noise'])}  "
                         f"{result['notes'].get(f'{subject} {name}', '')}")
            lines += [f"{'':<9} WARNING: {w}" for w in block["warnings"]]
    for name, report in result["models"].items():
        sig = report["significance"]
        lines.append(f"{name}: mean over subjects {report['score']:.3f}; significant subjects ({sig['correction']}, "
                     f"p < {sig['alpha']:g}): {', '.join(sig['significant']) or 'none'}")
        lines += [f"  WARNING: {w}" for w in report["warnings"]]
    scored = "one r over the test half" if not result["segment_s"] else f"{result['segment_s']:g}-s segments"
    lines.append(f"train = first half, test = second half of {result['samples_per_subject']} samples "
                 f"({result['samples_per_subject'] / FS_TASK2:.0f} s) per subject; {scored}; "
                 f"{result['n_shifts']} circular shifts >= 2 s; mismatched EEG = the same subject's training half")
    return "\n".join(lines)


def plot_run(result: dict, png) -> None:
    """One panel per model: per-subject score beside its controls (`evaluation.controls.draw_controls`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evaluation.controls import draw_controls
    from util.atomic import atomic_savefig

    names = list(result["models"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        draw_controls(ax, result["models"][name], score_label=f"{name} r")
        ax.set_xticks(range(len(result["models"][name]["per_subject"])), list(result["models"][name]["per_subject"]))
        ax.set_ylabel("Pearson r (envelope)")
        ax.set_xlabel(name)
        ax.axhline(0, color="k", lw=0.5)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("SparrKULee excerpt: scores beside their controls", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, png, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DIR,
                        help="folder of the SparrKULee excerpt (default: ../shared/data/sparrkulee_excerpt)")
    parser.add_argument("--vlaai-steps", type=int, default=150,
                        help="Adam steps (batch 8 x 5 s) for the small VLAAI (0 skips VLAAI; default 150)")
    parser.add_argument("--shifts", type=int, default=200, help="number of circular shifts for the null (default 200)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed for VLAAI training, noise EEG and shifts (default 0)")
    parser.add_argument("--segment-s", type=float, default=0.0,
                        help="score segments of this length (challenge rule) instead of the whole test half (default 0)")
    parser.add_argument("--no-costly-controls", action="store_true",
                        help="leave out the noise-EEG and mismatched-EEG controls (the null stays)")
    parser.add_argument("--out", type=Path, default=None, help="write every report (with its controls) as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of the scores beside their controls")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    args = parser.parse_args(argv)
    from util.inputs import check_number_flags

    check_number_flags(args, {
        "--vlaai-steps": (0, True, False),  # 0 skips VLAAI
        "--shifts": (1, True, False),
        "--seed": (0, True, False),
        "--segment-s": (0, False, False),
    })
    from util.outdir import check_out_files

    check_out_files([("--out", args.out), ("--plot", args.plot)], args.overwrite, [args.data])
    result = run(args.data, args.vlaai_steps, args.shifts, args.seed, args.segment_s, not args.no_costly_controls)
    print(format_run(result))
    if args.out is not None:
        from util.atomic import atomic_write_json

        atomic_write_json(args.out, result, indent=2)
        print(f"report written to {args.out}")
    if args.plot is not None:
        plot_run(result, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    run_cli(main)
