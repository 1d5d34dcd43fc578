"""EEG encoders shared by the tasks' models: the VLAAI stack (Accou et al. 2023) without its output heads.

Task 2's `task2_regression.models.vlaai.VLAAI` is this stack plus one linear head per target;
Task 1's `task1_match_mismatch.models.kit_encoder` uses it as the EEG branch of a match-mismatch
model. Structure::

  x = eeg                                       # (batch, time, 64)
  for block in range(n_blocks):                 # 4 blocks
      if block > 0: x = x + eeg                 # skip: raw EEG added back before each later block
      x = extractor(x)                          # SHARED: 5 x [zero-pad, Conv1d, LayerNorm, LeakyReLU]
      x = dense[block](x)                       # Linear(last filters -> 64), one per block
      x = output_context(x)                     # SHARED: zero-pad, Conv1d(64, 64, k), LayerNorm, LeakyReLU
  return x                                      # (batch, time, 64)

The extractor and the output-context modules are single module objects reused by every block,
so their weights are shared. The per-block Dense(64) is a separate layer in each block (the
published model creates it inside the block loop); ``share_dense=True`` shares it as well. Zero
padding of kernel-1 frames keeps the length (time_out == time): ``padding="causal"`` pads on the
left (output t sees inputs t-k+1..t, the published model), ``"anticausal"`` on the right (output
t sees inputs t..t+k-1, the direction in which the EEG lags the stimulus). LayerNorm normalises
over channels at each time step.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

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


class VLAAIEncoder(nn.Module):
    """The VLAAI block stack: ``eeg (batch, time, n_channels) -> (batch, time, n_channels)``.

    Attributes ``extractor``, ``dense`` and ``output_context`` (their state-dict keys are those of
    the Task 2 VLAAI, which subclasses this). ``out_channels`` is ``n_channels``.
    """

    def __init__(self, n_channels: int = 64, n_blocks: int = 4, filters: Sequence[int] = (256, 256, 256, 128, 128),
                 kernels: Sequence[int] | int = 64, context_filters: int | None = None, context_kernel: int = 64,
                 share_dense: bool = False, padding: str = "causal"):
        super().__init__()
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
        self.out_channels = context_filters

    def encode(self, eeg: torch.Tensor) -> torch.Tensor:
        """``(batch, time, n_channels) -> (batch, time, n_channels)``: the blocks with the EEG skip."""
        x = eeg  # (batch, time, 64)
        for block in range(self.n_blocks):
            if block > 0:
                x = x + eeg  # skip connection with the raw EEG
            x = self.extractor(x)  # (batch, time, filters[-1])
            x = self.dense[block](x)  # (batch, time, 64)
            x = self.output_context(x)  # (batch, time, 64)
        return x

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.encode(eeg)
