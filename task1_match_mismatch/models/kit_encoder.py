"""A Task 1 model whose EEG branch is a kit encoder: the VLAAI stack of Task 2 (`util.encoders.VLAAIEncoder`).

Same contract and similarity head as the baseline (`task1_match_mismatch.models.dilated_conv`)::

    eeg (batch, T, 64) -> VLAAIEncoder -> (batch, T, 64) -> 1x1 conv -> (batch, filters, T)
                                                                     -> first T - shrink frames
    stimuli (batch, K, T, bands) -> the baseline's shared dilated stack -> (batch, K, filters, T - shrink)
    -> SimilarityHead (cosine along time of every filter pair, dense layer shared over K) -> logits (batch, K)

The VLAAI stack keeps the length; its output is cut to the stimulus branch's T - shrink frames
(frame t of both then starts at input frame t). ``padding: anticausal`` (the default here) lets
output frame t see EEG frames t..t+k-1, the direction in which the EEG lags the stimulus. The
encoder's weights have the state-dict keys of Task 2's VLAAI under ``encoder.``, so Task 2 work
can be carried over.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from task1_match_mismatch.models.dilated_conv import DilatedStack, SimilarityHead, check_inputs, stimulus_features
from util.encoders import VLAAIEncoder


class VLAAIMatchMismatch(nn.Module):
    """VLAAI EEG branch + the baseline's stimulus branch and similarity head."""

    def __init__(self, stimulus_bands: int = 1, n_channels: int = 64, n_blocks: int = 4,
                 encoder_filters: Sequence[int] = (32, 32, 32, 16, 16), encoder_kernels: Sequence[int] | int = 16,
                 context_kernel: int = 16, share_dense: bool = False, padding: str = "anticausal",
                 filters: int = 16, kernel: int = 3, n_layers: int = 3, dilation_base: int = 3):
        super().__init__()
        self.n_channels, self.stimulus_bands = int(n_channels), int(stimulus_bands)
        self.encoder = VLAAIEncoder(self.n_channels, n_blocks, encoder_filters, encoder_kernels, None, context_kernel,
                                    share_dense, padding)
        self.project = nn.Conv1d(self.encoder.out_channels, int(filters), 1)
        self.stimulus_stack = DilatedStack(self.stimulus_bands, filters, kernel, n_layers, dilation_base)
        self.head = SimilarityHead(filters, filters)
        self.shrink = self.stimulus_stack.shrink

    def forward(self, eeg: torch.Tensor, stimuli: torch.Tensor) -> torch.Tensor:
        check_inputs(eeg, stimuli, self.n_channels, self.stimulus_bands, self.shrink)
        encoded = self.encoder(eeg)  # (batch, T, 64)
        eeg_out = self.project(encoded.transpose(1, 2))[..., : eeg.shape[1] - self.shrink]  # (batch, filters, T')
        return self.head(eeg_out, stimulus_features(self.stimulus_stack, stimuli))  # (batch, K)
