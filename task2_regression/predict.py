"""Predict Task 2 test-set segments with a trained run and write per-subject submission JSON files.

    python -m task2_regression.predict --run RUN --test-set DATASET/test_set/TASK2_regression \
        --out PRED [--checkpoint best|last|averaged] [--control none|noise|mismatched] [--unseen error|average]
    python -m task2_regression.predict --run RUN --arrays IN.npz --out OUT.npz [--checkpoint best] [--overwrite]

RUN is a run folder, or the parent folder of per-subject runs (`train.py --per-subject`, marked by
`per_subject.json`): each test subject is then predicted by its own subject's model (`--unseen`
says what happens to a test subject without one).

Input (reference section 3): `sub-XXX_mapping.json` (`{segment_id: {"eeg": eeg_id}}`) and
`preprocessed_eeg/sub-XXX_eeg.npz` (`eeg_id -> (1920, 64)`), per subject.
Output: `PRED/sub-XXX.json` = `{segment_id: [[f, ...] x bands] x frames}` (time first), one file per
subject, for the run's submitted target (`mel`: 1920 x 10; `envelope`: 1920 x 1).

Normalisation: every EEG segment is z-scored over time per channel on its own. The test subjects
are unseen, so no training statistics exist for them; a per-segment z-score is the closest match to
both training modes (`window` is exactly this; `recording` z-scores with per-recording statistics).
Models that return fewer frames than the segment (valid padding) are padded at the end to the
segment length with the per-band mean of the prediction, which leaves the correlation of the
predicted frames as little disturbed as a constant tail can.

Array mode (``--arrays``, `predict_arrays`): IN.npz holds ``eeg`` (batch, time, 64), taken as the model
input as it is (no z-scoring: the arrays are already preprocessed); OUT.npz holds one float32 array per
model output, named by target (``envelope``, ``mel``, ``mel80``, ``mag`` for the CAT-WaveNets), each
(batch, time, bands). A run whose model needs one window length (``WINDOW_FRAMES``, e.g.
cat_wavenet_published: 1920) refuses other lengths; an existing OUT.npz needs ``--overwrite``.

Every input is read and checked and every prediction made before anything is written, so a bad
input (missing file, unknown segment, wrong channel count, NaN/Inf) gives one error line and no
partial output. A non-empty PRED needs ``--overwrite``; the folder is then replaced whole
(written into a temporary sibling and renamed), and a prediction with NaN/Inf is never written.
"""
from __future__ import annotations
if not __package__:  # run by path (python task2_regression/predict.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from util.atomic import atomic_write_json
from util.outdir import check_out_dir, staged_dir
from util.errors import EEGKitError, run_cli
from evaluation.task2 import mapping_files, subject_of
from util.features import BANDS
from util.config import seed_arg
from task2_regression.data import zscore_time

from util.training import RUN_CHECKPOINTS as CHECKPOINTS  # noqa: E402  (best, last, averaged)
MIN_SEGMENT_FRAMES = 64  # a test segment shorter than 1 s at 64 Hz is refused (the challenge's are 1920)


def load_run_model(run_dir, checkpoint: str = "best") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a run from its checkpoint (the config is stored inside)."""
    from task2_regression.models import build_model
    from util.trainer import restore_model
    from util.training import load_checkpoint, run_checkpoint

    path = run_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path, task="task2")
    from task2_regression.run_config import check_config
    from util.config import stored_config

    cfg = stored_config(path, state["config"], check_config)  # the schema of train.py; keys added since are filled in
    targets = list(cfg.get("targets") or [cfg.get("target", "mel")])
    model = build_model(cfg["model"], {name: BANDS[name] for name in targets})
    restore_model(model, state, path, cfg.get("train", {}).get("precision", "fp32"))
    if hasattr(model, "fold_weight_norm"):  # inference only: bake weight norm in (after loading the state)
        model.fold_weight_norm()
    return model, cfg


PER_SUBJECT_FILE = "per_subject.json"  # written by train.py --per-subject into the parent folder


def is_per_subject(run_dir) -> bool:
    """True for a parent folder of per-subject runs (``train.py --per-subject``)."""
    return (Path(run_dir) / PER_SUBJECT_FILE).is_file()


def load_run_models(run_dir, checkpoint: str = "best") -> tuple:
    """(model, config) of a run, or ({subject: model}, config of the first) of a per-subject parent folder.

    Every per-subject run must have the same target and EEG channel count.
    """
    run_dir = Path(run_dir)
    if not is_per_subject(run_dir):
        return load_run_model(run_dir, checkpoint)
    marker = run_dir / PER_SUBJECT_FILE
    try:
        from util.inputs import read_json

        subjects = read_json(marker)["subjects"]  # bounded, strict (a FIFO, a duplicate key: one line)
    except (OSError, ValueError, KeyError, TypeError):
        raise EEGKitError(f"{marker}: not a readable per-subject index (expected {{'subjects': {{...}}}})") from None
    if not isinstance(subjects, dict) or not subjects:
        raise EEGKitError(f"{marker}: lists no subjects")
    models, configs = {}, {}
    for subject, folder in sorted(subjects.items()):
        models[subject], configs[subject] = load_run_model(run_dir / str(folder), checkpoint)
    first = configs[next(iter(configs))]
    for subject, cfg in configs.items():
        if cfg.get("target") != first.get("target") or model_channels(cfg) != model_channels(first):
            raise EEGKitError(f"{run_dir / subjects[subject]}: target {cfg.get('target')!r} / {model_channels(cfg)} "
                              f"channels differ from the other per-subject runs ({first.get('target')!r} / "
                              f"{model_channels(first)})")
    return models, first


def model_channels(cfg: dict) -> int:
    """EEG channel count the run's model expects (`n_channels` or `eeg_channels` in the model config)."""
    model_cfg = cfg.get("model", {})
    return int(model_cfg.get("n_channels", model_cfg.get("eeg_channels", 64)))


def pad_to_length(pred: np.ndarray, length: int) -> np.ndarray:
    """(time_out, bands) -> (length, bands): pad the end with the per-band mean, or cut."""
    if pred.shape[0] >= length:
        return pred[:length]
    tail = np.repeat(pred.mean(axis=0, keepdims=True), length - pred.shape[0], axis=0)
    return np.concatenate([pred, tail], axis=0)


def read_test_subject(mapping_path: Path, n_channels: int = 64) -> tuple[list[str], list[np.ndarray]]:
    """Validated (segment ids, float32 (time, C) EEG segments) of one subject."""
    test_dir = mapping_path.parent
    subject = subject_of(mapping_path)
    npz_path = test_dir / "preprocessed_eeg" / f"{subject}_eeg.npz"
    from util.inputs import NpzReader, check_array, read_json

    mapping = read_json(mapping_path)
    if not isinstance(mapping, dict) or not mapping:
        raise EEGKitError(f"{mapping_path}: expected a non-empty {{segment_id: {{'eeg': eeg_id}}}} object")
    if not npz_path.exists():  # a FIFO or a device is refused by NpzReader (util.inputs.open_regular), never read
        raise EEGKitError(f"{npz_path}: EEG file not found (named by {mapping_path.name})")
    ids, segments = [], []
    with NpzReader(npz_path) as archive:
        for segment_id, entry in mapping.items():
            eeg_id = entry.get("eeg") if isinstance(entry, dict) else None
            if not isinstance(eeg_id, str):
                raise EEGKitError(f"{mapping_path}: segment {segment_id!r} has no 'eeg' id")
            if eeg_id not in archive:
                raise EEGKitError(f"{npz_path}: segment {eeg_id!r} not found (named by {mapping_path.name})")
            eeg = check_array(archive[eeg_id], f"{npz_path}: segment {eeg_id!r}", ndim=2, columns=n_channels,
                              min_rows=MIN_SEGMENT_FRAMES, refuse_constant=True, what="EEG")  # (time, C)
            ids.append(str(segment_id))
            segments.append(eeg.astype(np.float32))
    return ids, segments


@torch.no_grad()
def predict_segments(model: torch.nn.Module, target: str, segments: Sequence[np.ndarray],
                     batch_size: int = 8, unbiased: bool = False) -> list[np.ndarray]:
    """Predict `target` for each (time, 64) segment -> list of (time, bands) float32, padded to the segment length.

    Each segment is z-scored per channel over time first; ``unbiased``: with the n - 1 std, as the run was
    trained (``data.normalize: window_unbiased``, the published CAT-WaveNet's ``torch.std``)."""
    out: list[np.ndarray] = []
    order = list(range(len(segments)))
    # group equal-length segments so they can be batched
    by_length: dict[int, list[int]] = {}
    for index in order:
        by_length.setdefault(segments[index].shape[0], []).append(index)
    results: dict[int, np.ndarray] = {}
    for length, indices in by_length.items():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            eeg = torch.from_numpy(np.stack([zscore_time(segments[i], unbiased) for i in chunk]))  # (batch, time, 64)
            pred = model(eeg)[target].float().cpu().numpy()  # (batch, time_out, bands)
            for i, p in zip(chunk, pred):
                results[i] = pad_to_length(p, length).astype(np.float32)
                if not np.isfinite(results[i]).all():
                    raise EEGKitError(f"segment {i}: the model predicted NaN/Inf (are the run's weights finite?)")
    out = [results[i] for i in order]
    return out


UNSEEN = ("error", "average")


def _average_models(models: dict, target: str, segments, unbiased: bool = False) -> list[np.ndarray]:
    """Mean over the models of each one's prediction z-scored over time (every model weighs the same)."""
    per_model = [predict_segments(model, target, segments, unbiased=unbiased) for model in models.values()]
    return [np.mean([zscore_time(p[i]) for p in per_model], axis=0).astype(np.float32)
            for i in range(len(segments))]


def predict_test_set(run_dir, test_dir, checkpoint: str = "best", eeg_transform=None,
                     progress: bool = True, unseen: str = "error") -> dict[str, dict[str, np.ndarray]]:
    """{subject: {segment_id: (time, bands)}} for every subject of the test set (nothing written).

    eeg_transform(subject, ids, segments) -> segments lets controls (e.g. shuffling EEG across
    segment ids) alter the inputs. A per-subject parent folder (``train.py --per-subject``) predicts
    each test subject with that subject's own model; a test subject without one is refused
    (``unseen='error'``) or predicted by the mean of every subject model's z-scored prediction
    (``unseen='average'``).
    """
    if unseen not in UNSEEN:
        raise EEGKitError(f"--unseen {unseen}: must be one of {', '.join(UNSEEN)}")
    model, cfg = load_run_models(run_dir, checkpoint)
    target = cfg.get("target", "mel")
    unbiased = cfg.get("data", {}).get("normalize") == "window_unbiased"  # z-score segments as the run trained
    n_channels = model_channels(cfg)
    # read and check every subject first: a bad input fails before any progress output or prediction
    inputs = {subject_of(path): read_test_subject(path, n_channels) for path in mapping_files(test_dir)}
    if isinstance(model, dict) and unseen == "error":
        missing = sorted(set(inputs) - set(model))
        if missing:
            raise EEGKitError(f"{run_dir}: no per-subject model for test subject(s) {', '.join(missing)} (models: "
                              f"{', '.join(sorted(model))}); pass --unseen average to predict them with the mean "
                              f"of all subject models")
    subjects: dict[str, dict[str, np.ndarray]] = {}
    for subject, (ids, segments) in tqdm(inputs.items(), desc="predicting subjects", disable=not progress):
        if eeg_transform is not None:
            segments = eeg_transform(subject, ids, segments)
        try:
            if not isinstance(model, dict):
                predictions = predict_segments(model, target, segments, unbiased=unbiased)
            elif subject in model:
                predictions = predict_segments(model[subject], target, segments, unbiased=unbiased)
            else:
                predictions = _average_models(model, target, segments, unbiased)
        except EEGKitError as error:
            raise EEGKitError(f"{Path(run_dir) / (checkpoint + '.pt')}: {subject} {error}; nothing written") from None
        subjects[subject] = dict(zip(ids, predictions))
    return subjects


def noise_control(seed: int = 0):
    """EEG transform for the noise-EEG control: Gaussian EEG with the subject's per-channel mean and std.

    The statistics are those of all of the subject's segments together (its recording); every
    segment is replaced by fresh noise of its own length (`evaluation.controls.noise_eeg`).
    """
    from evaluation.controls import noise_eeg

    def transform(subject: str, ids: list[str], segments: list[np.ndarray]) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, sum(map(ord, subject))])
        pooled = np.concatenate(segments)  # (total time, C)
        return [noise_eeg(pooled, rng, n_frames=len(x)) for x in segments]
    return transform


def mismatched_control(seed: int = 0):
    """EEG transform for the mismatched-EEG control: each segment gets the EEG of another segment of
    the same subject (a random derangement within the subject; the test set does not name stimuli).

    A subject with a single segment gets that segment circularly shifted by half its length instead.
    """
    def transform(subject: str, ids: list[str], segments: list[np.ndarray]) -> list[np.ndarray]:
        if len(segments) < 2:
            return [np.roll(segment, segment.shape[0] // 2, axis=0) for segment in segments]
        rng = np.random.default_rng(seed + sum(map(ord, subject)))
        order = rng.permutation(len(segments))
        shifted = np.roll(order, 1)  # segment order[i] gets the EEG of order[i-1]: nobody keeps its own
        out = list(segments)
        for target_index, source_index in zip(order, shifted):
            out[target_index] = segments[source_index]
        return out
    return transform


CONTROLS = {"none": None, "noise": noise_control, "mismatched": mismatched_control}


PRED_FILES = ("sub-*.json",)  # all a prediction folder holds: --overwrite replaces nothing else


def write_predictions(subjects: dict[str, dict[str, np.ndarray]], out_dir, overwrite: bool | None = None) -> list[Path]:
    """PRED/sub-XXX.json = {segment_id: time x bands list}; the folder is written whole
    (`util.outdir.staged_dir`: a temporary sibling renamed over PRED, under PRED's lock file), so an
    interrupted run leaves the old PRED untouched. Non-finite values are refused before anything is
    written. ``overwrite`` False: refused if another process filled PRED since the checks."""
    out_dir = Path(out_dir)
    for subject, segments in subjects.items():
        for segment_id, pred in segments.items():
            if not np.isfinite(pred).all():
                raise EEGKitError(f"{subject} segment {segment_id}: prediction contains NaN/Inf; nothing written")
    with staged_dir(out_dir, "--out", overwrite=overwrite) as tmp:
        for subject, segments in subjects.items():
            payload = {segment_id: pred.astype(float).tolist() for segment_id, pred in segments.items()}
            atomic_write_json(tmp / f"{subject}.json", payload)
    return [out_dir / f"{subject}.json" for subject in subjects]


ARRAYS_INPUT = "eeg"  # the one entry --arrays reads: (batch, time, channels)


def read_eeg_arrays(npz_path, n_channels: int = 64, window_frames: int | None = None) -> np.ndarray:
    """``eeg`` (batch, time, n_channels) of an .npz as float32, checked (rank, channels, length, finite, no pickle)."""
    from util.inputs import NpzReader, check_array

    npz_path = Path(npz_path)
    if not npz_path.exists():
        raise EEGKitError(f"{npz_path}: --arrays file not found")
    with NpzReader(npz_path) as archive:
        eeg = archive[ARRAYS_INPUT]  # refuses a missing entry and object (pickled) arrays in one line
    where = f"{npz_path}: entry {ARRAYS_INPUT!r}"
    eeg = check_array(eeg, where, ndim=3, what="EEG", shape_hint=f"(batch, time, {n_channels})")
    if eeg.shape[2] != n_channels:
        hint = " (looks transposed: time must come before channels)" if eeg.shape[1] == n_channels else ""
        raise EEGKitError(f"{where}: EEG must be (batch, time, {n_channels}), found {eeg.shape[2]} channels "
                          f"(shape {eeg.shape}){hint}")
    if window_frames is not None and eeg.shape[1] != int(window_frames):
        raise EEGKitError(f"{where}: windows of {eeg.shape[1]} frames; the run's model needs exactly "
                          f"{int(window_frames)} (shape {eeg.shape})")
    return np.ascontiguousarray(eeg, dtype=np.float32)


@torch.no_grad()
def predict_arrays(run_dir, npz_path, checkpoint: str = "best", batch_size: int = 8) -> dict[str, np.ndarray]:
    """{target: (batch, time_out, bands) float32} of every model output for the ``eeg`` of ``npz_path`` (as is)."""
    if is_per_subject(run_dir):
        raise EEGKitError(f"--run {run_dir}: a per-subject parent folder holds one model per subject; give one "
                          f"subject's run folder with --arrays")
    model, cfg = load_run_model(run_dir, checkpoint)
    eeg = read_eeg_arrays(npz_path, model_channels(cfg), getattr(model, "WINDOW_FRAMES", None))  # (batch, time, C)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(eeg), batch_size):
        try:
            outputs = model(torch.from_numpy(eeg[start : start + batch_size]))  # {target: (batch, time_out, bands)}
        except (RuntimeError, ValueError) as error:
            raise EEGKitError(f"{npz_path}: the run's model cannot take entry {ARRAYS_INPUT!r} of shape "
                              f"{eeg.shape} ({str(error).splitlines()[0]})") from None
        for name, value in outputs.items():
            parts.setdefault(name, []).append(value.float().cpu().numpy())
    result = {name: np.concatenate(chunks).astype(np.float32) for name, chunks in parts.items()}
    for name, value in result.items():
        if not np.isfinite(value).all():
            raise EEGKitError(f"{Path(run_dir) / (checkpoint + '.pt')}: the model predicted NaN/Inf for {name!r}; "
                              f"nothing written")
    return result


def main_arrays(args) -> int:
    """``--arrays IN.npz --out OUT.npz``: every output of the run's model, one array per target."""
    from util.atomic import atomic_savez
    from util.outdir import check_out_file

    if args.control != "none":
        raise EEGKitError(f"--control {args.control}: controls need --test-set (they replace a subject's EEG)")
    check_out_file(args.out, overwrite=args.overwrite, inputs=[args.run, args.arrays])
    outputs = predict_arrays(args.run, args.arrays, args.checkpoint)
    atomic_savez(args.out, **outputs)
    shapes = ", ".join(f"{name} {value.shape}" for name, value in outputs.items())
    print(f"wrote {shapes} to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Predict the Task 2 test set with a trained run and write one "
                                                 "submission JSON per subject (--test-set), or predict EEG "
                                                 "arrays given as an .npz (--arrays).")
    parser.add_argument("--run", required=True, help="run folder written by task2_regression/train.py")
    parser.add_argument("--test-set",
                        help="folder with sub-XXX_mapping.json and preprocessed_eeg/ (DATASET/test_set/TASK2_regression); "
                             "give this or --arrays")
    parser.add_argument("--arrays",
                        help="instead of --test-set: an .npz whose entry 'eeg' (batch, time, 64) is taken as the model "
                             "input as it is (no z-scoring); --out is then an .npz file with one (batch, time, bands) "
                             "array per model output, named by target (envelope, mel, mel80, mag)")
    parser.add_argument("--out", required=True, help="output folder for the per-subject sub-XXX.json predictions "
                                                     "(with --arrays: the output .npz file)")
    parser.add_argument("--checkpoint", default="best", choices=CHECKPOINTS,
                        help="which checkpoint of the run to use (default: best)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty OUT (the new folder replaces the old one whole, when complete; "
                             "with --arrays: replace an existing OUT.npz)")
    parser.add_argument("--control", default="none", choices=tuple(CONTROLS),
                        help="predict a control instead of the real EEG: noise (Gaussian EEG with each subject's "
                             "per-channel mean and std) or mismatched (each segment gets another segment's EEG "
                             "of the same subject); score with python -m evaluation.task2 --noise-predictions / "
                             "--mismatched-predictions (default none)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the --control EEG (default 0)")
    parser.add_argument("--unseen", default="error", choices=UNSEEN,
                        help="per-subject runs only (train.py --per-subject): a test subject without its own "
                             "model is an error (default), or 'average': the mean of every subject model's "
                             "z-scored prediction")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if (args.test_set is None) == (args.arrays is None):
        raise EEGKitError("--test-set / --arrays: give exactly one (the challenge test set folder, or an .npz of "
                          "EEG windows)")
    if args.arrays is not None:
        return main_arrays(args)
    check_out_dir(args.out, overwrite=args.overwrite, inputs=[args.run, args.test_set], own=PRED_FILES)
    transform = None if CONTROLS[args.control] is None else CONTROLS[args.control](args.seed)
    subjects = predict_test_set(args.run, args.test_set, args.checkpoint, eeg_transform=transform,
                                unseen=args.unseen)
    paths = write_predictions(subjects, args.out, overwrite=args.overwrite)
    n_segments = sum(len(s) for s in subjects.values())
    print(f"wrote {len(paths)} subject files ({n_segments} segments) to {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
