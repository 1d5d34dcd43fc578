"""Train an EEG-guided speaker extractor (NeuroSpex) on KUL-format data.

    python -m speaker_extraction.train --config speaker_extraction/configs/neurospex_small.yaml \
        --data DATA --out RUN [--epochs N] [--resume] [train.lr=1e-4 ...]
    torchrun --nproc_per_node 2 -m speaker_extraction.train --config ... --data ... --out ...

Config keys and defaults: configs/defaults.yaml. Windows come from `speaker_extraction.data`
(trial split by default, never random windows inside a trial). Each step is the negative zero-mean
SI-SDR (`speaker_extraction.loss`) on the window, or with ``train.crop_s`` > 0 on a random crop of
it (offsets seeded by ``[seed, epoch]``, the same on all ranks; validation keeps full windows;
cross-attention is quadratic in frames, so 2-s crops make a step ~4x cheaper). Validation: mean
SI-SDR and SI-SDRi over the val windows (early stopping on SI-SDR). ``train.batch_size`` is the
global batch (it must divide over the torchrun ranks); ``train.threads`` sets torch's intra-op
threads; ``train.max_steps_per_epoch`` / ``train.max_val_windows`` make quick runs. The loop, the
run folder (best.pt, last.pt, config.yaml, log.csv, curves.png) and DDP are `util.trainer.fit`'s.
"""
from __future__ import annotations
if not __package__:  # run by path (python speaker_extraction/train.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from speaker_extraction.loss import neg_si_sdr_loss
from util import trainer
from util.config import load_config, load_defaults, load_schema, resolve
from util.distributed import all_reduce_sum, cleanup, init_distributed
from util.errors import EEGKitError, run_cli
from util.metrics import si_sdr_torch

DEFAULTS_PATH = Path(__file__).resolve().parent / "configs" / "defaults.yaml"
SCHEMA_PATH = Path(__file__).resolve().parent / "configs" / "schema.yaml"
TASK = "speaker_extraction"


def resolve_config(config: dict) -> dict:
    """`util.config.resolve` against ``configs/defaults.yaml`` and ``configs/schema.yaml`` (unknown keys
    refused, nearest key named; ranges and choices); the ``model:`` section through the model registry
    (and its size on the meta device); the band-pass design (`speaker_extraction.data.check_band`).
    Also the check of a checkpoint's stored config (`util.config.stored_config`)."""
    from speaker_extraction.data import check_band
    from speaker_extraction.models import MODEL_BUILDERS, MODEL_CLASSES, check_model_config
    from util.config import check_model_size

    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise EEGKitError("config: missing 'model' section")
    resolved = resolve(config, load_defaults(DEFAULTS_PATH), load_schema(SCHEMA_PATH))
    options = check_model_config(resolved["model"])
    model_type = resolved["model"].get("type", "neurospex")
    check_model_size("model", lambda: MODEL_BUILDERS[model_type](dict(resolved["model"])), options,
                     MODEL_CLASSES[model_type].__init__)
    data = resolved["data"]
    check_band(data["band"], float(data["fs_eeg"]), int(data["filter_order"]))
    return resolved


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


def make_step(train_set, config: dict, info) -> Callable:
    """``step(model, batch, epoch) -> (loss, terms)``: the epoch's random crop, then -SI-SDR."""
    corpus, seed, crop_s = train_set.corpus, int(config["train"]["seed"]), float(config["train"]["crop_s"])
    fs_ratio = Fraction(corpus.fs_audio, corpus.fs_eeg)
    plans: dict[int, object] = {}

    def step(model, batch, epoch):
        if epoch not in plans:
            plans.clear()
            plans[epoch] = crop_plan(train_set, crop_s, epoch, seed)
        batch = apply_crop(batch, plans[epoch], batch["index"].tolist(), fs_ratio)
        estimate = model(batch["mixture"].to(info.device), batch["eeg"].to(info.device))  # (batch, samples)
        loss = neg_si_sdr_loss(estimate, batch["target"].to(info.device))
        return loss, {"total": float(loss.detach())}

    return step


@torch.no_grad()
def validate(model: torch.nn.Module, dataset, info, batch_size: int, max_windows: int = 0) -> dict[str, float]:
    """Mean SI-SDR and SI-SDRi (dB) over the validation windows, reduced over ranks."""
    n_total = len(dataset) if max_windows <= 0 else min(len(dataset), max_windows)
    indices = np.arange(n_total)[info.rank::info.world_size]
    sum_sdr, sum_sdri, count = 0.0, 0.0, 0
    for batch in trainer.batches(dataset, indices, batch_size, trainer.show_progress(info), "val"):
        mixture = batch["mixture"].to(info.device)  # (batch, samples)
        target = batch["target"].to(info.device)  # (batch, samples)
        sdr = si_sdr_torch(model(mixture, batch["eeg"].to(info.device)), target)  # (batch,)
        sum_sdr += float(sdr.sum())
        sum_sdri += float((sdr - si_sdr_torch(mixture, target)).sum())
        count += int(sdr.shape[0])
    count_all = all_reduce_sum(count, info)
    if count_all == 0:
        return {"val_si_sdr": float("nan"), "val_si_sdri": float("nan")}
    return {"val_si_sdr": all_reduce_sum(sum_sdr, info) / count_all,
            "val_si_sdri": all_reduce_sum(sum_sdri, info) / count_all}


def train(config: dict, data_dir: str | Path, out_dir: str | Path, epochs: int | None = None,
          resume: bool = False, progress: bool = True, device: str | None = None, overwrite: bool = False) -> dict:
    """Train; returns ``{"best_val", "epochs_run", "stopped_early", "out_dir"}`` (best_val: val SI-SDR, dB)."""
    from speaker_extraction.data import N_CHANNELS, build_datasets
    from speaker_extraction.models import build_model

    from util.outdir import check_out_dir

    config = trainer.with_epochs(config, epochs)
    config = resolve_config(config)
    check_out_dir(out_dir, overwrite=overwrite, resume=resume, resumable=True, inputs=[data_dir])
    if not Path(data_dir).is_dir():
        raise EEGKitError(f"{data_dir}: dataset folder not found")
    if resume:
        trainer.check_resume(config, Path(out_dir), TASK)
    train_cfg = config["train"]
    if int(train_cfg["threads"]) > 0:
        torch.set_num_threads(int(train_cfg["threads"]))
    info = init_distributed(device)
    try:
        global_batch = int(train_cfg["batch_size"])
        if global_batch % info.world_size:
            raise EEGKitError(f"config: train.batch_size {global_batch} is not divisible by world size "
                              f"{info.world_size}")
        model_cfg = config["model"]
        channels = (config["data"] or {}).get("channels")  # the corpus keeps exactly these (default: all 64)
        n_data = N_CHANNELS if channels is None else len(channels)
        if "eeg_channels" in model_cfg and int(model_cfg["eeg_channels"]) != n_data:  # before any cache is built
            raise EEGKitError(f"{data_dir}: data gives {n_data} EEG channels but "
                              f"model.eeg_channels is {model_cfg['eeg_channels']}")
        corpus, datasets = build_datasets(data_dir, config["data"], progress=progress and info.is_main)
        if int(model_cfg.get("eeg_channels", corpus.n_channels)) != corpus.n_channels:
            raise EEGKitError(f"{data_dir}: data gives {corpus.n_channels} EEG channels but "
                              f"model.eeg_channels is {model_cfg['eeg_channels']}")
        model_cfg["eeg_channels"] = corpus.n_channels
        for name in ("train", "val"):
            if len(datasets[name]) == 0:
                records = getattr(datasets[name], "records", [])
                spans = sorted(r.n_eeg / corpus.fs_eeg for r in records if hasattr(r, "n_eeg"))
                lengths = f"; its {len(spans)} trials are {spans[0]:.1f}-{spans[-1]:.1f} s long" if spans else ""
                raise EEGKitError(f"{data_dir}: the {name} split has no windows of data.window_s="
                                  f"{config['data']['window_s']} s{lengths}; use a shorter data.window_s")
        if info.is_main:
            print(f"training on {info.device}, world size {info.world_size}, global batch {global_batch}, "
                  f"{len(datasets['train'])} training windows", flush=True)
        rank_batch = global_batch // info.world_size
        max_val = int(train_cfg["max_val_windows"])
        score = lambda model, dataset, rank_info: validate(model, dataset, rank_info, rank_batch, max_val)  # noqa: E731
        return trainer.fit(config, out_dir, info, lambda: build_model(model_cfg),
                           make_step(datasets["train"], config, info), score, datasets["train"], datasets["val"],
                           global_batch, "val_si_sdr", resume=resume, progress=progress,
                           say=lambda message: print(message, flush=True), task=TASK, overwrite=overwrite)
    finally:
        cleanup(info)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Train an EEG-guided speaker extractor (NeuroSpex) on KUL-format data.")
    parser.add_argument("--config", required=True, help="YAML run config with model/data/train sections")
    parser.add_argument("--data", required=True, help="KUL-format dataset folder (S*.mat + stimuli/)")
    trainer.add_run_arguments(parser)  # --out --epochs --resume --overwrite --device
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value config overrides, e.g. train.lr=1e-4")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config, args.overrides)
    result = train(config, args.data, args.out, epochs=args.epochs, resume=args.resume,
                   progress=not args.no_progress, device=args.device, overwrite=args.overwrite)
    best = result["best_val"]
    print(f"done: {result['epochs_run']} epoch(s) run; best val SI-SDR "
          f"{'n/a' if best is None else f'{best:.2f} dB'}; outputs in {result['out_dir']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
