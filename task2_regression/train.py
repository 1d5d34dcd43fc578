"""Train a Task 2 regression model (EEG -> mel / envelope) from a YAML run config.

    python -m task2_regression.train --config task2_regression/configs/vlaai_small.yaml \
        --data DATASET --out runs/vlaai [--epochs N] [--resume] [--average-checkpoints] [train.lr=5e-4 ...]
    torchrun --nproc_per_node 2 -m task2_regression.train ...   # DistributedDataParallel (gloo on CPU)

Config keys and defaults: configs/defaults.yaml. The trained `targets` (default `[target]`) drop
`mel80`/`mag` with one log line when there is no stimulus audio (`--stimulus-audio`, default
DATASET/stimuli). Train/val recordings (`task2_regression.data`) are cut into windows
(`data.sampling`: fixed with `hop_s`, or one random window per recording per epoch); each step is
cross-subject mixup + the combined loss of `task2_regression.loss`; validation is the mean Pearson
of `target` on non-overlapping `val_window_s` windows (`val_pearson`), beside the same model on
noise EEG (`val_noise_eeg`, `evaluation.controls.noise_eeg`) and their difference
(`val_above_noise`), all three in log.csv. `train.select_on: score | above_noise` picks the column
that chooses `best.pt` and early-stops, so an EEG-free output pattern cannot win. The loop, the run folder and DDP are
`util.trainer.fit`'s; `model.type: ridge` is fitted in closed form (streaming covariance, alpha
chosen on val) and saved the same way.

Subjects: ``--holdout-subjects sub-002,sub-005`` (or a count N drawn with ``train.seed``) keeps those
subjects out of train and val and stores them as ``data.holdout_subjects`` in the run's config
(``python -m task2_regression.evaluate --heldout`` scores them as unseen subjects). ``--per-subject``
fits one run per training subject under ``OUT/<subject>/`` (``data.subjects: [subject]``) and writes
``OUT/per_subject.json``, which `task2_regression.predict` and `.evaluate` read. With a single
target, ``cat_wavenet`` is a single-stage WaveNet without cross-attention; a warning says so.
"""
from __future__ import annotations
if not __package__:  # run by path (python task2_regression/train.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from util import config as config_util
from util import distributed, trainer
from util.errors import EEGKitError, run_cli
from util.features import BANDS, FS_TASK2 as FS
from util.outdir import check_out_dir
from util.split_data import (apply_holdout, check_subjects, choose_holdout,  # noqa: F401
                             training_subjects, used_subjects)
from util.windowing import seconds_to_samples
from task2_regression.run_config import DEFAULTS_PATH, SCHEMA_PATH, SUBMITTED_TARGETS, check_config  # noqa: F401

AUDIO_TARGETS = ("mel80", "mag")
TASK = "task2"


# --------------------------------------------------------------------------- config
def resolve_config(config: dict, data_dir: Path, stimulus_audio: str | Path | None = None,
                   say: Callable[[str], None] = print, groups: dict | None = None) -> dict:
    """`check_config`, then the trained targets and subjects against the data; returns a copy.

    ``groups``: `task2_regression.data.discover`'s result for ``data_dir`` when the caller has it.
    """
    from task2_regression import data as split_data
    from task2_regression import stimulus_targets

    cfg = check_config(config)
    target = cfg["target"]
    targets = list(cfg["targets"] or [target])
    data, train = cfg["data"], cfg["train"]
    if data["sampling"] not in ("fixed", "random"):
        raise EEGKitError(f"config: data.sampling must be fixed or random, got {data['sampling']!r}")
    if data["normalize"] not in ("recording", "window", "window_unbiased"):
        raise EEGKitError(f"config: data.normalize must be recording, window or window_unbiased, "
                          f"got {data['normalize']!r}")
    if int(train["mixup"]) not in (0, 1, 2):
        raise EEGKitError(f"config: train.mixup must be 0, 1 or 2, got {train['mixup']!r}")
    if train["select_on"] not in SELECT_ON:
        raise EEGKitError(f"config: train.select_on must be one of {sorted(SELECT_ON)}, got {train['select_on']!r}")

    audio_dir = None
    if any(t in AUDIO_TARGETS for t in targets):
        candidate = Path(stimulus_audio) if stimulus_audio else Path(data_dir) / "stimuli"
        if stimulus_audio and not candidate.is_dir():
            raise EEGKitError(f"{candidate}: stimulus audio folder not found")
        if candidate.is_dir() and stimulus_targets.audio_available(
                split_data.stimuli_of(groups or split_data.discover(split_data.resolve_split_dir(data_dir))), candidate):
            audio_dir = candidate.resolve()
        else:
            dropped = [t for t in targets if t in AUDIO_TARGETS]
            targets = [t for t in targets if t not in AUDIO_TARGETS]
            say(f"no stimulus audio for every stimulus (looked in {candidate}): dropping targets {dropped}, "
                f"training on {targets}")
    if cfg["model"]["type"] == "cat_wavenet" and len(targets) == 1:
        say(f"warning: cat_wavenet with the single target {targets[0]!r} is a single-stage WaveNet with no "
            f"cross-attention (the Ablation-1 shape); the CAT model needs at least two stages, e.g. "
            f"'targets=[envelope, mel]'")
    cfg["targets"] = targets
    data["stimulus_audio_dir"] = str(audio_dir) if audio_dir else None
    from task2_regression.mixing import check_config as check_mixing

    check_mixing(cfg)
    if data["subjects"] or data["holdout_subjects"]:  # checked against the data's subjects
        check_subjects(cfg, groups if groups is not None else
                        split_data.discover(split_data.resolve_split_dir(data_dir)), data_dir)
    return cfg


# --------------------------------------------------------------------------- data
def _windows_dataset(recordings, cfg: dict, features: Sequence[str], kind: str, seed: int):
    from util import windowing

    data = cfg["data"]
    if kind == "val":
        length = min(seconds_to_samples(float(data["val_window_s"])), min(r.n_samples for r in recordings))
        return windowing.FixedWindows(recordings, length, length, features)
    length = seconds_to_samples(float(data["window_s"]))
    if data["sampling"] == "random":
        return windowing.RandomWindowPerRecording(recordings, length, features, seed)
    return windowing.FixedWindows(recordings, length, max(1, seconds_to_samples(float(data["hop_s"]))), features)


def _to_device(batch: dict, keys: Sequence[str], device) -> dict:
    return {key: batch[key].to(device, torch.float32) for key in keys}


def load_split(cfg: dict, data_dir: Path, split: str, cache_dir: Path | None = None, groups: dict | None = None):
    """Recordings of one split with the config's features and normalisation, of the run's subjects only
    (``data.subjects`` or all, minus ``data.holdout_subjects``)."""
    from task2_regression.data import load_recordings

    from task2_regression.mixing import loaded_features
    from task2_regression.predict import model_channels

    features = loaded_features(cfg)  # eeg + targets (the 16-kHz audio in place of mel80/mag: audio_targets mixed)
    audio = cfg["data"].get("stimulus_audio_dir")
    from task2_regression.data import discover, resolve_split_dir

    groups = groups if groups is not None else discover(resolve_split_dir(data_dir))
    try:
        return load_recordings(data_dir, split, features=features, stimulus_audio_dir=audio, cache_dir=cache_dir,
                               normalize=cfg["data"]["normalize"], groups=groups, n_channels=model_channels(cfg),
                               subjects=used_subjects(cfg, groups))
    except EEGKitError as error:
        if "EEG must have" in str(error) and model_channels(cfg) != 64:
            raise EEGKitError(f"config: model.n_channels={model_channels(cfg)} does not match the data: {error}") from None
        raise


def check_windows(recordings, cfg: dict, split: str, data_dir) -> None:
    """Refuse a split where no recording is as long as the training window (before anything is written)."""
    window = seconds_to_samples(float(cfg["data"]["window_s"]))
    lengths = sorted(r.n_samples for r in recordings)
    if not lengths:
        raise EEGKitError(f"{data_dir}: no {split} recordings")
    if split == "train" and lengths[-1] < window:
        raise EEGKitError(
            f"{data_dir}: no training windows: data.window_s={float(cfg['data']['window_s']):g} s but the "
            f"{len(lengths)} {split} recordings are {lengths[0] / FS:.1f}-{lengths[-1] / FS:.1f} s long; "
            f"use a shorter data.window_s (or longer recordings)")


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def validate(model: torch.nn.Module, dataset, target: str, info, batch_size: int = 8,
             noise_seed: int | None = None) -> float:
    """Mean (over windows and bands) Pearson r of `target` on `dataset`, averaged over all ranks.

    ``noise_seed``: score the noise-EEG control instead: each window's EEG is replaced by Gaussian
    EEG with that window's per-channel mean and std (`evaluation.controls.noise_eeg`), drawn from
    ``(noise_seed, window index)`` so every epoch and every rank sees the same noise.
    """
    from evaluation.controls import noise_eeg
    from util.metrics import pearson_torch

    # an exact partition of the windows over ranks (no padding), so every window counts once
    indices = np.arange(len(dataset))[info.rank :: info.world_size]
    score_sum, count = 0.0, 0
    for batch in trainer.batches(dataset, indices, batch_size):
        if noise_seed is not None:
            batch["eeg"] = torch.from_numpy(np.stack([
                noise_eeg(eeg.numpy(), np.random.default_rng([noise_seed, int(index)]))
                for eeg, index in zip(batch["eeg"], batch["index"])]))  # (batch, time, 64)
        batch = _to_device(batch, ("eeg", target), info.device)
        pred = model(batch["eeg"])[target]  # (batch, time_out, bands)
        r = pearson_torch(pred, batch[target][:, : pred.shape[1]])  # (batch, bands)
        score_sum += float(r.mean(dim=1).sum())
        count += r.shape[0]
    total = distributed.all_reduce_sum(score_sum, info)
    n = distributed.all_reduce_sum(count, info)
    return total / max(n, 1)


SELECT_ON = {"score": "val_pearson", "above_noise": "val_above_noise"}  # train.select_on -> log.csv column


def validation_scores(model: torch.nn.Module, dataset, target: str, info, seed: int = 0) -> dict:
    """The validation columns of log.csv: the score, its noise-EEG control and the score above it."""
    value = validate(model, dataset, target, info)
    noise = validate(model, dataset, target, info, noise_seed=seed)
    return {"val_pearson": value, "val_noise_eeg": noise, "val_above_noise": value - noise}


# --------------------------------------------------------------------------- ridge
def _fit_ridge(model, cfg: dict, train_recs, val_recs, info, say) -> tuple:
    """Closed-form fit: streaming covariance over non-overlapping train windows, alpha chosen on val.

    Returns (val score, its noise-EEG control)."""
    from util import windowing

    # the streaming chunk is cut to the shortest recording, so short recordings still count
    length = min(seconds_to_samples(float(cfg["data"]["window_s"])), min(r.n_samples for r in train_recs))
    features = ("eeg",) + tuple(cfg["targets"])
    train_set = windowing.FixedWindows(train_recs, length, length, features)
    batch_size = int(cfg["data"]["batch_size"])
    for batch in trainer.batches(train_set, np.arange(len(train_set)), batch_size,
                                 trainer.show_progress(info), "ridge covariance"):
        model.partial_fit(batch["eeg"], {name: batch[name] for name in cfg["targets"]})
    val_set = _windows_dataset(val_recs, cfg, features, "val", 0)
    val_pairs = []
    for i in range(len(val_set)):
        item = val_set[i]
        val_pairs.append((item["eeg"], {name: item[name] for name in cfg["targets"]}))
    scores = model.select_alpha(cfg["model"].get("alphas"), val_pairs)
    say(f"ridge: val score per alpha {({a: round(s, 4) for a, s in scores.items()})}; chose alpha={float(model.alpha):g}"
        " (on the score: a linear decoder's noise-EEG control is ~0 whatever alpha)")
    noise = validate(model, val_set, cfg["target"], info, noise_seed=int(cfg["train"]["seed"]))
    return float(max(scores.values())), noise


def _save_ridge(model, cfg: dict, out_dir: Path, val_score: float, seconds: float, val_noise: float,
                overwrite: bool = False) -> None:
    from util.ridge import save_ridge_run

    save_ridge_run(model, cfg, out_dir, {"epoch": 0, "val_pearson": val_score, "val_noise_eeg": val_noise,
                                         "val_above_noise": val_score - val_noise, "alpha": float(model.alpha),
                                         "time_s": round(seconds, 2)}, "val_pearson", TASK, overwrite)


# --------------------------------------------------------------------------- training
def make_step(cfg: dict, info) -> Callable:
    """``step(model, batch, epoch) -> (loss, terms)``: the batch transform of `task2_regression.mixing`
    (mixup, mel80/mag from the mixed audio, z-score after mixing, as the config says), then the combined loss."""
    from task2_regression.loss import MultiTargetLoss
    from task2_regression.mixing import make_batch_transform

    transform = make_batch_transform(cfg, info.device)
    loss_fn = MultiTargetLoss.from_config(cfg["loss"])
    seed, mixup_times = int(cfg["train"]["seed"]), int(cfg["train"]["mixup"])
    generators: dict[int, torch.Generator] = {}

    def step(model, batch, epoch):
        if mixup_times and epoch not in generators:
            generators.clear()
            generators[epoch] = torch.Generator().manual_seed(seed * 100003 + epoch * 1009 + info.rank)
        batch = transform(batch, generators.get(epoch))  # {eeg, target: (batch', time, C)} on the device
        return loss_fn(model(batch["eeg"]), batch)  # outputs {target: (batch, time_out, bands)}

    return step


def train(config: dict, data_dir, out_dir, epochs: int | None = None, resume: bool = False,
          stimulus_audio: str | Path | None = None, average: bool = False, cache_dir: str | Path | None = None,
          say: Callable[[str], None] | None = None, holdout: str | None = None, overwrite: bool = False,
          device: str | None = None) -> dict:
    """Train (or resume) one run; returns {'best_val', 'epochs_run', 'stopped_early', 'out_dir', 'targets'}.

    config: a loaded config dict (overrides already applied); data_dir: dataset root (or split_data);
    out_dir: run folder; holdout: ``--holdout-subjects`` ('sub-002,sub-005' or a count), stored in the
    run's config as ``data.holdout_subjects`` (kept out of train and val). Under torchrun the process
    group is joined here and left at the end.
    """
    from task2_regression import data
    from task2_regression.mixing import loaded_features
    from task2_regression.models import build_model

    say = say or (lambda message: print(message, flush=True))
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    config = trainer.with_epochs(config, epochs)
    info = distributed.init_distributed(device)
    speak = say if info.is_main else (lambda message: None)
    try:
        check_out_dir(out_dir, overwrite=overwrite, resume=resume, resumable=True, inputs=[data_dir])
        if not data_dir.is_dir():
            raise EEGKitError(f"{data_dir}: dataset folder not found")
        groups = data.discover(data.resolve_split_dir(data_dir))  # the folder is listed once
        cfg = resolve_config(config, data_dir, stimulus_audio, say=speak, groups=groups)
        cfg = apply_holdout(cfg, holdout, groups, data_dir)
        if resume:
            trainer.check_resume(cfg, out_dir, TASK)
        targets, target = list(cfg["targets"]), cfg["target"]
        train_recs = load_split(cfg, data_dir, "train", cache_dir, groups)
        val_recs = load_split(cfg, data_dir, "val", cache_dir, groups)
        held_out = cfg["data"]["holdout_subjects"]
        speak(f"data: {len(train_recs)} train / {len(val_recs)} val recordings of "
              f"{len(used_subjects(cfg, groups))} subject(s), targets {targets}, world size {info.world_size}"
              + (f"; held-out subjects (not trained on, not validated on) {', '.join(held_out)}" if held_out else ""))
        build = lambda: build_model(cfg["model"], {name: BANDS[name] for name in targets})  # noqa: E731

        if cfg["model"]["type"] == "ridge":
            started = time.time()
            model = build()
            val_score, val_noise = _fit_ridge(model, cfg, train_recs, val_recs, info, speak)
            if info.is_main:
                _save_ridge(model, cfg, out_dir, val_score, time.time() - started, val_noise,
                            overwrite=overwrite or resume)
            distributed.barrier(info)
            return {"best_val": val_score, "epochs_run": 0, "stopped_early": False, "out_dir": str(out_dir),
                    "targets": targets, "val_noise_eeg": val_noise, "select_on": "score"}

        seed = int(cfg["train"]["seed"])
        check_windows(train_recs, cfg, "train", data_dir)  # ridge streams whole recordings; windows only here
        check_windows(val_recs, cfg, "val", data_dir)
        train_set = _windows_dataset(train_recs, cfg, list(loaded_features(cfg)), "train", seed)
        val_set = _windows_dataset(val_recs, cfg, ["eeg", target], "val", seed)
        score = lambda model, dataset, rank_info: validation_scores(model, dataset, target, rank_info, seed)  # noqa: E731
        monitor = SELECT_ON[cfg["train"]["select_on"]]
        speak(f"model selection (best.pt, early stopping) on {monitor} (train.select_on: {cfg['train']['select_on']})")
        result = trainer.fit(cfg, out_dir, info, build, make_step(cfg, info), score, train_set, val_set,
                             int(cfg["data"]["batch_size"]), monitor, resume=resume, average=average,
                             say=say, task=TASK, overwrite=overwrite)
        return {**result, "targets": targets, "select_on": cfg["train"]["select_on"]}
    finally:
        distributed.cleanup(info)




def train_per_subject(config: dict, data_dir, out_dir, holdout: str | None = None,
                      say: Callable[[str], None] | None = None, **kwargs) -> dict:
    """One run per training subject under ``out_dir/<subject>/`` (``data.subjects: [subject]`` each).

    Held-out subjects get no model. Writes ``out_dir/per_subject.json`` ``{"subjects": {subject: folder},
    "holdout_subjects": [...]}`` (the marker `task2_regression.predict` and `.evaluate` read) last, so a
    folder without it is not a finished per-subject run. Returns {'runs': {subject: result}, 'out_dir'}.
    """
    from task2_regression import data
    from task2_regression.predict import PER_SUBJECT_FILE
    from util.atomic import atomic_write_json

    say = say or (lambda message: print(message, flush=True))
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    check_out_dir(out_dir, overwrite=kwargs.get("overwrite", False), resume=kwargs.get("resume", False),
                  resumable=True, inputs=[data_dir])  # the parent folder too: never the dataset or inside it
    if config.get("data", {}).get("subjects"):
        raise EEGKitError("--per-subject: the config already restricts data.subjects; leave it out "
                          "(every training subject gets its own run)")
    groups = data.discover(data.resolve_split_dir(data_dir))
    cfg = apply_holdout(resolve_config(config, data_dir, kwargs.get("stimulus_audio"), say=lambda m: None,
                                       groups=groups), holdout, groups, data_dir)
    subjects = used_subjects(cfg, groups)
    say(f"per-subject: {len(subjects)} runs under {out_dir} ({', '.join(subjects)})")
    runs = {}
    for subject in subjects:
        one = copy.deepcopy(config)
        one.setdefault("data", {})["subjects"] = [subject]
        one["data"]["holdout_subjects"] = list(cfg["data"]["holdout_subjects"])
        say(f"--- {subject}")
        runs[subject] = train(one, data_dir, out_dir / subject, say=say, **kwargs)
    if int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(out_dir / PER_SUBJECT_FILE, {
            "kind": "per_subject", "subjects": {subject: subject for subject in subjects},
            "holdout_subjects": list(cfg["data"]["holdout_subjects"]),
            "best_val": {subject: runs[subject]["best_val"] for subject in subjects}}, indent=1)
    return {"runs": runs, "out_dir": str(out_dir)}


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a Task 2 regression model (EEG -> mel/envelope) from a YAML config. "
                    "Run under `torchrun --nproc_per_node K` for DistributedDataParallel training.")
    parser.add_argument("--config", required=True, help="run config YAML (see task2_regression/configs/)")
    parser.add_argument("--data", required=True,
                        help="dataset root holding derivatives/split_data/ (or the split_data folder itself)")
    trainer.add_run_arguments(parser)  # --out --epochs --resume --overwrite --device
    parser.add_argument("--stimulus-audio", default=None,
                        help="folder with the stimulus audio ({stimulus}.wav/.npz) for the mel80/mag targets "
                             "(default: DATA/stimuli when present; without audio those targets are dropped)")
    parser.add_argument("--average-checkpoints", action="store_true",
                        help="keep periodic checkpoints (train.checkpoint_every, default every epoch) and write "
                             "OUT/averaged.pt = uniform average of them, key by key (same as "
                             "train.average_checkpoints=true)")
    parser.add_argument("--cache-dir", default=None,
                        help="cache folder for mel80/mag targets (default: DATA/derivatives/stimulus_targets)")
    parser.add_argument("--holdout-subjects", default=None, metavar="LIST|N",
                        help="keep these training subjects out of train AND val, for a subject-independent score "
                             "without a test set: names (sub-002,sub-005) or a count N drawn with train.seed. "
                             "Stored in the run's config (data.holdout_subjects); "
                             "`python -m task2_regression.evaluate --heldout` scores them")
    parser.add_argument("--per-subject", action="store_true",
                        help="fit one model per training subject, each its own run folder OUT/<subject>/ "
                             "(data.subjects: [subject]), plus OUT/per_subject.json; predict.py and evaluate.py "
                             "take OUT and use each subject's own model")
    parser.add_argument("overrides", nargs="*", help="config overrides as dotted.key=value, e.g. train.lr=5e-4")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_util.load_config(args.config, args.overrides)
    options = dict(epochs=args.epochs, resume=args.resume, stimulus_audio=args.stimulus_audio,
                   average=args.average_checkpoints, cache_dir=args.cache_dir, overwrite=args.overwrite,
                   device=args.device)
    if args.per_subject:
        result = train_per_subject(cfg, args.data, args.out, holdout=args.holdout_subjects, **options)
        if int(os.environ.get("RANK", "0")) == 0:
            scores = ", ".join(f"{s} {r['best_val']:.4f}" for s, r in result["runs"].items())
            print(f"done: {len(result['runs'])} per-subject runs (best val Pearson {scores}) -> {result['out_dir']}")
        return 0
    result = train(cfg, args.data, args.out, holdout=args.holdout_subjects, **options)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: best {SELECT_ON[result['select_on']]} {result['best_val']:.4f} ({result['epochs_run']} epochs) "
              f"-> {result['out_dir']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
