"""Losses and correlation metrics for Task 2 regression.

Tensors are ``(batch, time, bands)``; correlations run over time (dim 1) per band.
When a model returns fewer frames than the target (``time_out <= time``), the
target is cut to the first ``time_out`` frames (output frame i aligns with
target frame i, see docs/DESIGN.md).

- ``pearson_r(pred, target, eps)`` -> ``(batch, bands)``
- ``neg_pearson_loss(pred, target)`` = mean over batch and bands of ``-r``
- ``l1_loss(pred, target)`` = mean absolute error
- ``kl_mel_loss(pred, target)`` = KL(softmax_bands(target) || softmax_bands(pred)) per
  frame, averaged over batch and frames
- ``pearson_np(pred, target)`` numpy per-band r over axis -2 (time)
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _align(pred: torch.Tensor, target: torch.Tensor) -> tuple:
    if pred.dim() != 3 or target.dim() != 3:
        raise ValueError(f"expected (batch, time, bands) tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[1] > target.shape[1]:
        raise ValueError(f"prediction has more frames ({pred.shape[1]}) than the target ({target.shape[1]})")
    target = target[:, : pred.shape[1]]
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    return pred, target


def pearson_r(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson r per (batch, band) over time: ``(batch, bands)``; constant inputs give 0."""
    pred, target = _align(pred, target)
    pred_c = pred - pred.mean(dim=1, keepdim=True)
    target_c = target - target.mean(dim=1, keepdim=True)
    cov = (pred_c * target_c).sum(dim=1)
    norm = torch.sqrt((pred_c ** 2).sum(dim=1) * (target_c ** 2).sum(dim=1))
    return cov / torch.clamp(norm, min=eps)


def neg_pearson_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return -pearson_r(pred, target, eps).mean()


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


def pearson_np(pred, target, eps: float = 1e-12) -> np.ndarray:
    """Per-band Pearson r of ``(..., time, bands)`` numpy arrays over time; 1-D inputs give a scalar."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs target {target.shape}")
    axis = 0 if pred.ndim == 1 else -2
    pred_c = pred - pred.mean(axis=axis, keepdims=True)
    target_c = target - target.mean(axis=axis, keepdims=True)
    cov = (pred_c * target_c).sum(axis=axis)
    norm = np.sqrt((pred_c ** 2).sum(axis=axis) * (target_c ** 2).sum(axis=axis))
    return cov / np.maximum(norm, eps)
