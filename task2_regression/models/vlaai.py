"""VLAAI (Accou et al. 2023) regression baseline for Task 2, in PyTorch.

Structure (docs reference, section 5):
  x = eeg                                       # (batch, time, 64)
  for block in range(n_blocks):                 # 4 blocks
      if block > 0: x = x + eeg                 # skip: raw EEG added back before each later block
      x = extractor(x)                          # SHARED: 5 x [left zero-pad, Conv1d, LayerNorm, LeakyReLU]
      x = dense[block](x)                       # Linear(last filters -> 64), one per block
      x = output_context(x)                     # SHARED: left zero-pad, Conv1d(64, 64, k), LayerNorm, LeakyReLU
  out[target] = head[target](x)                 # Linear(64 -> bands), one per target

The extractor and the output-context modules are single module objects reused by every
block, so their weights are shared. The per-block Dense(64) is a separate layer in each
block (the published model creates it inside the block loop); set `share_dense: true`
to share it as well. The first block takes the EEG itself (adding the EEG to itself would
only rescale it). Left ("causal-style") zero padding of kernel-1 frames keeps the length,
so time_out == time. LayerNorm normalises over channels at each time step.
`padding: anticausal` pads on the right instead (output t sees EEG t..t+k-1, the direction
in which the EEG lags the stimulus, like the linear backward model); the default "causal" is
the published model.

The organisers' mel script built this model with 1 output for 10 bands; here the head has
as many outputs as the target has bands (10 for mel), fixing that bug.
Defaults are the challenge model (filters 256,256,256,128,128, kernels 64); the small CPU
variant lives in configs/vlaai_small.yaml.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from task2_regression.models.contract import check_targets


PADDINGS = ("causal", "anticausal")


class CausalConvNormAct(nn.Module):
    """Zero padding (kernel-1) + Conv1d + LayerNorm over channels + LeakyReLU; keeps the length.

    padding "causal" pads on the left (output t sees inputs t-k+1..t, as in VLAAI);
    "anticausal" pads on the right (output t sees inputs t..t+k-1, the direction of the EEG lag).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, negative_slope: float = 0.01,
                 padding: str = "causal"):
        super().__init__()
        if padding not in PADDINGS:
            raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
        self.kernel_size = int(kernel_size)
        self.pad = (self.kernel_size - 1, 0) if padding == "causal" else (0, self.kernel_size - 1)
        self.conv = nn.Conv1d(in_channels, out_channels, self.kernel_size)
        self.norm = nn.LayerNorm(out_channels)
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, time, in) -> (batch, time, out)
        x_cf = F.pad(x.transpose(1, 2), self.pad)  # (batch, in, time + k - 1)
        y = self.conv(x_cf).transpose(1, 2)  # (batch, time, out)
        return F.leaky_relu(self.norm(y), self.negative_slope)


class Extractor(nn.Module):
    """Stack of CausalConvNormAct layers (the shared VLAAI feature extractor)."""

    def __init__(self, in_channels: int, filters: Sequence[int], kernels: Sequence[int], padding: str = "causal"):
        super().__init__()
        if len(filters) != len(kernels):
            raise ValueError(f"filters ({len(filters)}) and kernels ({len(kernels)}) must have the same length")
        layers, channels = [], in_channels
        for n_filters, kernel in zip(filters, kernels):
            layers.append(CausalConvNormAct(channels, int(n_filters), int(kernel), padding=padding))
            channels = int(n_filters)
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, time, in) -> (batch, time, filters[-1])
        return self.layers(x)


class VLAAI(nn.Module):
    """VLAAI with shared extractor / output context and one linear head per target."""

    def __init__(
        self,
        targets: Mapping[str, int],
        n_channels: int = 64,
        n_blocks: int = 4,
        filters: Sequence[int] = (256, 256, 256, 128, 128),
        kernels: Sequence[int] | int = 64,
        context_filters: int | None = None,
        context_kernel: int = 64,
        share_dense: bool = False,
        padding: str = "causal",
    ):
        super().__init__()
        self.targets = check_targets(targets)
        self.n_channels = int(n_channels)
        self.n_blocks = int(n_blocks)
        if isinstance(kernels, int):
            kernels = [kernels] * len(filters)
        # the context layer's output is added to the raw EEG, so it must have n_channels filters
        context_filters = self.n_channels if context_filters is None else int(context_filters)
        if context_filters != self.n_channels:
            raise ValueError(f"context_filters must equal n_channels ({self.n_channels}) for the EEG skip")
        self.extractor = Extractor(self.n_channels, list(filters), list(kernels), padding=padding)
        if share_dense:
            dense = nn.Linear(self.extractor.out_channels, self.n_channels)
            self.dense = nn.ModuleList([dense] * self.n_blocks)
        else:
            self.dense = nn.ModuleList(
                [nn.Linear(self.extractor.out_channels, self.n_channels) for _ in range(self.n_blocks)]
            )
        self.output_context = CausalConvNormAct(self.n_channels, context_filters, context_kernel, padding=padding)
        self.heads = nn.ModuleDict({name: nn.Linear(context_filters, bands) for name, bands in self.targets.items()})

    def forward(self, eeg: torch.Tensor) -> dict[str, torch.Tensor]:
        x = eeg  # (batch, time, 64)
        for block in range(self.n_blocks):
            if block > 0:
                x = x + eeg  # skip connection with the raw EEG
            x = self.extractor(x)  # (batch, time, filters[-1])
            x = self.dense[block](x)  # (batch, time, 64)
            x = self.output_context(x)  # (batch, time, 64)
        return {name: head(x) for name, head in self.heads.items()}  # (batch, time, bands)
