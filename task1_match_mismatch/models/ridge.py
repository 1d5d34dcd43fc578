"""The linear match-mismatch baseline: a backward ridge decoder of the stimulus feature, then correlation.

`util.ridge.RidgeDecoder` (lags 0 .. n_taps-1, 26 taps = 0-400 ms; streaming covariance; alpha
chosen on the validation split by reconstruction Pearson r) reconstructs the stimulus feature from
the EEG; each candidate's score is the Pearson r (`util.metrics.pearson_torch`, mean over bands) of
the reconstruction with the candidate's first T - n_taps + 1 frames, so the highest-correlated
candidate wins. Same contract as every Task 1 model::

    model(eeg (batch, T, 64), stimuli (batch, K, T, bands)) -> scores (batch, K)

``closed_form`` is True: task1_match_mismatch/train.py fits it with ``partial_fit`` / ``select_alpha``
on the training and validation windows (no gradient descent) and saves it as a normal run.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from task1_match_mismatch.models.dilated_conv import check_inputs
from util.metrics import pearson_torch
from util.ridge import RidgeDecoder

TARGET = "stimulus"  # the decoder's one target: the run's data.feature


class RidgeMatchMismatch(nn.Module):
    """Ridge backward decoder + Pearson r with each candidate."""

    closed_form = True

    def __init__(self, stimulus_bands: int = 1, n_channels: int = 64, n_taps: int = 26, alpha: float = 1.0,
                 alphas: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)):
        super().__init__()
        self.n_channels, self.stimulus_bands, self.n_taps = int(n_channels), int(stimulus_bands), int(n_taps)
        self.decoder = RidgeDecoder({TARGET: self.stimulus_bands}, self.n_channels, self.n_taps, alpha, alphas)

    def forward(self, eeg: torch.Tensor, stimuli: torch.Tensor) -> torch.Tensor:
        check_inputs(eeg, stimuli, self.n_channels, self.stimulus_bands, self.n_taps)
        recon = self.decoder(eeg)[TARGET]  # (batch, T - n_taps + 1, bands)
        batch, n_candidates, _, bands = stimuli.shape
        frames = recon.shape[1]
        repeated = recon.unsqueeze(1).expand(batch, n_candidates, frames, bands).reshape(-1, frames, bands)
        r = pearson_torch(repeated, stimuli[:, :, :frames].reshape(-1, frames, bands).to(recon.dtype))  # (batch*K, bands)
        return r.mean(dim=1).reshape(batch, n_candidates).float()  # (batch, K)
