"""Losses and correlation metrics for Task 2 regression.

Tensors are ``(batch, time, bands)``; correlations run over time (dim 1) per band.
When a model returns fewer frames than the target (``time_out <= time``), the
target is cut to the first ``time_out`` frames (output frame i aligns with
target frame i, see docs/DESIGN.md).

- ``neg_pearson_loss(pred, target)`` = mean over batch and bands of ``-r``
- ``l1_loss(pred, target)`` = mean absolute error
- ``kl_mel_loss(pred, target)`` = KL(softmax_bands(target) || softmax_bands(pred)) per
  frame, averaged over batch and frames

The Pearson r itself is `util.metrics.pearson_torch` (and `pearson_np`), shared with the scorers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from util.metrics import align_frames as _align
from util.metrics import pearson_torch


def neg_pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return -pearson_torch(pred, target, eps).mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred, target = _align(pred, target)
    return (pred - target).abs().mean()


def kl_mel_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over frames of KL(P || Q), P = softmax(target) and Q = softmax(pred) over bands."""
    pred, target = _align(pred, target)
    log_p = F.log_softmax(target, dim=-1)
    log_q = F.log_softmax(pred, dim=-1)
    kl_per_frame = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (batch, time)
    return kl_per_frame.mean()
