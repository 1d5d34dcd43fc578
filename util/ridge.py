"""The closed-form ridge backward decoder shared by the tasks (EEG -> stimulus feature), and its run folder.

* `check_targets`: the ``{target_name: bands}`` mapping every regression model (the decoder, Task 2's
  models) is built with.
* `lagged_design`: (batch, time, C) -> (batch, time - n_taps + 1, n_taps * C), lags 0 .. n_taps-1.
* `RidgeDecoder` -- the classic ridge backward model with lags 0 .. n_taps-1 (26 taps = 0-400 ms
  at 64 Hz): output frame t is computed from EEG frames t .. t + n_taps - 1 (the EEG lags the
  stimulus), so it is aligned with target frame t. It is fitted with *streaming* covariance:
  `partial_fit` accumulates (in float64) X^T X, X^T y and the sums of X and y chunk by chunk, never
  storing the lagged design matrix of the whole data set. `solve(alpha)` centres the accumulated
  statistics (so an intercept is fitted and not penalised) and solves (Cxx + lambda I) W = Cxy with
  lambda = alpha * trace(Cxx) / D, i.e. alpha is relative to the mean eigenvalue of the centred
  covariance; that makes one alpha grid usable whatever the data scale or amount. `select_alpha`
  picks alpha from a list by mean Pearson r (`util.metrics.pearson_np`) on a *validation* set
  (never the test set). Weights and biases are buffers, so the fitted decoder saves/loads through
  a normal state_dict/checkpoint and predicts in torch.
* `save_ridge_run`: the run folder of a closed-form fit (config.yaml, best.pt, last.pt, a one-row
  log.csv, curves.png), the same files `util.trainer.fit` writes for a trained model.

Task 2 registers the decoder as ``model.type: ridge`` (`task2_regression.models`); Task 1 wraps it
as its linear match-mismatch baseline (`task1_match_mismatch.models.ridge`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from util.errors import EEGKitError
from util.metrics import pearson_np


def check_targets(targets: Mapping[str, int]) -> dict[str, int]:
    """Validate a {target_name: bands} mapping (used by every model's constructor)."""
    out = {str(name): int(bands) for name, bands in dict(targets).items()}
    if not out:
        raise ValueError("targets must name at least one target, e.g. {'mel': 10}")
    for name, bands in out.items():
        if bands < 1:
            raise ValueError(f"target {name!r} must have >= 1 band, got {bands}")
    return out


def lagged_design(eeg: torch.Tensor, n_taps: int) -> torch.Tensor:
    """Lagged design matrix: (batch, time, C) -> (batch, time - n_taps + 1, n_taps * C).

    Row t holds [eeg[t + 0], eeg[t + 1], ..., eeg[t + n_taps - 1]] (feature index lag * C + channel).
    """
    windows = eeg.unfold(1, n_taps, 1)  # (batch, time', C, n_taps)
    batch, time_out, n_channels, _ = windows.shape
    return windows.permute(0, 1, 3, 2).reshape(batch, time_out, n_taps * n_channels)


class RidgeDecoder(nn.Module):
    """Closed-form ridge backward model with streaming covariance (see module docstring).

    Usage::

        model = RidgeDecoder({'mel': 10})
        for eeg, mel in train_pairs:             # eeg (T, 64) or (B, T, 64); mel (T, 10) / (B, T, 10)
            model.partial_fit(eeg, {'mel': mel})
        model.select_alpha([1e-3, 1e-2, 1e-1, 1, 10], val_pairs)   # or model.solve(alpha)
        out = model(eeg_batch)['mel']            # (B, T - n_taps + 1, 10)
    """

    closed_form = True  # trainers: fit with partial_fit/solve instead of gradient descent

    def __init__(
        self,
        targets: Mapping[str, int],
        n_channels: int = 64,
        n_taps: int = 26,
        alpha: float = 1.0,
        alphas: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0),
        select_target: str | None = None,
    ):
        super().__init__()
        self.targets = check_targets(targets)
        self.n_channels = int(n_channels)
        self.n_taps = int(n_taps)
        self.alphas = [float(a) for a in alphas]
        self.select_target = select_target or next(iter(self.targets))
        if self.select_target not in self.targets:
            raise ValueError(f"select_target {self.select_target!r} is not one of {list(self.targets)}")
        n_features = self.n_taps * self.n_channels
        for name, bands in self.targets.items():
            self.register_buffer(f"weight_{name}", torch.zeros(n_features, bands))  # (n_taps*64, bands)
            self.register_buffer(f"bias_{name}", torch.zeros(bands))
        self.register_buffer("alpha", torch.tensor(float(alpha), dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(False))
        self.reset_statistics()

    # ------------------------------------------------------------------ statistics
    def reset_statistics(self) -> None:
        """Forget the accumulated covariance (the fitted weights are kept)."""
        n_features = self.n_taps * self.n_channels
        n_outputs = sum(self.targets.values())
        self._n = 0
        self._xtx = torch.zeros(n_features, n_features, dtype=torch.float64)
        self._xty = torch.zeros(n_features, n_outputs, dtype=torch.float64)
        self._sum_x = torch.zeros(n_features, dtype=torch.float64)
        self._sum_y = torch.zeros(n_outputs, dtype=torch.float64)

    @property
    def n_frames_seen(self) -> int:
        return self._n

    def _batched(self, array, name: str, n_dims: int) -> torch.Tensor:
        tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
        tensor = tensor.detach().to("cpu", torch.float64)
        if tensor.ndim == 1 and name != "eeg":
            tensor = tensor[:, None]  # (time,) envelope -> (time, 1)
        if tensor.ndim == 2:
            tensor = tensor[None]  # (1, time, C)
        if tensor.ndim != 3 or tensor.shape[-1] != n_dims:
            raise ValueError(f"{name}: expected (time, {n_dims}) or (batch, time, {n_dims}), got {tuple(tensor.shape)}")
        return tensor

    def _stack_targets(self, targets, batch: int, time: int) -> torch.Tensor:
        if not isinstance(targets, Mapping):
            if len(self.targets) != 1:
                raise ValueError(f"several targets {list(self.targets)}: pass a dict of arrays")
            targets = {next(iter(self.targets)): targets}
        parts = []
        for name, bands in self.targets.items():
            if name not in targets:
                raise ValueError(f"missing target {name!r} in partial_fit/select_alpha data")
            tensor = self._batched(targets[name], name, bands)
            if tensor.shape[0] != batch or tensor.shape[1] < time:
                raise ValueError(f"{name}: shape {tuple(tensor.shape)} does not match EEG (batch {batch}, time {time})")
            parts.append(tensor[:, :time])
        return torch.cat(parts, dim=-1)  # (batch, time, sum(bands))

    def partial_fit(self, eeg, targets, chunk_frames: int = 8192) -> "RidgeDecoder":
        """Accumulate float64 covariance statistics from one recording / batch.

        eeg: (time, 64) or (batch, time, 64); targets: array of the same layout (single target) or
        dict {name: array}. Only the first time - n_taps + 1 target frames are used (those with a
        full EEG lag window). The data are processed in chunks of about `chunk_frames` design rows
        (all batch items together) so memory stays O(chunk_frames * n_taps * 64) float64.
        """
        eeg64 = self._batched(eeg, "eeg", self.n_channels)  # (batch, time, 64)
        batch, time, _ = eeg64.shape
        time_out = time - self.n_taps + 1
        if time_out < 1:
            raise ValueError(f"eeg: {time} frames is shorter than the {self.n_taps} lags")
        target64 = self._stack_targets(targets, batch, time_out)  # (batch, time_out, outputs)
        step = max(1, chunk_frames // batch)  # at most ~chunk_frames design rows per chunk
        for start in range(0, time_out, step):
            stop = min(time_out, start + step)
            design = lagged_design(eeg64[:, start : stop + self.n_taps - 1], self.n_taps)  # (batch, n, D)
            design = design.reshape(-1, design.shape[-1])
            y = target64[:, start:stop].reshape(-1, target64.shape[-1])
            self._xtx += design.T @ design
            self._xty += design.T @ y
            self._sum_x += design.sum(0)
            self._sum_y += y.sum(0)
            self._n += design.shape[0]
        return self

    # ------------------------------------------------------------------ solving
    def _centred(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._n < 2:
            raise RuntimeError("RidgeDecoder: call partial_fit on some data before solve()")
        mean_x = self._sum_x / self._n
        mean_y = self._sum_y / self._n
        cxx = self._xtx - self._n * torch.outer(mean_x, mean_x)
        cxy = self._xty - self._n * torch.outer(mean_x, mean_y)
        return cxx, cxy, mean_x, mean_y

    def _set_weights(self, weights: torch.Tensor, mean_x: torch.Tensor, mean_y: torch.Tensor, alpha: float) -> None:
        bias = mean_y - mean_x @ weights
        offset = 0
        for name, bands in self.targets.items():
            getattr(self, f"weight_{name}").copy_(weights[:, offset : offset + bands].float())
            getattr(self, f"bias_{name}").copy_(bias[offset : offset + bands].float())
            offset += bands
        self.alpha.fill_(float(alpha))
        self.fitted.fill_(True)

    def solve(self, alpha: float | None = None) -> "RidgeDecoder":
        """Solve the ridge system from the accumulated statistics.

        lambda = alpha * trace(Cxx) / D (alpha relative to the mean eigenvalue of the centred
        covariance Cxx; D = n_taps * 64). The intercept is not penalised.
        """
        alpha = float(self.alpha) if alpha is None else float(alpha)
        cxx, cxy, mean_x, mean_y = self._centred()
        n_features = cxx.shape[0]
        ridge = alpha * torch.trace(cxx) / n_features
        weights = torch.linalg.solve(cxx + ridge * torch.eye(n_features, dtype=cxx.dtype), cxy)
        self._set_weights(weights, mean_x, mean_y, alpha)
        return self

    def select_alpha(self, alphas: Sequence[float] | None, val_data: Iterable) -> dict[float, float]:
        """Choose alpha by mean Pearson r on validation data; leaves the model solved at the best alpha.

        val_data: iterable of (eeg, targets) pairs like partial_fit's arguments (one recording or
        window each). The score of an alpha is the mean over pairs of the per-band Pearson r (mean
        over bands) of `select_target`. Uses one eigendecomposition for the whole grid.
        Returns {alpha: score}. Never pass the test split here.
        """
        alphas = self.alphas if alphas is None else [float(a) for a in alphas]
        if not alphas:
            raise ValueError("select_alpha needs at least one alpha")
        cxx, cxy, mean_x, mean_y = self._centred()
        eigval, eigvec = torch.linalg.eigh(cxx)  # cxx = V diag(e) V^T
        projected = eigvec.T @ cxy  # (D, outputs)
        mean_eig = torch.trace(cxx) / cxx.shape[0]
        offset = 0
        for name, bands in self.targets.items():
            if name == self.select_target:
                break
            offset += bands
        sel = slice(offset, offset + self.targets[self.select_target])
        all_weights = [eigvec @ (projected / (eigval + alpha * mean_eig)[:, None]) for alpha in alphas]  # (D, out)
        all_bias = [mean_y - mean_x @ weights for weights in all_weights]
        pair_scores: list[list[float]] = [[] for _ in alphas]
        for eeg, targets in val_data:  # one lagged design matrix in memory at a time
            eeg64 = self._batched(eeg, "eeg", self.n_channels)
            time_out = eeg64.shape[1] - self.n_taps + 1
            design = lagged_design(eeg64, self.n_taps)  # (batch, time_out, D)
            y = self._stack_targets(targets, eeg64.shape[0], time_out)[..., sel].numpy()
            for k, (weights, bias) in enumerate(zip(all_weights, all_bias)):
                pred = (design @ weights[:, sel] + bias[sel]).numpy()  # (batch, time_out, bands)
                pair_scores[k].extend(float(pearson_np(pred[b], y[b]).mean()) for b in range(pred.shape[0]))
        if not pair_scores[0]:
            raise ValueError("select_alpha needs at least one validation pair")
        scores = {alpha: float(np.mean(values)) for alpha, values in zip(alphas, pair_scores)}
        best = max(range(len(alphas)), key=lambda k: scores[alphas[k]])
        best_alpha, best_weights = alphas[best], all_weights[best]
        self._set_weights(best_weights, mean_x, mean_y, best_alpha)
        return scores

    # ------------------------------------------------------------------ predicting
    def forward(self, eeg: torch.Tensor) -> dict[str, torch.Tensor]:
        if eeg.shape[1] < self.n_taps:
            raise ValueError(f"RidgeDecoder needs at least {self.n_taps} frames, got {eeg.shape[1]}")
        design = lagged_design(eeg, self.n_taps)  # (batch, time - n_taps + 1, n_taps*64)
        out = {}
        for name in self.targets:
            weight = getattr(self, f"weight_{name}").to(design.dtype)
            out[name] = design @ weight + getattr(self, f"bias_{name}").to(design.dtype)  # (batch, time', bands)
        return out


def save_ridge_run(model: nn.Module, cfg: dict, out_dir, row: dict, monitor: str, task: str,
                   overwrite: bool = False) -> None:
    """Write a closed-form fit as a run folder: config.yaml, best.pt = last.pt, log.csv (``row``), curves.png.

    ``row``: the one log.csv row (``epoch`` 0, the validation scores, ``alpha``, ``time_s``);
    ``row[monitor]`` is stored as ``best_val``. A non-finite one saves nothing (one error line).
    ``overwrite`` (or a resumed run) replaces the run files of an old run in ``out_dir`` first. The writes hold
    the run folder's lock (`util.outdir.out_lock`), as the trainer's do.
    """
    import shutil

    from util import config as config_util
    from util import training
    from util.outdir import out_lock, prepare_out_dir
    from util.trainer import RUN_FILES

    out_dir = Path(out_dir)
    val_score = float(row[monitor])
    if not math.isfinite(val_score):
        raise EEGKitError(f"{out_dir}: ridge validation score is {val_score}; nothing saved (check the data for "
                          f"NaN/Inf, flat EEG or constant targets)")
    with out_lock(out_dir, "--out"):  # a second writer into the same run folder is refused while this one writes
        if overwrite and out_dir.is_dir():
            for name in RUN_FILES:
                target = out_dir / name
                shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        prepare_out_dir(out_dir)
        config_util.save_config(cfg, out_dir / "config.yaml")
        extra = {"epoch": 0, "best_val": val_score, "kind": "closed_form"}
        training.save_checkpoint(out_dir / "best.pt", model, cfg, extra=extra, task=task)
        training.save_checkpoint(out_dir / "last.pt", model, cfg, extra=extra, task=task)
        training.CSVLogger(out_dir / "log.csv", resume=False).log(row)
        training.plot_curves(out_dir / "log.csv", out_dir / "curves.png", title=f"{out_dir.name} (ridge)")
