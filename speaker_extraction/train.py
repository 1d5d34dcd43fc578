"""Train an EEG-guided speaker extractor (NeuroSpex) on KUL-format data.

    python speaker_extraction/train.py --config speaker_extraction/configs/neurospex_small.yaml \
        --data DATA --out RUN [--epochs N] [--resume] [train.lr=1e-4 ...]
    torchrun --nproc_per_node 2 -m speaker_extraction.train --config ... --data ... --out ...

- Loss: negative zero-mean SI-SDR (`speaker_extraction.loss`); Adam
  (``train.lr``, ``train.betas``); gradient-norm clipping (``train.grad_clip``,
  0 = off); optional halving of the learning rate when validation SI-SDR stalls
  (``train.lr_decay_patience``, 0 = off).
- Windows come from `speaker_extraction.data` (trial split by default, never
  random windows inside a trial). Each epoch the training windows are
  shuffled with a seeded permutation and sharded over ranks
  (`util.distributed.shard_indices`); validation windows are split over ranks
  and SI-SDR / SI-SDRi sums are all-reduced.
- Early stopping on mean validation SI-SDR (``train.patience``).
- RUN gets ``best.pt`` and ``last.pt`` (model + fully resolved config +
  optimiser + epoch + early-stopping state, atomic), ``config.yaml``,
  ``log.csv`` (epoch, train_loss, val_si_sdr, val_si_sdri, lr, seconds) and
  ``curves.png``; only rank 0 writes. ``--resume`` continues from ``last.pt``.
- ``train.crop_s`` (0 = off): train on a random crop of that length from every
  window (offsets seeded by ``[seed, epoch]``, identical on all ranks). The
  model is length-agnostic; validation and evaluation keep the full windows.
  Cross-attention is quadratic in frames, so 2-s crops make a step ~4x cheaper.
- ``train.batch_size`` is the global batch: under torchrun each of the
  ``world_size`` processes takes ``batch_size / world_size`` windows of every
  step (it must divide) and DDP averages the gradients, so a run gives the same
  weights on 1 or N processes.
- ``train.threads`` (0 = torch default): intra-op threads of each process.
- Quick-run knobs: ``train.max_steps_per_epoch`` and ``train.max_val_windows``
  (0 = all).

Library API: `resolve_config(config) -> config`, `train(config, data_dir, out_dir, ...) -> dict`,
`main(argv)`.
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Sequence

if __package__ in (None, ""):  # `python speaker_extraction/train.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from speaker_extraction.loss import neg_si_sdr_loss, si_sdr_torch
from util.config import get, load_config, save_config
from util.distributed import (all_reduce_mean, all_reduce_sum, barrier, cleanup, init_distributed, shard_indices,
                              unwrap, wrap_ddp)
from util.errors import EEGKitError, run_cli
from util.training import CSVLogger, EarlyStopping, load_checkpoint, plot_curves, save_checkpoint, seed_everything

TRAIN_DEFAULTS = {
    "epochs": 30, "lr": 1.0e-4, "betas": [0.9, 0.999], "batch_size": 16, "patience": 5, "grad_clip": 5.0,
    "seed": 0, "lr_decay_patience": 0, "max_steps_per_epoch": 0, "max_val_windows": 0, "num_workers": 0,
    "crop_s": 0.0, "threads": 0,
}


def resolve_config(config: dict) -> dict:
    """Fill defaults: ``data`` from `speaker_extraction.data.DEFAULT_CONFIG`, ``train`` from TRAIN_DEFAULTS.

    One schema (the one of `speaker_extraction.data` and ``configs/data_default.yaml``):
    ``data.band`` (not ``eeg_band``), ``data.split`` a mapping ``{protocol, val_trials,
    test_trials, test_subject, seed}`` (keys left out take the defaults), and the
    per-process batch size in ``train.batch_size``. Unknown ``data``/``train`` keys
    are refused with a one-line EEGKitError, so a typo never silently falls back to
    a default.
    """
    from speaker_extraction.data import DEFAULT_CONFIG as DATA_DEFAULTS

    config = copy.deepcopy(config)
    if "model" not in config or not isinstance(config["model"], dict):
        raise EEGKitError("config: missing 'model' section")
    data_in = dict(config.get("data") or {})
    unknown = sorted(set(data_in) - set(DATA_DEFAULTS))
    if unknown:
        hint = {"eeg_band": "use data.band", "batch_size": "use train.batch_size"}
        raise EEGKitError("config: unknown data key(s) " + ", ".join(
            f"{key!r}" + (f" ({hint[key]})" if key in hint else "") for key in unknown))
    split_in = data_in.pop("split", None)
    if split_in is not None and not isinstance(split_in, dict):
        raise EEGKitError(f"config: data.split must be a mapping such as {{protocol: trial}}; got {split_in!r}")
    unknown = sorted(set(split_in or {}) - set(DATA_DEFAULTS["split"]))
    if unknown:
        raise EEGKitError(f"config: unknown data.split key(s) {', '.join(unknown)}")
    data = copy.deepcopy(DATA_DEFAULTS)
    data.update(data_in)
    data["split"].update(split_in or {})
    train_in = dict(config.get("train") or {})
    unknown = sorted(set(train_in) - set(TRAIN_DEFAULTS))
    if unknown:
        raise EEGKitError(f"config: unknown train key(s) {', '.join(unknown)}")
    config["data"], config["train"] = data, {**TRAIN_DEFAULTS, **train_in}
    return config


def crop_plan(dataset, crop_s: float, epoch: int, seed: int) -> tuple[int, int, np.ndarray] | None:
    """Random training crops: ``(eeg_len, audio_len, eeg_offsets (n_windows,))`` or None when off.

    Offsets are drawn for every window of the dataset from ``[seed, epoch]`` (the
    same on every rank, so DDP sees exactly the crops of one process) on the grid
    where EEG and audio samples coincide (2 EEG <-> 125 audio samples at 128 Hz / 8 kHz).
    """
    if crop_s <= 0:
        return None
    corpus = dataset.corpus
    ratio = Fraction(int(corpus.fs_audio), int(corpus.fs_eeg))  # audio samples per EEG sample
    step = ratio.denominator  # EEG samples per grid step
    window_eeg = int(corpus.window_eeg)
    crop_eeg = max(step, int(round(crop_s * corpus.fs_eeg / step)) * step)
    if crop_eeg >= window_eeg:
        return None
    n_positions = (window_eeg - crop_eeg) // step + 1
    offsets = np.random.default_rng([seed, epoch]).integers(0, n_positions, size=len(dataset)) * step
    return crop_eeg, crop_eeg * ratio.numerator // ratio.denominator, offsets


def apply_crop(batch: dict, plan, indices: Sequence[int], fs_ratio: Fraction) -> dict:
    """Cut ``mixture``/``target`` (batch, samples) and ``eeg`` (batch, time, C) to the planned crops."""
    if plan is None:
        return batch
    crop_eeg, crop_audio, offsets = plan
    out = dict(batch)
    starts = [int(offsets[i]) for i in indices]
    out["eeg"] = torch.stack([batch["eeg"][k, s:s + crop_eeg] for k, s in enumerate(starts)])  # (batch, crop, C)
    for key in ("mixture", "target"):
        audio_starts = [s * fs_ratio.numerator // fs_ratio.denominator for s in starts]
        out[key] = torch.stack([batch[key][k, a:a + crop_audio] for k, a in enumerate(audio_starts)])  # (batch, crop)
    return out


def _batches(dataset, indices: np.ndarray, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(Subset(dataset, [int(i) for i in indices]), batch_size=batch_size, shuffle=False,
                      num_workers=num_workers, drop_last=False)


@torch.no_grad()
def validate(model: torch.nn.Module, dataset, info, batch_size: int, max_windows: int = 0,
             progress: bool = False) -> dict[str, float]:
    """Mean SI-SDR and SI-SDRi (dB) over the validation windows, reduced over ranks."""
    model.eval()
    n_total = len(dataset) if max_windows <= 0 else min(len(dataset), max_windows)
    indices = np.arange(n_total)[info.rank::info.world_size]
    sum_sdr, sum_sdri, count = 0.0, 0.0, 0
    for batch in tqdm(_batches(dataset, indices, batch_size, 0), desc="val", leave=False,
                      disable=not (progress and info.is_main)):
        mixture = batch["mixture"].to(info.device)  # (batch, samples)
        target = batch["target"].to(info.device)  # (batch, samples)
        estimate = model(mixture, batch["eeg"].to(info.device))  # (batch, samples)
        sdr = si_sdr_torch(estimate, target)  # (batch,)
        sdr_mixture = si_sdr_torch(mixture, target)  # (batch,)
        sum_sdr += float(sdr.sum())
        sum_sdri += float((sdr - sdr_mixture).sum())
        count += int(sdr.shape[0])
    count_all = all_reduce_sum(count, info)
    if count_all == 0:
        return {"val_si_sdr": float("nan"), "val_si_sdri": float("nan")}
    return {"val_si_sdr": all_reduce_sum(sum_sdr, info) / count_all,
            "val_si_sdri": all_reduce_sum(sum_sdri, info) / count_all}


def train(config: dict, data_dir: str | Path, out_dir: str | Path, epochs: int | None = None,
          resume: bool = False, progress: bool = True, device: str | None = None) -> dict:
    """Train; returns ``{"best_val_si_sdr", "epochs_run", "stopped_early", "out_dir"}``."""
    from speaker_extraction.data import build_datasets
    from speaker_extraction.models import build_model

    out_dir = Path(out_dir)
    config = resolve_config(config)
    if epochs is not None:
        config["train"]["epochs"] = int(epochs)
    train_cfg = config["train"]
    if int(train_cfg["threads"]) > 0:
        torch.set_num_threads(int(train_cfg["threads"]))
    info = init_distributed(device)
    try:
        global_batch = int(train_cfg["batch_size"])
        if global_batch % info.world_size:
            raise EEGKitError(f"config: train.batch_size {global_batch} is not divisible by world size "
                              f"{info.world_size}")
        batch_size = global_batch // info.world_size  # per process
        seed_everything(int(train_cfg["seed"]) + info.rank)
        corpus, datasets = build_datasets(data_dir, config["data"], progress=progress and info.is_main)
        model_cfg = config["model"]
        if int(model_cfg.get("eeg_channels", corpus.n_channels)) != corpus.n_channels:
            raise EEGKitError(f"{data_dir}: data gives {corpus.n_channels} EEG channels but "
                              f"model.eeg_channels is {model_cfg['eeg_channels']}")
        model_cfg["eeg_channels"] = corpus.n_channels
        for name in ("train", "val"):
            if len(datasets[name]) == 0:
                raise EEGKitError(f"{data_dir}: the {name} split has no {config['data']['window_s']}-s windows")
        torch.manual_seed(int(train_cfg["seed"]))  # identical initial weights on every rank
        model = wrap_ddp(build_model(model_cfg), info)
        optimizer = torch.optim.Adam(model.parameters(), lr=float(train_cfg["lr"]),
                                     betas=tuple(float(b) for b in train_cfg["betas"]))
        decay_patience = int(train_cfg["lr_decay_patience"])
        scheduler = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                                patience=decay_patience)
                     if decay_patience > 0 else None)
        early = EarlyStopping(int(train_cfg["patience"]), mode="max")
        start_epoch = 0
        last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
        if resume:
            state = load_checkpoint(last_path, map_location=info.device)
            unwrap(model).load_state_dict(state["model"])
            if state.get("optimizer"):
                optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler"):
                scheduler.load_state_dict(state["scheduler"])
            extra = state.get("extra", {})
            early.load_state_dict(extra["early_stopping"])
            start_epoch = int(extra["epoch"]) + 1
            if early.should_stop:
                start_epoch = int(train_cfg["epochs"])  # the finished run stays finished
        logger = CSVLogger(out_dir / "log.csv", resume=resume) if info.is_main else None
        if logger is not None:
            logger.truncate(start_epoch)
            save_config(config, out_dir / "config.yaml")
        if info.is_main:
            print(f"training on {info.device}, world size {info.world_size}, global batch {global_batch}, "
                  f"{len(datasets['train'])} training windows", flush=True)
        max_steps = int(train_cfg["max_steps_per_epoch"])
        grad_clip = float(train_cfg["grad_clip"])
        epochs_run, stopped_early = 0, False
        for epoch in range(start_epoch, int(train_cfg["epochs"])):
            started = time.perf_counter()
            model.train()
            indices = shard_indices(len(datasets["train"]), info, epoch=epoch, seed=int(train_cfg["seed"]),
                                    shuffle=True)
            if max_steps > 0:
                indices = indices[: max_steps * batch_size]
            plan = crop_plan(datasets["train"], float(train_cfg["crop_s"]), epoch, int(train_cfg["seed"]))
            fs_ratio = Fraction(corpus.fs_audio, corpus.fs_eeg)
            loss_sum, steps = 0.0, 0
            bar = tqdm(_batches(datasets["train"], indices, batch_size, int(train_cfg["num_workers"])),
                       desc=f"epoch {epoch + 1}/{train_cfg['epochs']}", leave=False,
                       disable=not (progress and info.is_main))
            for step_index, batch in enumerate(bar):
                batch = apply_crop(batch, plan, indices[step_index * batch_size:(step_index + 1) * batch_size],
                                   fs_ratio)
                estimate = model(batch["mixture"].to(info.device), batch["eeg"].to(info.device))  # (batch, samples)
                loss = neg_si_sdr_loss(estimate, batch["target"].to(info.device))
                if not torch.isfinite(loss):
                    raise EEGKitError(f"{out_dir}: training loss became {float(loss)} at epoch {epoch + 1}; "
                                      f"lower train.lr or set train.grad_clip")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
                loss_sum += float(loss.detach())
                steps += 1
                bar.set_postfix(loss=f"{loss_sum / steps:.3f}")
            train_loss = all_reduce_mean(loss_sum / max(steps, 1), info)
            scores = validate(model, datasets["val"], info, batch_size, int(train_cfg["max_val_windows"]), progress)
            if scheduler is not None and math.isfinite(scores["val_si_sdr"]):
                scheduler.step(scores["val_si_sdr"])
            improved = early.step(scores["val_si_sdr"])
            epochs_run += 1
            if info.is_main:
                row = {"epoch": epoch + 1, "train_loss": train_loss, **scores,
                       "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - started, 2)}
                extra = {"epoch": epoch, "early_stopping": early.state_dict(), "metrics": row}
                save_checkpoint(last_path, model, config, optimizer, scheduler, extra)
                if improved:
                    save_checkpoint(best_path, model, config, optimizer, scheduler, extra)
                logger.log(row)
                plot_curves(out_dir / "log.csv", out_dir / "curves.png", title=f"speaker extraction: {out_dir.name}")
                print(f"epoch {epoch + 1}: train_loss {train_loss:.3f}  val SI-SDR {scores['val_si_sdr']:.2f} dB  "
                      f"val SI-SDRi {scores['val_si_sdri']:.2f} dB{'  (best)' if improved else ''}", flush=True)
            barrier(info)
            if early.should_stop:
                stopped_early = True
                if info.is_main:
                    print(f"early stopping: no validation SI-SDR gain for {early.patience} epochs", flush=True)
                break
        return {"best_val_si_sdr": early.best, "epochs_run": epochs_run, "stopped_early": stopped_early,
                "out_dir": str(out_dir)}
    finally:
        cleanup(info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train an EEG-guided speaker extractor (NeuroSpex) on KUL-format data.")
    parser.add_argument("--config", required=True, help="YAML run config with model/data/train sections")
    parser.add_argument("--data", required=True, help="KUL-format dataset folder (S*.mat + stimuli/)")
    parser.add_argument("--out", required=True, help="run folder for checkpoints, log.csv, curves.png")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/last.pt (optimizer, epoch, early stopping)")
    parser.add_argument("--device", default=None, help="force 'cpu' or 'cuda' (default: cuda when available)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value config overrides, e.g. train.lr=1e-4")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, args.overrides)
    if not Path(args.data).is_dir():
        raise EEGKitError(f"{args.data}: dataset folder not found")
    if args.resume and not (Path(args.out) / "last.pt").is_file():
        raise EEGKitError(f"{Path(args.out) / 'last.pt'}: nothing to resume (no last.pt in the run folder)")
    result = train(config, args.data, args.out, epochs=args.epochs, resume=args.resume,
                   progress=not args.no_progress, device=args.device)
    best = result["best_val_si_sdr"]
    print(f"done: {result['epochs_run']} epoch(s) run; best val SI-SDR "
          f"{'n/a' if best is None else f'{best:.2f} dB'}; outputs in {result['out_dir']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
