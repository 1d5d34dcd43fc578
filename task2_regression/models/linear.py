"""Linear backward models for Task 2: EEG -> stimulus feature (mel / envelope).

Two models, both following the model contract in docs/DESIGN.md
(`model(eeg (batch, time, 64)) -> {target: (batch, time_out, bands)}`):

* `LinearConv` -- the challenge's linear baseline: one Conv1d per target,
  64 channels -> bands, `n_taps` taps (16 = 250 ms at 64 Hz), valid padding.
  The output has `time - n_taps + 1` frames; output frame t is computed from
  EEG frames t .. t + n_taps - 1 (the EEG lags the stimulus), so output frame t
  is aligned with target frame t. Trained by gradient descent like any net.

* `RidgeDecoder` -- the classic closed-form ridge backward model with lags
  0 .. n_taps-1 (26 taps = 0-400 ms at 64 Hz), same alignment as LinearConv, fitted
  from streaming covariance with alpha chosen on validation data. It lives in
  `util.ridge` (Task 1's linear match-mismatch baseline uses it too; its docstring
  gives the details) and is imported here.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from task2_regression.models.contract import check_targets
from util.ridge import RidgeDecoder, lagged_design  # noqa: F401


class LinearConv(nn.Module):
    """One valid-padded Conv1d per target: (batch, time, 64) -> (batch, time - n_taps + 1, bands)."""

    def __init__(self, targets: Mapping[str, int], n_channels: int = 64, n_taps: int = 16):
        super().__init__()
        self.targets = check_targets(targets)
        self.n_channels = int(n_channels)
        self.n_taps = int(n_taps)
        self.convs = nn.ModuleDict(
            {name: nn.Conv1d(self.n_channels, bands, kernel_size=self.n_taps) for name, bands in self.targets.items()}
        )

    def forward(self, eeg: torch.Tensor) -> dict[str, torch.Tensor]:
        if eeg.shape[1] < self.n_taps:
            raise ValueError(f"LinearConv needs at least {self.n_taps} frames, got {eeg.shape[1]}")
        eeg_cf = eeg.transpose(1, 2)  # (batch, 64, time)
        # conv output t = sum_k w[k] * eeg[t + k]: uses EEG t..t+n_taps-1 (EEG lags stimulus)
        return {name: conv(eeg_cf).transpose(1, 2) for name, conv in self.convs.items()}  # (batch, time-n_taps+1, bands)
