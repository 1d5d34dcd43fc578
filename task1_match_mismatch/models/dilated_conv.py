"""The Task 1 baseline: the dilated convolutional match-mismatch model (Accou et al., EUSIPCO 2020).

Facts: `../shared/reference/task1_match_mismatch.md` section 3. Contract of every Task 1 model::

    model(eeg (batch, T, 64), stimuli (batch, K, T, bands)) -> logits (batch, K)

(softmax over the K candidates gives the probabilities; cross-entropy trains them).

- EEG branch: 1x1 conv 64 -> ``spatial_filters`` (8), no activation; then ``n_layers`` (3) dilated
  convs of ``filters`` (16) filters, kernel 3, dilation ``dilation_base ** k`` (1, 3, 9), **valid**
  padding, ReLU: the time axis shrinks by (kernel - 1) x (1 + 3 + 9) = 26 frames.
- Stimulus branch (`DilatedStack`): the same dilated convs on the stimulus feature (1 band for
  the envelope, 10 for mel); ONE set of weights applied to all K candidates (not shared with the
  EEG branch).
- `SimilarityHead`: for each candidate, the cosine similarity along time between every EEG filter
  output and every stimulus filter output (a filters x filters matrix, 16 x 16), flattened (256
  values) and mapped to one score by a dense layer shared across the candidates.

Built from the ``model:`` section of a Task 1 config (`task1_match_mismatch.models.build_model`);
``stimulus_bands`` is set by train.py from ``data.feature``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DilatedStack(nn.Module):
    """``n_layers`` x [Conv1d(kernel, dilation base**k, valid) + ReLU]: (batch, C, T) -> (batch, filters, T - shrink)."""

    def __init__(self, in_channels: int, filters: int = 16, kernel: int = 3, n_layers: int = 3, dilation_base: int = 3):
        super().__init__()
        layers, channels = [], int(in_channels)
        for k in range(int(n_layers)):
            layers += [nn.Conv1d(channels, int(filters), int(kernel), dilation=int(dilation_base) ** k), nn.ReLU()]
            channels = int(filters)
        self.layers = nn.Sequential(*layers)
        self.shrink = (int(kernel) - 1) * sum(int(dilation_base) ** k for k in range(int(n_layers)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, C, T) -> (batch, filters, T - shrink)
        return self.layers(x)


class SimilarityHead(nn.Module):
    """Cosine similarity along time of every (EEG filter, stimulus filter) pair -> one score per candidate."""

    def __init__(self, eeg_filters: int = 16, stimulus_filters: int = 16):
        super().__init__()
        self.dense = nn.Linear(int(eeg_filters) * int(stimulus_filters), 1)  # shared across the candidates

    def forward(self, eeg_features: torch.Tensor, stimulus_features: torch.Tensor) -> torch.Tensor:
        """eeg_features (batch, F_e, T'), stimulus_features (batch, K, F_s, T') -> logits (batch, K)."""
        eeg_unit = F.normalize(eeg_features, dim=-1)  # unit length along time
        stimulus_unit = F.normalize(stimulus_features, dim=-1)
        cosine = torch.einsum("bet,bkst->bkes", eeg_unit, stimulus_unit)  # (batch, K, F_e, F_s)
        return self.dense(cosine.flatten(2)).squeeze(-1)  # (batch, K)


def stimulus_features(stack: DilatedStack, stimuli: torch.Tensor) -> torch.Tensor:
    """The shared stimulus branch on every candidate: (batch, K, T, bands) -> (batch, K, filters, T - shrink)."""
    batch, n_candidates, time, bands = stimuli.shape
    flat = stimuli.reshape(batch * n_candidates, time, bands).transpose(1, 2)  # (batch * K, bands, T)
    out = stack(flat)  # (batch * K, filters, T')
    return out.reshape(batch, n_candidates, out.shape[1], out.shape[2])


def check_inputs(eeg: torch.Tensor, stimuli: torch.Tensor, n_channels: int, bands: int, min_frames: int) -> None:
    """Shapes of the model contract; a ValueError naming the mismatch."""
    if eeg.dim() != 3 or eeg.shape[-1] != n_channels:
        raise ValueError(f"eeg must be (batch, time, {n_channels}), got {tuple(eeg.shape)}")
    if stimuli.dim() != 4 or stimuli.shape[-1] != bands or stimuli.shape[0] != eeg.shape[0] \
            or stimuli.shape[2] != eeg.shape[1]:
        raise ValueError(f"stimuli must be (batch {eeg.shape[0]}, K, time {eeg.shape[1]}, {bands} bands), "
                         f"got {tuple(stimuli.shape)}")
    if eeg.shape[1] <= min_frames:
        raise ValueError(f"segments of {eeg.shape[1]} frames are too short: the model needs more than {min_frames}")


class DilatedConvModel(nn.Module):
    """The dilated convolutional baseline: eeg (batch, T, 64), stimuli (batch, K, T, bands) -> logits (batch, K)."""

    def __init__(self, stimulus_bands: int = 1, n_channels: int = 64, spatial_filters: int = 8, filters: int = 16,
                 kernel: int = 3, n_layers: int = 3, dilation_base: int = 3):
        super().__init__()
        self.n_channels, self.stimulus_bands = int(n_channels), int(stimulus_bands)
        self.spatial = nn.Conv1d(self.n_channels, int(spatial_filters), 1)  # no activation
        self.eeg_stack = DilatedStack(spatial_filters, filters, kernel, n_layers, dilation_base)
        self.stimulus_stack = DilatedStack(self.stimulus_bands, filters, kernel, n_layers, dilation_base)
        self.head = SimilarityHead(filters, filters)
        self.shrink = self.eeg_stack.shrink  # 26 frames with the defaults

    def forward(self, eeg: torch.Tensor, stimuli: torch.Tensor) -> torch.Tensor:
        check_inputs(eeg, stimuli, self.n_channels, self.stimulus_bands, self.shrink)
        eeg_out = self.eeg_stack(self.spatial(eeg.transpose(1, 2)))  # (batch, filters, T - 26)
        return self.head(eeg_out, stimulus_features(self.stimulus_stack, stimuli))  # (batch, K)
