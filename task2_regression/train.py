"""Train a Task 2 regression model (EEG -> mel / envelope) from a YAML run config.

    python task2_regression/train.py --config task2_regression/configs/vlaai_small.yaml \
        --data DATASET --out runs/vlaai [--epochs N] [--resume] [--average-checkpoints] [train.lr=5e-4 ...]
    torchrun --nproc_per_node 2 task2_regression/train.py ...   # DistributedDataParallel (gloo on CPU)

What it does (config schema: docs/DESIGN.md, "Task 2 run config schema"):
- resolves the trained targets (`targets`, default `[target]`); `mel80`/`mag` need the stimulus
  audio (`--stimulus-audio`, default `DATASET/stimuli` when present) and are dropped with one log
  line otherwise (the Ablation-2 shape of the CAT-guided WaveNet);
- loads the train and val splits with `util.split_data.load_recordings` (normalize: recording |
  window), windows them (`data.sampling`: fixed windows with `hop_s`, or one random window per
  recording per epoch) and trains with Adam, StepLR, cross-subject mixup, gradient clipping and the
  combined loss of `task2_regression.loss`;
- validates every epoch on fixed non-overlapping `val_window_s` windows (mean Pearson over the
  bands of the submitted `target`), early-stops on it, and writes into RUN/:
  `best.pt`, `last.pt` (+ `checkpoints/epoch_XXXX.pt` every `train.checkpoint_every` epochs, and
  `averaged.pt` with `--average-checkpoints`), `config.yaml` (fully resolved), `log.csv` (each loss
  term, val score, lr) and `curves.png`;
- `model.type: ridge` is fitted in closed form (streaming covariance over the train windows, alpha
  chosen on the validation windows) and saved the same way;
- under torchrun, windows are sharded per rank with `util.distributed.shard_indices` (per-rank batch
  = global batch / world size), only rank 0 writes, and the validation metric is averaged over ranks.
"""
from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

if __package__ in (None, ""):  # `python task2_regression/train.py` / torchrun: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from tqdm import tqdm

from util import config as config_util
from util import distributed
from util.errors import EEGKitError, run_cli
from util.features import BANDS, FS_TASK2

FS = FS_TASK2
AUDIO_TARGETS = ("mel80", "mag")
log = logging.getLogger("task2.train")


# --------------------------------------------------------------------------- config
def resolve_config(config: dict, data_dir: Path, stimulus_audio: str | Path | None = None,
                   say: Callable[[str], None] = print) -> dict:
    """Fill defaults and resolve the trained targets; returns the fully-resolved config (a copy)."""
    from util import stimulus_targets
    from util.split_data import resolve_split_dir

    cfg = copy.deepcopy(config)
    target = cfg.setdefault("target", "mel")
    if target not in ("mel", "envelope"):
        raise EEGKitError(f"config: target must be 'mel' or 'envelope', got {target!r}")
    targets = list(cfg.get("targets") or [target])
    unknown = [t for t in targets if t not in BANDS]
    if unknown:
        raise EEGKitError(f"config: unknown targets {unknown} (known: {list(BANDS)})")
    if target not in targets:
        raise EEGKitError(f"config: the submitted target {target!r} is not in targets {targets}")
    if "model" not in cfg or "type" not in cfg["model"]:
        raise EEGKitError("config: missing model.type")

    data = cfg.setdefault("data", {})
    data.setdefault("window_s", 5.0)
    data.setdefault("hop_s", 1.0)
    data.setdefault("sampling", "fixed")
    data.setdefault("normalize", "recording")
    data.setdefault("batch_size", 64)
    data.setdefault("val_window_s", 30.0)
    if data["sampling"] not in ("fixed", "random"):
        raise EEGKitError(f"config: data.sampling must be fixed or random, got {data['sampling']!r}")
    if data["normalize"] not in ("recording", "window"):
        raise EEGKitError(f"config: data.normalize must be recording or window, got {data['normalize']!r}")
    train = cfg.setdefault("train", {})
    for key, value in {"epochs": 50, "lr": 1e-3, "betas": [0.9, 0.999], "patience": 5, "seed": 0, "mixup": 0,
                       "lr_step_epochs": 0, "lr_gamma": 0.9, "grad_clip": 0.0, "checkpoint_every": 0}.items():
        train.setdefault(key, value)
    if int(train["mixup"]) not in (0, 1, 2):
        raise EEGKitError(f"config: train.mixup must be 0, 1 or 2, got {train['mixup']!r}")
    loss = cfg.setdefault("loss", {})
    for key, value in {"pearson": 1.0, "l1": 0.0, "kl": 0.0}.items():
        loss.setdefault(key, value)

    audio_dir = None
    if any(t in AUDIO_TARGETS for t in targets):
        split_dir = resolve_split_dir(data_dir)
        candidate = Path(stimulus_audio) if stimulus_audio else Path(data_dir) / "stimuli"
        if stimulus_audio and not candidate.is_dir():
            raise EEGKitError(f"{candidate}: stimulus audio folder not found")
        if candidate.is_dir() and stimulus_targets.audio_available(split_dir, candidate):
            audio_dir = candidate.resolve()
        else:
            dropped = [t for t in targets if t in AUDIO_TARGETS]
            targets = [t for t in targets if t not in AUDIO_TARGETS]
            say(f"no stimulus audio for every stimulus (looked in {candidate}): dropping targets {dropped}, "
                f"training on {targets}")
    cfg["targets"] = targets
    data["stimulus_audio_dir"] = str(audio_dir) if audio_dir else None
    return cfg


# --------------------------------------------------------------------------- data
def _windows_dataset(recordings, cfg: dict, features: Sequence[str], kind: str, seed: int):
    from util import windowing

    data = cfg["data"]
    if kind == "val":
        length = int(round(float(data["val_window_s"]) * FS))
        length = min(length, min(r.n_samples for r in recordings))
        return windowing.FixedWindows(recordings, length, length, features)
    length = int(round(float(data["window_s"]) * FS))
    if data["sampling"] == "random":
        return windowing.RandomWindowPerRecording(recordings, length, features, seed)
    return windowing.FixedWindows(recordings, length, max(1, int(round(float(data["hop_s"]) * FS))), features)


def _collate(dataset, indices) -> dict:
    items = [dataset[int(i)] for i in indices]
    return torch.utils.data.default_collate(items)


def _batches(dataset, indices: np.ndarray, batch_size: int):
    for start in range(0, len(indices), batch_size):
        yield _collate(dataset, indices[start : start + batch_size])


def _to_device(batch: dict, keys: Sequence[str], device) -> dict:
    return {key: batch[key].to(device, torch.float32) for key in keys}


def load_split(cfg: dict, data_dir: Path, split: str, cache_dir: Path | None = None):
    """Recordings of one split with the config's features and normalisation."""
    from util.split_data import load_recordings

    features = ("eeg",) + tuple(cfg["targets"])
    audio = cfg["data"].get("stimulus_audio_dir")
    return load_recordings(data_dir, split, features=features, stimulus_audio_dir=audio, cache_dir=cache_dir,
                           normalize=cfg["data"]["normalize"])


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def validate(model: torch.nn.Module, dataset, target: str, info, batch_size: int = 8) -> float:
    """Mean (over windows and bands) Pearson r of `target` on `dataset`, averaged over all ranks."""
    from util.losses import pearson_r

    model.eval()
    # an exact partition of the windows over ranks (no padding), so every window counts once
    indices = np.arange(len(dataset))[info.rank :: info.world_size]
    score_sum, count = 0.0, 0
    for batch in _batches(dataset, indices, batch_size):
        batch = _to_device(batch, ("eeg", target), info.device)
        pred = model(batch["eeg"])[target]  # (batch, time_out, bands)
        time_out = pred.shape[1]
        r = pearson_r(pred, batch[target][:, :time_out])  # (batch, bands)
        score_sum += float(r.mean(dim=1).sum())
        count += r.shape[0]
    model.train()
    total = distributed.all_reduce_sum(score_sum, info)
    n = distributed.all_reduce_sum(count, info)
    return total / max(n, 1)


# --------------------------------------------------------------------------- RNG state
def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


# --------------------------------------------------------------------------- ridge
def _fit_ridge(model, cfg: dict, train_recs, val_recs, info, say) -> float:
    """Closed-form fit: streaming covariance over non-overlapping train windows, alpha chosen on val."""
    from util import windowing

    length = int(round(float(cfg["data"]["window_s"]) * FS))
    features = ("eeg",) + tuple(cfg["targets"])
    train_set = windowing.FixedWindows(train_recs, length, length, features)
    batch_size = int(cfg["data"]["batch_size"])
    indices = np.arange(len(train_set))
    for batch in tqdm(_batches(train_set, indices, batch_size), total=math.ceil(len(indices) / batch_size),
                      desc="ridge covariance", disable=not info.is_main):
        model.partial_fit(batch["eeg"], {name: batch[name] for name in cfg["targets"]})
    val_set = _windows_dataset(val_recs, cfg, features, "val", 0)
    val_pairs = []
    for i in range(len(val_set)):
        item = val_set[i]
        val_pairs.append((item["eeg"], {name: item[name] for name in cfg["targets"]}))
    alphas = cfg["model"].get("alphas")
    scores = model.select_alpha(alphas, val_pairs)
    say(f"ridge: val score per alpha {({a: round(s, 4) for a, s in scores.items()})}; chose alpha={float(model.alpha):g}")
    return float(max(scores.values()))


# --------------------------------------------------------------------------- training
def train(config: dict, data_dir, out_dir, epochs: int | None = None, resume: bool = False,
          stimulus_audio: str | Path | None = None, average: bool = False, cache_dir: str | Path | None = None,
          say: Callable[[str], None] | None = None) -> dict:
    """Train (or resume) one run; returns {'best_val', 'epochs_run', 'out_dir', 'targets'}.

    config: a loaded config dict (overrides already applied); data_dir: dataset root (or split_data);
    out_dir: run folder. Under torchrun the process group is joined here and left at the end.
    """
    from task2_regression.loss import MultiTargetLoss
    from task2_regression.models import build_model
    from util import training
    from util.mixup import cross_subject_mixup

    info = distributed.init_distributed()
    say = say or (lambda message: print(message, flush=True))
    speak = (lambda message: say(message)) if info.is_main else (lambda message: None)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    try:
        cfg = resolve_config(config, data_dir, stimulus_audio, say=speak)
        if epochs is not None:
            cfg["train"]["epochs"] = int(epochs)
        tcfg, dcfg = cfg["train"], cfg["data"]
        seed = int(tcfg["seed"])
        training.seed_everything(seed)  # same on every rank: identical initial weights
        targets = list(cfg["targets"])
        target = cfg["target"]
        keys = ["eeg"] + targets

        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            config_util.save_config(cfg, out_dir / "config.yaml")
        train_recs = load_split(cfg, data_dir, "train", cache_dir)
        val_recs = load_split(cfg, data_dir, "val", cache_dir)
        speak(f"data: {len(train_recs)} train / {len(val_recs)} val recordings, targets {targets}, "
              f"world size {info.world_size}")

        model = build_model(cfg["model"], {name: BANDS[name] for name in targets})
        csv_logger = training.CSVLogger(out_dir / "log.csv") if info.is_main else None

        if getattr(model, "closed_form", False):
            start = time.time()
            val_score = _fit_ridge(model, cfg, train_recs, val_recs, info, speak)
            if info.is_main:
                extra = {"epoch": 0, "best_val": val_score, "kind": "closed_form"}
                training.save_checkpoint(out_dir / "best.pt", model, cfg, extra=extra)
                training.save_checkpoint(out_dir / "last.pt", model, cfg, extra=extra)
                csv_logger.log({"epoch": 0, "val_pearson": val_score, "alpha": float(model.alpha),
                                "time_s": round(time.time() - start, 2)})
                training.plot_curves(out_dir / "log.csv", out_dir / "curves.png", title=f"{out_dir.name} (ridge)")
            distributed.barrier(info)
            return {"best_val": val_score, "epochs_run": 0, "out_dir": str(out_dir), "targets": targets}

        model = distributed.wrap_ddp(model, info)
        core = distributed.unwrap(model)
        optimizer = torch.optim.Adam(core.parameters(), lr=float(tcfg["lr"]),
                                     betas=tuple(float(b) for b in tcfg["betas"]))
        step_epochs = int(tcfg["lr_step_epochs"])
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(step_epochs, 1),
                                                    gamma=float(tcfg["lr_gamma"]) if step_epochs > 0 else 1.0)
        early = training.EarlyStopping(int(tcfg["patience"]), mode="max")
        loss_fn = MultiTargetLoss.from_config(cfg["loss"])
        start_epoch, best_val = 0, -math.inf

        if resume:
            last = out_dir / "last.pt"
            if not last.is_file():
                raise EEGKitError(f"{last}: no checkpoint to resume from")
            state = training.load_checkpoint(last, map_location=info.device)
            core.load_state_dict(state["model"])
            if state.get("optimizer") is not None:
                optimizer.load_state_dict(state["optimizer"])
            if state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            extra = state.get("extra") or {}
            start_epoch = int(extra.get("epoch", -1)) + 1
            best_val = float(extra.get("best_val", -math.inf))
            if extra.get("early_stopping") is not None:
                early.load_state_dict(extra["early_stopping"])
            if extra.get("rng") is not None:
                _set_rng_state(extra["rng"])
            if csv_logger is not None:
                csv_logger.truncate(start_epoch)  # drop rows logged after the checkpoint was taken
            speak(f"resumed from {last} at epoch {start_epoch}")

        train_set = _windows_dataset(train_recs, cfg, keys, "train", seed)
        val_set = _windows_dataset(val_recs, cfg, ["eeg", target], "val", seed)
        global_batch = int(dcfg["batch_size"])
        if global_batch % info.world_size:
            raise EEGKitError(f"config: data.batch_size {global_batch} is not divisible by world size {info.world_size}")
        rank_batch = global_batch // info.world_size
        n_epochs = int(tcfg["epochs"])
        ckpt_every = int(tcfg["checkpoint_every"]) or (1 if average else 0)
        mixup_times = int(tcfg["mixup"])
        grad_clip = float(tcfg["grad_clip"])
        epochs_run = 0

        for epoch in range(start_epoch, n_epochs):
            if early.should_stop:
                speak(f"early stopping already triggered (patience {tcfg['patience']}); nothing to do")
                break
            epoch_start = time.time()
            if hasattr(train_set, "set_epoch"):
                train_set.set_epoch(epoch)
            indices = distributed.shard_indices(len(train_set), info, epoch=epoch, seed=seed, shuffle=True)
            mix_gen = torch.Generator().manual_seed(seed * 100003 + epoch * 1009 + info.rank)
            sums: dict[str, float] = {}
            n_steps = math.ceil(len(indices) / rank_batch)
            model.train()
            for batch in tqdm(_batches(train_set, indices, rank_batch), total=n_steps, leave=False,
                              desc=f"epoch {epoch}", disable=not info.is_main):
                if mixup_times:
                    batch = cross_subject_mixup(batch, keys, times=mixup_times, generator=mix_gen)
                batch = _to_device(batch, keys, info.device)
                outputs = model(batch["eeg"])  # {target: (batch, time_out, bands)}
                loss, terms = loss_fn(outputs, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(core.parameters(), grad_clip)
                optimizer.step()
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0.0) + value
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            val_score = validate(core, val_set, target, info)
            improved = early.step(val_score)
            best_val = max(best_val, val_score)
            epochs_run += 1
            # every rank calls the all-reduce (same keys everywhere): logged losses are the all-rank mean
            mean_terms = {f"loss_{name}": distributed.all_reduce_mean(value / max(n_steps, 1), info)
                          for name, value in sorted(sums.items())}
            if info.is_main:
                row = {"epoch": epoch, "lr": lr}
                row.update(mean_terms)
                row.update({"val_pearson": val_score, "time_s": round(time.time() - epoch_start, 2)})
                csv_logger.log(row)
                extra = {"epoch": epoch, "best_val": best_val, "val_pearson": val_score,
                         "early_stopping": early.state_dict(), "rng": _rng_state()}
                if improved:
                    training.save_checkpoint(out_dir / "best.pt", core, cfg, extra=extra)
                training.save_checkpoint(out_dir / "last.pt", core, cfg, optimizer, scheduler, extra=extra)
                if ckpt_every and (epoch + 1) % ckpt_every == 0:
                    training.save_checkpoint(out_dir / "checkpoints" / f"epoch_{epoch:04d}.pt", core, cfg, extra=extra)
                speak(f"epoch {epoch}: loss {row.get('loss_total', float('nan')):.4f} val {val_score:.4f} "
                      f"lr {lr:.2e}{' (best)' if improved else ''}")
            distributed.barrier(info)
            if early.should_stop:
                speak(f"early stopping at epoch {epoch} (no improvement for {tcfg['patience']} epochs)")
                break

        if average and info.is_main:
            paths = sorted((out_dir / "checkpoints").glob("epoch_*.pt"))
            if not paths:
                raise EEGKitError(f"{out_dir / 'checkpoints'}: no periodic checkpoints to average")
            core.load_state_dict(training.average_checkpoints(paths))
            avg_score = validate(core, val_set, target, distributed.DistInfo(0, 1, 0, info.device))
            training.save_checkpoint(out_dir / "averaged.pt", core, cfg,
                                     extra={"averaged": [p.name for p in paths], "val_pearson": avg_score})
            speak(f"averaged {len(paths)} checkpoints -> {out_dir / 'averaged.pt'} (val {avg_score:.4f})")
        if info.is_main and (out_dir / "log.csv").is_file():
            training.plot_curves(out_dir / "log.csv", out_dir / "curves.png", title=out_dir.name)
        distributed.barrier(info)
        return {"best_val": best_val, "epochs_run": epochs_run, "out_dir": str(out_dir), "targets": targets}
    finally:
        distributed.cleanup(info)


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a Task 2 regression model (EEG -> mel/envelope) from a YAML config. "
                    "Run under `torchrun --nproc_per_node K` for DistributedDataParallel training.")
    parser.add_argument("--config", required=True, help="run config YAML (see task2_regression/configs/)")
    parser.add_argument("--data", required=True,
                        help="dataset root holding derivatives/split_data/ (or the split_data folder itself)")
    parser.add_argument("--out", required=True, help="run folder for checkpoints, config.yaml, log.csv, curves.png")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/last.pt (model, optimizer, scheduler, epoch, early stopping, RNG)")
    parser.add_argument("--stimulus-audio", default=None,
                        help="folder with the stimulus audio ({stimulus}.wav/.npz) for the mel80/mag targets "
                             "(default: DATA/stimuli when present; without audio those targets are dropped)")
    parser.add_argument("--average-checkpoints", action="store_true",
                        help="keep periodic checkpoints (train.checkpoint_every, default every epoch) and write "
                             "OUT/averaged.pt = uniform average of them")
    parser.add_argument("--cache-dir", default=None,
                        help="cache folder for mel80/mag targets (default: DATA/derivatives/stimulus_targets)")
    parser.add_argument("overrides", nargs="*", help="config overrides as dotted.key=value, e.g. train.lr=5e-4")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_util.load_config(args.config, args.overrides)
    result = train(cfg, args.data, args.out, epochs=args.epochs, resume=args.resume,
                   stimulus_audio=args.stimulus_audio, average=args.average_checkpoints, cache_dir=args.cache_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: best val Pearson {result['best_val']:.4f} ({result['epochs_run']} epochs) -> {result['out_dir']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
