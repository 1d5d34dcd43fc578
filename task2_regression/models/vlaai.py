"""VLAAI (Accou et al. 2023) regression baseline for Task 2, in PyTorch.

The block stack is `util.encoders.VLAAIEncoder` (shared with Task 1's kit-encoder model); this
class adds the heads. Structure (docs reference, section 5):
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

from task2_regression.models.contract import check_targets
from util.encoders import PADDINGS, CausalConvNormAct, Extractor, VLAAIEncoder  # noqa: F401


class VLAAI(VLAAIEncoder):
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
        super().__init__(n_channels, n_blocks, filters, kernels, context_filters, context_kernel, share_dense, padding)
        self.targets = check_targets(targets)
        self.heads = nn.ModuleDict({name: nn.Linear(self.out_channels, bands) for name, bands in self.targets.items()})

    def forward(self, eeg: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.encode(eeg)  # (batch, time, 64)
        return {name: head(x) for name, head in self.heads.items()}  # (batch, time, bands)
