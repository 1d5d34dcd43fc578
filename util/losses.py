"""Losses and correlation metrics for Task 2 regression.

Tensors are ``(batch, time, bands)``; correlations run over time (dim 1) per band.
When a model returns fewer frames than the target (``time_out <= time``), the
target is cut to the first ``time_out`` frames (output frame i aligns with
target frame i, see docs/DESIGN.md).

- ``neg_pearson_loss(pred, target)`` = mean over batch and bands of ``-r``
- ``l1_loss(pred, target)`` = mean absolute error
- ``kl_mel_loss(pred, target)`` = KL(softmax_bands(target) || softmax_bands(pred)) per
  frame, averaged over batch and frames

The published CAT-WaveNet loss (``../shared/reference/published_models.md`` 1.7) differs in two
constants, selected by arguments: its Pearson divides by ``norm + 1e-6`` instead of
``max(norm, 1e-8)`` (``neg_pearson_loss(..., eps=1e-6, eps_mode='add')``), and its KL is
``KLDivLoss(reduction='mean')``, i.e. divided by batch x time x bands, a tenth of the kit's per-frame
mean for 10 bands (``kl_mel_loss(..., reduction='element')``).

The Pearson r itself is `util.metrics.pearson_torch` (and `pearson_np`), shared with the scorers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from util.metrics import align_frames as _align
from util.metrics import pearson_torch


def neg_pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8,
                     eps_mode: str = "clamp") -> torch.Tensor:
    """Minus the Pearson r over time, averaged over batch and bands (``eps_mode``: see `pearson_torch`)."""
    return -pearson_torch(pred, target, eps, eps_mode).mean()


def l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred, target = _align(pred, target)
    return (pred - target).abs().mean()


KL_REDUCTIONS = ("frame", "element")


def kl_mel_loss(pred: torch.Tensor, target: torch.Tensor, reduction: str = "frame") -> torch.Tensor:
    """KL(P || Q), P = softmax(target) and Q = softmax(pred) over bands, summed over bands and frames,
    divided by batch x time (``reduction='frame'``, the kit's) or batch x time x bands (``'element'``, the
    published loss's ``KLDivLoss(reduction='mean', log_target=True)``)."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"kl_mel_loss: reduction must be one of {KL_REDUCTIONS}, got {reduction!r}")
    pred, target = _align(pred, target)
    log_p = F.log_softmax(target, dim=-1)
    log_q = F.log_softmax(pred, dim=-1)
    kl_per_frame = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (batch, time)
    return kl_per_frame.mean() if reduction == "frame" else kl_per_frame.mean() / pred.shape[-1]
