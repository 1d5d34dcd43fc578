"""Pieces of training runs: seeds, early stopping, CSV log, curve plot, checkpoints, parameter count.

The loop itself is `util.trainer.fit`.

Checkpoints are written atomically and hold the fully-resolved run config, so
`predict.py` needs nothing but the checkpoint file.
"""
from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from util.atomic import atomic_savefig, atomic_torch_save, atomic_write_text
from util.distributed import unwrap
from util.errors import EEGKitError


def count_parameters(model: torch.nn.Module, trainable_only: bool = True) -> int:
    """Number of (unique) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


class EarlyStopping:
    """Stop when the monitored value has not improved for ``patience`` checks.

    ``mode='max'`` for scores (Pearson r, SI-SDR), ``'min'`` for losses.
    ``patience <= 0`` never stops.
    """

    def __init__(self, patience: int, mode: str = "max", min_delta: float = 0.0):
        if mode not in ("max", "min"):
            raise ValueError("mode must be 'max' or 'min'")
        self.patience, self.mode, self.min_delta = int(patience), mode, float(min_delta)
        self.best: float | None = None
        self.bad_checks = 0

    def step(self, value: float) -> bool:
        """Record a new value; return True when it is the best so far."""
        value = float(value)
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.bad_checks = value, 0
        else:
            self.bad_checks += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_checks >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_checks": self.bad_checks}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_checks = state["best"], int(state["bad_checks"])


class CSVLogger:
    """Append-style CSV log of per-epoch metrics; the file is rewritten atomically each time.

    New columns may appear in later rows; the header is the union, in order of appearance.
    Re-opening an existing log (``--resume``) keeps its rows.
    """

    def __init__(self, path: str | Path, resume: bool = True):
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if resume and self.path.is_file():
            with open(self.path, newline="") as handle:
                self.rows = [dict(row) for row in csv.DictReader(handle)]

    def truncate(self, keep: int) -> None:
        """Drop rows after the first ``keep`` (used when resuming from an earlier epoch)."""
        self.rows = self.rows[:keep]

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))
        columns: list[str] = []
        for entry in self.rows:
            columns.extend(key for key in entry if key not in columns)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.path, buffer.getvalue())


def plot_curves(csv_path: str | Path, png_path: str | Path, title: str = "") -> Path:
    """Plot every numeric column of a training CSV against its first column.

    Columns are grouped by family (``train_*`` losses together, ``val_*`` scores
    together, ``lr`` alone) into one subplot each.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise EEGKitError(f"{csv_path}: no rows to plot")
    x_key = next(iter(rows[0]))
    families: dict[str, list[str]] = {}
    for key in {k: None for row in rows for k in row}:
        if key == x_key:
            continue
        family = "lr" if key == "lr" else key.split("_", 1)[0]
        families.setdefault(family, []).append(key)
    fig, axes = plt.subplots(len(families), 1, figsize=(7, 2.6 * len(families)), squeeze=False)
    for axis, (family, keys) in zip(axes[:, 0], families.items()):
        for key in keys:
            points = [(float(r[x_key]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
            if points:
                xs, ys = zip(*points)
                axis.plot(xs, ys, marker="o", markersize=3, label=key)
        axis.set_ylabel(family)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[-1, 0].set_xlabel(x_key)
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    atomic_savefig(fig, png_path, dpi=110)
    plt.close(fig)
    return Path(png_path)


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: dict, optimizer=None, scheduler=None,
                    extra: dict | None = None) -> Path:
    """Atomically save model weights with the config (and optimiser/scheduler state for resuming)."""
    state = {
        "config": config,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": extra or {},
    }
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by `save_checkpoint`; one-line errors for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise EEGKitError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # torch raises many types for corrupt files
        raise EEGKitError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or "config" not in state or "model" not in state:
        raise EEGKitError(f"{path}: not an eegkit checkpoint (no config/model inside)")
    return state


def average_checkpoints(paths: Iterable[str | Path]) -> dict[str, torch.Tensor]:
    """Uniform average of the model weights of several checkpoints (integer buffers from the last)."""
    paths = list(paths)
    if not paths:
        raise EEGKitError("average_checkpoints: no checkpoints given")
    average: dict[str, torch.Tensor] = {}
    for path in paths:
        weights = load_checkpoint(path)["model"]
        for name, tensor in weights.items():
            if name not in average:
                average[name] = tensor.detach().clone().double() if tensor.is_floating_point() else tensor.clone()
            elif tensor.is_floating_point():
                average[name] += tensor.double()
            else:
                average[name] = tensor.clone()
    dtypes = {name: tensor.dtype for name, tensor in load_checkpoint(paths[0])["model"].items()}
    for name, tensor in average.items():
        if tensor.is_floating_point():
            average[name] = (tensor / len(paths)).to(dtypes[name])
    return average
