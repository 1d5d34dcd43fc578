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


CHECKPOINT_FORMAT = 2  # the kit's checkpoint layout (`save_checkpoint`)
TASK_NAMES = {"task1": "Task 1 match-mismatch", "task2": "Task 2 regression", "speaker_extraction": "speaker-extraction"}


def plain(value: Any, where: str = "checkpoint") -> Any:
    """``value`` as plain data (dict/list/str/int/float/bool/None/tensor) for a ``weights_only`` checkpoint.

    Tuples stay tuples, NumPy arrays and scalars become lists and Python numbers, paths become strings;
    anything else is a programming error (TypeError).
    """
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {plain(k, where): plain(v, where) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v, where) for v in value)
    if isinstance(value, list):
        return [plain(v, where) for v in value]
    raise TypeError(f"{where}: {type(value).__name__} is not plain data")


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: dict, optimizer=None, scheduler=None,
                    extra: dict | None = None, *, task: str) -> Path:
    """Atomically save model weights with the config (and optimiser/scheduler state for resuming).

    Only tensors and plain data are stored (`plain`), so `load_checkpoint` reads it with
    ``torch.load(weights_only=True)``; the header records the kit format, the task and the model type.
    """
    if task not in TASK_NAMES:
        raise ValueError(f"task must be one of {sorted(TASK_NAMES)}")
    state = {
        "eegkit_checkpoint": CHECKPOINT_FORMAT,
        "task": task,
        "model_type": str((config.get("model") or {}).get("type", "")),
        "config": plain(config, "config"),
        "model": unwrap(model).state_dict(),
        "optimizer": plain(optimizer.state_dict(), "optimizer") if optimizer is not None else None,
        "scheduler": plain(scheduler.state_dict(), "scheduler") if scheduler is not None else None,
        "extra": plain(extra or {}, "extra"),
    }
    return atomic_torch_save(state, path)


def _refusal(path: Path, error: Exception) -> str:
    """The one-line cause of a failed ``weights_only`` load: crafted pickle, or unreadable file."""
    import re

    text = str(error)
    with open(path, "rb") as handle:
        head = handle.read(4)
    is_pickle = head[:1] == b"\x80" or head[:4] == b"PK\x03\x04"  # a pickle, or torch's zip holding one
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (f"{path}: refused: its pickle asks to run {found.group(1)}, which a checkpoint never needs "
                f"(a crafted file, or one written by another tool or an older eegkit); nothing was loaded")
    found = re.search(r"Unsupported operand (\d+)", text)
    if is_pickle and (found or "Weights only load failed" in text):
        what = f" (pickle opcode {found.group(1)})" if found else ""
        return (f"{path}: refused: its pickle holds more than tensors and plain data{what} (crafted, or not "
                f"a checkpoint); nothing was loaded")
    if head[:4] == b"PK\x03\x04":
        return f"{path}: not a readable checkpoint (a damaged or truncated PyTorch file)"
    return f"{path}: not a readable checkpoint (truncated, or not a PyTorch file)"


RUN_CHECKPOINTS = ("best", "last", "averaged")  # the checkpoints of a run folder a --checkpoint flag may name


def run_checkpoint(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """``RUN/<checkpoint>.pt`` of a run folder; a name outside `RUN_CHECKPOINTS` or a missing folder is one line."""
    run_dir = Path(run_dir)
    if checkpoint not in RUN_CHECKPOINTS:
        raise EEGKitError(f"--checkpoint: must be one of {RUN_CHECKPOINTS}, got {checkpoint!r}")
    if not run_dir.is_dir():
        raise EEGKitError(f"{run_dir}: run folder not found")
    return run_dir / f"{checkpoint}.pt"


def read_torch_file(path: str | Path, map_location: str | torch.device = "cpu",
                    expected: str = "a .pt checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` with the kit's one-line refusals: missing, not a file,
    unreadable, truncated or not a PyTorch file, a crafted pickle (`_refusal`). ``expected`` completes
    "is not a file (expected ...)". Used by `load_checkpoint` and `util.checkpoint_import`."""
    import warnings

    path = Path(path)
    if not path.exists():
        raise EEGKitError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise EEGKitError(f"{path}: is not a file (expected {expected})")
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as error:
        raise EEGKitError(f"{path}: cannot read the checkpoint ({error.strerror or type(error).__name__})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or crafted files
        raise EEGKitError(_refusal(path, error)) from None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", task: str | None = None,
                    model_type: str | None = None) -> dict:
    """Load a checkpoint written by `save_checkpoint` with ``weights_only=True``; one-line errors.

    The causes are told apart: missing, unreadable (truncated, not a PyTorch file), refused (a
    pickle that asks for code: crafted), not an eegkit checkpoint, another task than ``task``,
    another model than ``model_type``.
    """
    path = Path(path)
    state = read_torch_file(path, map_location, expected="a .pt checkpoint")
    if not isinstance(state, dict) or state.get("eegkit_checkpoint") is None:
        kind = "a tensor-only state dict" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise EEGKitError(f"{path}: not an eegkit checkpoint ({kind} without the kit's header; "
                          f"train one with the kit's train.py)")
    if state.get("eegkit_checkpoint") != CHECKPOINT_FORMAT or not isinstance(state.get("config"), dict) \
            or not isinstance(state.get("model"), dict):
        raise EEGKitError(f"{path}: eegkit checkpoint format {state.get('eegkit_checkpoint')!r} is not "
                          f"format {CHECKPOINT_FORMAT} (or its config/model is missing)")
    if task is not None and state.get("task") != task:
        found = TASK_NAMES.get(state.get("task"), repr(state.get("task")))
        raise EEGKitError(f"{path}: a {found} checkpoint (model {state.get('model_type') or '?'}), expected a "
                          f"{TASK_NAMES[task]} one ({task})")
    if model_type is not None and state.get("model_type") != model_type:
        raise EEGKitError(f"{path}: a {state.get('model_type')!r} model checkpoint, expected {model_type!r} "
                          f"(the config's model.type)")
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
