"""Predict the Task 1 (match-mismatch) test set with a trained run and write one submission JSON per subject.

    python -m task1_match_mismatch.predict --run RUN --test-set DATASET/test_set/TASK1_match_mismatch \
        --out PRED [--checkpoint best|last|averaged] [--control none|noise|mismatched] [--overwrite]

Input (`../shared/reference/task1_match_mismatch.md` section 4), per subject:
  * ``sub-XXX_mapping.json``: ``{segment_id: {"eeg": eeg_id, "stimulus": [id0, ..., id4]}}``;
  * ``preprocessed_eeg/sub-XXX_eeg.npz``: ``eeg_id -> (320, 64)``;
  * ``stimulus/*<feature>*chunks*.npz`` (one file for all subjects): ``stimulus_id -> (320, bands)``, the
    file of the run's ``data.feature`` (envelope: 1 band, mel: 10 bands).
Output: ``PRED/sub-XXX.json`` = ``{segment_id: index}``, the position 0..K-1 of the stimulus the
model scores highest (the first on a tie), one file per subject; `submit.py --task 1` zips them.

Normalisation: the test subjects and stories are unseen, so no training statistics exist for them;
as Task 2's predict does for unseen subjects, every EEG segment is z-scored over time per channel on
its own, and so is every stimulus segment per band (`util.split_data.zscore_time`).

Controls (``--control``): ``noise`` replaces every EEG segment by Gaussian noise with the subject's
per-channel mean and std (`evaluation.controls.noise_eeg`); ``mismatched`` gives each segment the EEG
of another segment of the same subject (a derangement). Both should score at chance;
``python -m evaluation.task1 --noise-predictions / --mismatched-predictions`` scores them and warns
when one beats chance.

Every input is read and checked and every prediction made before anything is written: a missing
file or id, a pickled or unreadable ``.npz``, a wrong shape, NaN/Inf, a stimulus of another length
than its EEG, or a test set without the run's feature gives one error line and no output. A
non-empty PRED needs ``--overwrite``; the folder is then replaced whole (`util.outdir.staged_dir`).
"""
from __future__ import annotations
if not __package__:  # run by path (python task1_match_mismatch/predict.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import sys
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from evaluation.task2 import mapping_files, subject_of
from util.atomic import atomic_write_json
from util.errors import EEGKitError, run_cli
from util.features import BANDS
from util.inputs import NpzReader, check_array, read_json
from util.outdir import check_out_dir, staged_dir
from util.split_data import zscore_time
from util.config import seed_arg

from util.training import RUN_CHECKPOINTS as CHECKPOINTS  # noqa: E402  (best, last, averaged)
FEATURES = ("envelope", "mel")
N_EEG_CHANNELS = 64
MIN_SEGMENT_FRAMES = 64  # 1 s at 64 Hz; the 2024 test segments are 320 frames (5 s)
BATCH_SIZE = 16


# ----------------------------------------------------------------------------- the run
def load_run(run_dir, checkpoint: str = "best") -> tuple[torch.nn.Module, dict]:
    """Rebuild a Task 1 run's model from its checkpoint (weights + resolved config); eval mode."""
    from task1_match_mismatch.models import build_model
    from util.trainer import restore_model
    from util.training import load_checkpoint, run_checkpoint

    path = run_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path, task="task1")
    from task1_match_mismatch.train import check_config
    from util.config import stored_config

    cfg = stored_config(path, state["config"], check_config)  # the schema of train.py; keys added since are filled in
    model = restore_model(build_model(cfg["model"]), state, path, cfg.get("train", {}).get("precision", "fp32"))
    return model, cfg


def run_feature(cfg: dict, where) -> str:
    """The run's stimulus feature (``data.feature``): envelope or mel."""
    feature = (cfg.get("data") or {}).get("feature")
    if feature not in FEATURES:
        raise EEGKitError(f"{where}: its config has data.feature {feature!r}, expected one of {', '.join(FEATURES)}")
    return feature


# ----------------------------------------------------------------------------- the test set
def stimulus_file(test_dir, feature: str) -> Path:
    """The test set's ``stimulus/*.npz`` whose name contains ``feature`` and ``chunks`` (exactly one)."""
    folder = Path(test_dir) / "stimulus"
    if not folder.is_dir():
        raise EEGKitError(f"{folder}: stimulus folder not found (expected DATA/test_set/TASK1_match_mismatch)")
    files = sorted(folder.glob("*.npz"))
    found = [f for f in files if feature in f.name and "chunks" in f.name]
    if not found:
        raise EEGKitError(f"{folder}: no .npz whose name holds {feature!r} and 'chunks' for the run's feature "
                          f"(data.feature = {feature}); found {', '.join(f.name for f in files) or 'no .npz files'}")
    if len(found) > 1:
        raise EEGKitError(f"{folder}: several {feature} stimulus files ({', '.join(f.name for f in found)}); "
                          f"keep one")
    return found[0]


def read_test_set(test_dir, feature: str) -> dict[str, tuple[list[str], list[np.ndarray], list[np.ndarray]]]:
    """{subject: (segment ids, EEG segments (T, 64), stimulus candidates (K, T, bands))}, all checked, float32."""
    test_dir = Path(test_dir)
    bands = BANDS[feature]
    mappings = mapping_files(test_dir)
    stim_path = stimulus_file(test_dir, feature)
    out = {}
    with NpzReader(stim_path) as stimuli:
        cache: dict[str, np.ndarray] = {}

        def stimulus(stimulus_id: str, named_by: str, length: int) -> np.ndarray:
            if stimulus_id not in cache:
                if stimulus_id not in stimuli:
                    raise EEGKitError(f"{stim_path}: stimulus {stimulus_id!r} not found (named by {named_by})")
                array = check_array(stimuli[stimulus_id], f"{stim_path}: stimulus {stimulus_id!r}",
                                    ndim=(1, 2) if bands == 1 else 2, columns=bands, min_rows=MIN_SEGMENT_FRAMES,
                                    what=feature)
                cache[stimulus_id] = array.reshape(len(array), bands).astype(np.float32)  # (T, bands)
            if len(cache[stimulus_id]) != length:
                raise EEGKitError(f"{stim_path}: stimulus {stimulus_id!r} has {len(cache[stimulus_id])} frames, its "
                                  f"EEG segment {length} (named by {named_by})")
            return cache[stimulus_id]

        for mapping_path in mappings:
            subject = subject_of(mapping_path)
            mapping = read_json(mapping_path)
            if not isinstance(mapping, dict) or not mapping:
                raise EEGKitError(f"{mapping_path}: expected a non-empty {{segment_id: {{'eeg': id, 'stimulus': "
                                  f"[ids]}}}} object")
            npz_path = test_dir / "preprocessed_eeg" / f"{subject}_eeg.npz"
            if not npz_path.exists():  # a FIFO or a device: NpzReader's one line (util.inputs.open_regular)
                raise EEGKitError(f"{npz_path}: EEG file not found (named by {mapping_path.name})")
            ids, eeg_segments, candidates = [], [], []
            n_candidates, first_id = None, None
            with NpzReader(npz_path) as archive:
                for segment_id, entry in mapping.items():
                    named_by = f"{mapping_path.name} segment {segment_id}"
                    eeg_id = entry.get("eeg") if isinstance(entry, dict) else None
                    stimulus_ids = entry.get("stimulus") if isinstance(entry, dict) else None
                    if not isinstance(eeg_id, str):
                        raise EEGKitError(f"{mapping_path}: segment {segment_id!r} has no 'eeg' id")
                    if not isinstance(stimulus_ids, list) or len(stimulus_ids) < 2 \
                            or not all(isinstance(i, str) for i in stimulus_ids):
                        raise EEGKitError(f"{mapping_path}: segment {segment_id!r} has no 'stimulus' list of at least "
                                          f"2 id strings")
                    if n_candidates is not None and len(stimulus_ids) != n_candidates:
                        raise EEGKitError(f"{mapping_path}: segment {segment_id!r} has {len(stimulus_ids)} stimulus "
                                          f"ids, segment {first_id!r} {n_candidates} (every segment needs the same "
                                          f"number)")
                    n_candidates, first_id = len(stimulus_ids), first_id or segment_id
                    if eeg_id not in archive:
                        raise EEGKitError(f"{npz_path}: segment {eeg_id!r} not found (named by {named_by})")
                    eeg = check_array(archive[eeg_id], f"{npz_path}: segment {eeg_id!r}", ndim=2,
                                      columns=N_EEG_CHANNELS, min_rows=MIN_SEGMENT_FRAMES, refuse_constant=True,
                                      what="EEG")  # (T, 64)
                    ids.append(str(segment_id))
                    eeg_segments.append(eeg.astype(np.float32))
                    candidates.append(np.stack([stimulus(i, named_by, len(eeg))
                                                for i in stimulus_ids]))  # (K, T, bands)
            out[subject] = (ids, eeg_segments, candidates)
    return out


# ----------------------------------------------------------------------------- prediction
@torch.no_grad()
def choose(model: torch.nn.Module, eeg_segments: Sequence[np.ndarray], candidates: Sequence[np.ndarray],
           batch_size: int = BATCH_SIZE) -> list[int]:
    """Index of the highest-scoring candidate for each segment (EEG and stimuli z-scored per segment)."""
    by_shape: dict[tuple, list[int]] = {}
    for i, stimuli in enumerate(candidates):
        by_shape.setdefault(stimuli.shape, []).append(i)
    chosen: dict[int, int] = {}
    for indices in by_shape.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            eeg = torch.from_numpy(np.stack([zscore_time(eeg_segments[i]) for i in chunk]))  # (batch, T, 64)
            stimuli = torch.from_numpy(np.stack([np.stack([zscore_time(s) for s in candidates[i]])
                                                 for i in chunk]))  # (batch, K, T, bands)
            logits = model(eeg, stimuli).float()  # (batch, K)
            if logits.shape != (len(chunk), stimuli.shape[1]):
                raise EEGKitError(f"the model returned scores of shape {tuple(logits.shape)}, expected "
                                  f"{(len(chunk), stimuli.shape[1])} (batch, candidates)")
            if not torch.isfinite(logits).all():
                raise EEGKitError("the model scored NaN/Inf (are the run's weights finite?)")
            for i, index in zip(chunk, logits.argmax(dim=1).tolist()):
                chosen[i] = int(index)
    return [chosen[i] for i in range(len(candidates))]


EEGTransform = Callable[[str, list, list], list]


def noise_control(seed: int = 0) -> EEGTransform:
    """EEG transform: every segment replaced by Gaussian noise with the subject's per-channel mean and std."""
    from evaluation.controls import noise_eeg

    def transform(subject: str, ids: list[str], segments: list[np.ndarray]) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, sum(map(ord, subject))])
        pooled = np.concatenate(segments)  # (total time, 64)
        return [noise_eeg(pooled, rng, n_frames=len(x)) for x in segments]
    return transform


def mismatched_control(seed: int = 0) -> EEGTransform:
    """EEG transform: each segment gets the EEG of another segment of the same subject (a random derangement).

    Segments of another length than the receiving one are not swapped in: the derangement is drawn
    within each group of equal length; a group of one segment gets its EEG circularly shifted by half.
    """
    def transform(subject: str, ids: list[str], segments: list[np.ndarray]) -> list[np.ndarray]:
        rng = np.random.default_rng([seed, sum(map(ord, subject))])
        out = list(segments)
        groups: dict[int, list[int]] = {}
        for i, segment in enumerate(segments):
            groups.setdefault(len(segment), []).append(i)
        for members in groups.values():
            if len(members) < 2:
                out[members[0]] = np.roll(segments[members[0]], len(segments[members[0]]) // 2, axis=0)
                continue
            order = [members[k] for k in rng.permutation(len(members))]
            for target, source in zip(order, np.roll(order, 1)):  # nobody keeps its own EEG
                out[target] = segments[int(source)]
        return out
    return transform


CONTROLS = {"none": None, "noise": noise_control, "mismatched": mismatched_control}


def predict_test_set(run_dir, test_dir, checkpoint: str = "best", eeg_transform: EEGTransform | None = None,
                     progress: bool = True) -> dict[str, dict[str, int]]:
    """{subject: {segment_id: index}} for every subject of the test set (nothing written)."""
    model, cfg = load_run(run_dir, checkpoint)
    feature = run_feature(cfg, Path(run_dir) / f"{checkpoint}.pt")
    inputs = read_test_set(test_dir, feature)  # everything checked before any prediction
    subjects = {}
    for subject, (ids, eeg_segments, candidates) in tqdm(inputs.items(), desc="predicting subjects",
                                                         disable=not (progress and sys.stderr.isatty())):
        if eeg_transform is not None:
            eeg_segments = eeg_transform(subject, ids, eeg_segments)
        try:
            chosen = choose(model, eeg_segments, candidates)
        except EEGKitError as error:
            raise EEGKitError(f"{Path(run_dir) / (checkpoint + '.pt')}: {subject}: {error}; nothing written") from None
        subjects[subject] = dict(zip(ids, chosen))
    return subjects


PRED_FILES = ("sub-*.json",)  # all a prediction folder holds: --overwrite replaces nothing else


def write_predictions(subjects: dict[str, dict[str, int]], out_dir, overwrite: bool | None = None) -> list[Path]:
    """PRED/sub-XXX.json = {segment_id: index}; the folder is written whole (`util.outdir.staged_dir`, under
    PRED's lock file; ``overwrite`` False: refused if another process filled PRED since the checks)."""
    out_dir = Path(out_dir)
    with staged_dir(out_dir, "--out", overwrite=overwrite) as tmp:
        for subject, chosen in subjects.items():
            atomic_write_json(tmp / f"{subject}.json", {segment_id: int(i) for segment_id, i in chosen.items()},
                              indent=1)
    return [out_dir / f"{subject}.json" for subject in subjects]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m task1_match_mismatch.predict",
        description="Predict the Task 1 (match-mismatch) test set with a trained run: for every segment, the "
                    "index of the stimulus candidate the model scores highest; one JSON per subject.")
    parser.add_argument("--run", required=True, help="run folder written by task1_match_mismatch/train.py")
    parser.add_argument("--test-set", required=True,
                        help="folder with sub-XXX_mapping.json, preprocessed_eeg/ and stimulus/ "
                             "(DATASET/test_set/TASK1_match_mismatch)")
    parser.add_argument("--out", required=True, help="output folder for the per-subject sub-XXX.json predictions")
    parser.add_argument("--checkpoint", default="best", choices=CHECKPOINTS,
                        help="which checkpoint of the run to use (default: best)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a non-empty OUT (the new folder replaces the old one whole, when complete)")
    parser.add_argument("--control", default="none", choices=tuple(CONTROLS),
                        help="predict a control instead of the real EEG: noise (Gaussian EEG with each subject's "
                             "per-channel mean and std) or mismatched (each segment gets another segment's EEG "
                             "of the same subject); score with python -m evaluation.task1 --noise-predictions / "
                             "--mismatched-predictions (default none)")
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the --control EEG (default 0)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from util.inputs import finite_number

    finite_number(args.seed, "--seed", minimum=0, integer=True)
    check_out_dir(args.out, overwrite=args.overwrite, inputs=[args.run, args.test_set], own=PRED_FILES)
    transform = None if CONTROLS[args.control] is None else CONTROLS[args.control](args.seed)
    subjects = predict_test_set(args.run, args.test_set, args.checkpoint, eeg_transform=transform)
    paths = write_predictions(subjects, args.out, overwrite=args.overwrite)
    n_segments = sum(len(s) for s in subjects.values())
    print(f"wrote {len(paths)} subject files ({n_segments} segments) to {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
