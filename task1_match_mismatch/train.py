"""Train a Task 1 (match-mismatch) model from a YAML run config.

    python -m task1_match_mismatch.train --config task1_match_mismatch/configs/dilated_conv.yaml \
        --data DATASET --out runs/mm [--epochs N] [--resume] [--overwrite] [--holdout-subjects N|LIST] [key=value ...]
    torchrun --nproc_per_node 2 -m task1_match_mismatch.train ...   # DistributedDataParallel (gloo on CPU)

Config keys and defaults: configs/defaults.yaml (ranges: configs/schema.yaml). The recipe is the
organisers' (`../shared/reference/task1_match_mismatch.md` section 2): train and val recordings of
split_data (`task1_match_mismatch.data`), windows of ``data.window_s`` every ``data.hop_s`` with
``data.n_imposters`` imposters from the same recording, every window at each of the K positions;
each step is the cross-entropy of the model's K logits against the matched position; Adam
(``train.lr`` 1e-3), batch ``data.batch_size`` 64, up to ``train.epochs`` 100, early stopping with
``train.patience`` 5 on the validation loss (``train.select_on: loss``; ``accuracy`` selects on the
validation accuracy instead). Validation logs ``val_loss``, ``val_accuracy``, ``val_noise_eeg``
(the accuracy with Gaussian noise in place of the EEG, `evaluation.controls.noise_eeg`: it should
sit at chance, 1/K) and ``val_neg_loss`` (minus the loss: the column early stopping maximises).
The loop, the run folder (best.pt / last.pt with the resolved config, log.csv, curves.png),
resume and DDP are `util.trainer.fit`'s. ``model.type: ridge`` is fitted in closed form
(`util.ridge.RidgeDecoder`: streaming covariance over the training windows, alpha chosen on the
validation windows) and saved the same way (`util.ridge.save_ridge_run`).

``model.stimulus_bands`` is set from ``data.feature`` (1 for the envelope, 10 for mel).
``--holdout-subjects sub-002,sub-005`` (or a count N drawn with ``train.seed``) keeps those subjects
out of train and val and stores them as ``data.holdout_subjects``
(``python -m task1_match_mismatch.evaluate --heldout`` scores them as unseen subjects).
"""
from __future__ import annotations
if not __package__:  # run by path (python task1_match_mismatch/train.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
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
from util.split_data import apply_holdout, check_subjects, discover, resolve_split_dir, used_subjects
from util.windowing import seconds_to_samples

DEFAULTS_PATH = Path(__file__).resolve().parent / "configs" / "defaults.yaml"
SCHEMA_PATH = Path(__file__).resolve().parent / "configs" / "schema.yaml"
TASK = "task1"
SELECT_ON = {"loss": "val_neg_loss", "accuracy": "val_accuracy"}  # train.select_on -> log.csv column


# --------------------------------------------------------------------------- config
def check_config(config: dict) -> dict:
    """The data-free checks: `util.config.resolve` against defaults + schema, the model section, and
    ``model.stimulus_bands`` set from ``data.feature``; returns the resolved copy."""
    from task1_match_mismatch.models import check_model_config

    cfg = config_util.resolve(config, config_util.load_defaults(DEFAULTS_PATH), config_util.load_schema(SCHEMA_PATH))
    if "type" not in cfg["model"]:
        raise EEGKitError("config: missing model.type (dilated_conv, vlaai or ridge)")
    bands = BANDS[cfg["data"]["feature"]]
    given = cfg["model"].get("stimulus_bands")
    if given is not None and given != bands:
        raise EEGKitError(f"config: model.stimulus_bands={given!r} but data.feature {cfg['data']['feature']} has "
                          f"{bands} band(s); leave model.stimulus_bands out (train.py sets it)")
    cfg["model"]["stimulus_bands"] = bands
    check_model_config(cfg["model"])
    data = cfg["data"]
    window = seconds_to_samples(data["window_s"], FS, name="data.window_s")
    hop = seconds_to_samples(data["hop_s"], FS, name="data.hop_s")
    if hop < 1:
        raise EEGKitError(f"config: data.hop_s={data['hop_s']:g} s is less than one frame at {FS} Hz")
    shrink = _model_shrink(cfg["model"])
    if window <= shrink:
        raise EEGKitError(f"config: data.window_s={data['window_s']:g} s is {window} frames; model.type "
                          f"{cfg['model']['type']} needs more than {shrink}")
    return cfg


def _model_shrink(model_cfg: dict) -> int:
    """Frames a model needs beyond one (its valid-padding shrink, or the ridge's taps)."""
    from task1_match_mismatch.models import build_model

    model = build_model(model_cfg)
    return int(getattr(model, "shrink", getattr(model, "n_taps", 1)))


def resolve_config(config: dict, data_dir, groups: dict | None = None) -> dict:
    """`check_config`, then ``data.subjects`` / ``data.holdout_subjects`` against the data; returns a copy."""
    cfg = check_config(config)
    if cfg["data"]["subjects"] or cfg["data"]["holdout_subjects"]:
        check_subjects(cfg, groups if groups is not None else discover(resolve_split_dir(data_dir)), data_dir)
    return cfg


# --------------------------------------------------------------------------- data
def frames(cfg: dict) -> tuple[int, int]:
    """``(window, hop)`` in frames at 64 Hz."""
    return (seconds_to_samples(cfg["data"]["window_s"], FS, name="data.window_s"),
            seconds_to_samples(cfg["data"]["hop_s"], FS, name="data.hop_s"))


def windows_dataset(recordings, cfg: dict, where, all_positions: bool = True, seed: int | None = None):
    """`task1_match_mismatch.data.MatchMismatchWindows` of the config's window, hop, imposters and feature."""
    from task1_match_mismatch.data import MatchMismatchWindows

    window, hop = frames(cfg)
    return MatchMismatchWindows(recordings, cfg["data"]["feature"], window, hop, int(cfg["data"]["n_imposters"]),
                                seed=int(cfg["train"]["seed"]) if seed is None else seed,
                                all_positions=all_positions, where=where,
                                hint="; use a shorter data.window_s or data.hop_s, or fewer data.n_imposters")


class Subset(torch.utils.data.Dataset):
    """Items ``indices`` of a dataset (the validation windows kept by ``data.max_val_windows``)."""

    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[int(self.indices[index])]


def validation_set(recordings, cfg: dict, where):
    """Every val window at each position; at most ``data.max_val_windows`` windows, spread evenly."""
    dataset = windows_dataset(recordings, cfg, where, all_positions=True)
    limit = int(cfg["data"]["max_val_windows"])
    if not limit or dataset.total_windows <= limit:
        return dataset
    windows = np.unique(np.linspace(0, dataset.total_windows - 1, limit).round().astype(np.int64))
    k = dataset.n_candidates
    return Subset(dataset, (windows[:, None] * k + np.arange(k)[None, :]).reshape(-1))


# --------------------------------------------------------------------------- steps and scores
def make_step(info) -> Callable:
    """``step(model, batch, epoch) -> (loss, terms)``: cross-entropy of the K logits against the matched position."""

    def step(model, batch, epoch):
        logits = model(batch["eeg"].to(info.device, torch.float32),
                       batch["stimuli"].to(info.device, torch.float32))  # (batch, K)
        loss = torch.nn.functional.cross_entropy(logits, batch["label"].to(info.device))
        return loss, {"total": loss.detach()}

    return step


@torch.no_grad()
def validation_scores(model, dataset, info, seed: int = 0, batch_size: int = 64) -> dict:
    """log.csv's validation columns over all ranks: val_loss, val_accuracy, val_noise_eeg, val_neg_loss.

    ``val_noise_eeg``: the accuracy with each window's EEG replaced by Gaussian noise with that
    window's per-channel mean and std (drawn from ``(seed, item)``: the same noise every epoch).
    """
    from evaluation.controls import noise_eeg

    indices = np.arange(len(dataset))[info.rank :: info.world_size]
    loss_sum, right, noise_right, count = 0.0, 0, 0, 0
    for batch in trainer.batches(dataset, indices, batch_size):
        eeg = batch["eeg"].to(info.device, torch.float32)  # (batch, T, 64)
        stimuli = batch["stimuli"].to(info.device, torch.float32)  # (batch, K, T, bands)
        labels = batch["label"].to(info.device)
        logits = model(eeg, stimuli)  # (batch, K)
        loss_sum += float(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
        right += int((logits.argmax(dim=1) == labels).sum())
        noise = torch.from_numpy(np.stack([noise_eeg(x.numpy(), np.random.default_rng([seed, int(i)]))
                                           for x, i in zip(batch["eeg"], batch["index"])]))  # (batch, T, 64)
        noise_right += int((model(noise.to(info.device), stimuli).argmax(dim=1) == labels).sum())
        count += len(labels)
    totals = [distributed.all_reduce_sum(value, info) for value in (loss_sum, right, noise_right, count)]
    n = max(totals[3], 1)
    return {"val_loss": totals[0] / n, "val_accuracy": totals[1] / n, "val_noise_eeg": totals[2] / n,
            "val_neg_loss": -totals[0] / n}


# --------------------------------------------------------------------------- ridge
def _fit_ridge(model, cfg: dict, train_recs, val_recs, val_set, info, say) -> dict:
    """Closed-form fit over non-overlapping training chunks (<= 60 s), alpha chosen on val chunks; the log row."""
    from task1_match_mismatch.models.ridge import TARGET
    from util import windowing

    feature = cfg["data"]["feature"]
    started = time.time()
    length = min(60 * FS, min(r.n_samples for r in train_recs))
    train_chunks = windowing.FixedWindows(train_recs, length, length, ("eeg", feature))
    for batch in trainer.batches(train_chunks, np.arange(len(train_chunks)), 16, trainer.show_progress(info),
                                 "ridge covariance"):
        model.decoder.partial_fit(batch["eeg"], {TARGET: batch[feature]})
    val_length = min(60 * FS, min(r.n_samples for r in val_recs))
    val_chunks = windowing.FixedWindows(val_recs, val_length, val_length, ("eeg", feature))
    pairs = [(item["eeg"], {TARGET: item[feature]}) for item in (val_chunks[i] for i in range(len(val_chunks)))]
    scores = model.decoder.select_alpha(None, pairs)
    say(f"ridge: val reconstruction r per alpha {({a: round(s, 4) for a, s in scores.items()})}; chose "
        f"alpha={float(model.decoder.alpha):g}")
    model.eval()
    row = {"epoch": 0, **validation_scores(model, val_set, info, int(cfg["train"]["seed"])),
           "val_reconstruction_r": float(max(scores.values())), "alpha": float(model.decoder.alpha),
           "time_s": round(time.time() - started, 2)}
    return row


# --------------------------------------------------------------------------- training
def train(config: dict, data_dir, out_dir, epochs: int | None = None, resume: bool = False,
          say: Callable[[str], None] | None = None, holdout: str | None = None, overwrite: bool = False,
          device: str | None = None) -> dict:
    """Train (or resume) one run; returns {'best_val', 'epochs_run', 'stopped_early', 'out_dir', 'select_on'}.

    config: a loaded config dict (overrides applied); data_dir: dataset root (or split_data); out_dir:
    run folder; holdout: ``--holdout-subjects`` ('sub-002,sub-005' or a count), stored in the run's
    config as ``data.holdout_subjects``. Under torchrun the process group is joined here and left at the end.
    """
    from task1_match_mismatch.data import load_split
    from task1_match_mismatch.models import build_model

    say = say or (lambda message: print(message, flush=True))
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    config = trainer.with_epochs(config, epochs)
    info = distributed.init_distributed(device)
    speak = say if info.is_main else (lambda message: None)
    try:
        check_out_dir(out_dir, overwrite=overwrite, resume=resume, resumable=True, inputs=[data_dir])
        if not data_dir.is_dir():
            raise EEGKitError(f"{data_dir}: dataset folder not found")
        groups = discover(resolve_split_dir(data_dir))
        cfg = apply_holdout(resolve_config(config, data_dir, groups), holdout, groups, data_dir)
        if resume:
            trainer.check_resume(cfg, out_dir, TASK)
        train_recs = load_split(cfg, data_dir, "train", groups)
        val_recs = load_split(cfg, data_dir, "val", groups)
        train_set = windows_dataset(train_recs, cfg, f"{data_dir} (train)")
        val_set = validation_set(val_recs, cfg, f"{data_dir} (val)")
        held_out = cfg["data"]["holdout_subjects"]
        speak(f"data: {len(train_recs)} train / {len(val_recs)} val recordings of {len(used_subjects(cfg, groups))} "
              f"subject(s), {train_set.total_windows} train windows x {train_set.n_candidates} positions, "
              f"{len(val_set)} val items, feature {cfg['data']['feature']}, {cfg['data']['n_imposters']} imposters"
              + (f"; held-out subjects {', '.join(held_out)}" if held_out else ""))
        build = lambda: build_model(cfg["model"])  # noqa: E731
        seed = int(cfg["train"]["seed"])

        if cfg["model"]["type"] == "ridge":
            from util.ridge import save_ridge_run

            model = build()
            row = _fit_ridge(model, cfg, train_recs, val_recs, val_set, info, speak)
            if info.is_main:
                save_ridge_run(model, cfg, out_dir, row, "val_accuracy", TASK, overwrite=overwrite or resume)
            distributed.barrier(info)
            speak(f"ridge: val accuracy {row['val_accuracy']:.4f} (noise EEG {row['val_noise_eeg']:.4f})")
            return {"best_val": row["val_accuracy"], "epochs_run": 0, "stopped_early": False, "out_dir": str(out_dir),
                    "select_on": "accuracy"}

        score = lambda model, dataset, rank_info: validation_scores(model, dataset, rank_info, seed)  # noqa: E731
        monitor = SELECT_ON[cfg["train"]["select_on"]]
        speak(f"model selection (best.pt, early stopping) on {monitor} (train.select_on: {cfg['train']['select_on']})")
        result = trainer.fit(cfg, out_dir, info, build, make_step(info), score, train_set, val_set,
                             int(cfg["data"]["batch_size"]), monitor, resume=resume, say=say, task=TASK,
                             overwrite=overwrite)
        return {**result, "select_on": cfg["train"]["select_on"]}
    finally:
        distributed.cleanup(info)


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m task1_match_mismatch.train",
        description="Train a Task 1 match-mismatch model (which of K stimulus segments the EEG heard) from a YAML "
                    "config. Run under `torchrun --nproc_per_node K` for DistributedDataParallel training.")
    parser.add_argument("--config", required=True, help="run config YAML (see task1_match_mismatch/configs/)")
    parser.add_argument("--data", required=True,
                        help="dataset root holding derivatives/split_data/ (or the split_data folder itself)")
    trainer.add_run_arguments(parser)  # --out --epochs --resume --overwrite --device
    parser.add_argument("--holdout-subjects", default=None, metavar="LIST|N",
                        help="keep these training subjects out of train AND val: names (sub-002,sub-005) or a count "
                             "N drawn with train.seed; stored in the run's config (data.holdout_subjects); "
                             "`python -m task1_match_mismatch.evaluate --heldout` scores them")
    parser.add_argument("overrides", nargs="*", help="config overrides as dotted.key=value, e.g. data.n_imposters=8")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_util.load_config(args.config, args.overrides)
    result = train(cfg, args.data, args.out, epochs=args.epochs, resume=args.resume, holdout=args.holdout_subjects,
                   overwrite=args.overwrite, device=args.device)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: best {SELECT_ON[result['select_on']]} {result['best_val']:.4f} ({result['epochs_run']} epochs) "
              f"-> {result['out_dir']}")
    return 0


if __name__ == "__main__":
    run_cli(main)
