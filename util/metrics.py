"""The kit's one Pearson r and one SI-SDR, in numpy and torch (losses, scorers and ridge use these).

- ``pearson_torch(pred, target)``: (batch, time, bands) -> (batch, bands), over time; constant -> 0.
  A prediction with fewer frames than the target is compared with the target's first frames.
- ``pearson_np(pred, target)``: (..., time, bands) -> (..., bands) over axis -2; 1-D inputs give a scalar.
- ``si_sdr_torch(estimate, reference)``: (batch, samples) -> (batch,) in dB.
- ``si_sdr_np(estimate, reference)``: (samples,) -> float in dB.

SI-SDR (zero-mean form): alpha = <est, ref> / ||ref||^2, target = alpha ref,
SI-SDR = 10 log10(||target||^2 / ||est - target||^2); a small ``eps`` keeps silent
references and perfect estimates finite (no NaN gradients).
"""
from __future__ import annotations

import numpy as np
import torch

EPS = 1e-8


def align_frames(pred: torch.Tensor, target: torch.Tensor) -> tuple:
    """Cut ``target`` (batch, time, bands) to the frames of ``pred``; shapes checked."""
    if pred.dim() != 3 or target.dim() != 3:
        raise ValueError(f"expected (batch, time, bands) tensors, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.shape[1] > target.shape[1]:
        raise ValueError(f"prediction has more frames ({pred.shape[1]}) than the target ({target.shape[1]})")
    target = target[:, : pred.shape[1]]
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: prediction {tuple(pred.shape)} vs target {tuple(target.shape)}")
    return pred, target


def pearson_torch(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson r per (batch, band) over time: ``(batch, bands)``; constant inputs give 0."""
    pred, target = align_frames(pred, target)
    pred_c = pred - pred.mean(dim=1, keepdim=True)
    target_c = target - target.mean(dim=1, keepdim=True)
    cov = (pred_c * target_c).sum(dim=1)
    norm = torch.sqrt((pred_c ** 2).sum(dim=1) * (target_c ** 2).sum(dim=1))
    return cov / torch.clamp(norm, min=eps)


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


def si_sdr_torch(estimate: torch.Tensor, reference: torch.Tensor, zero_mean: bool = True,
                 eps: float = EPS) -> torch.Tensor:
    """SI-SDR in dB per item: estimate, reference (batch, samples) -> (batch,)."""
    if estimate.shape != reference.shape:
        raise ValueError(f"si_sdr_torch: estimate shape {tuple(estimate.shape)} != reference {tuple(reference.shape)}")
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        reference = reference - reference.mean(dim=-1, keepdim=True)
    dot = (estimate * reference).sum(dim=-1, keepdim=True)  # (batch, 1)
    reference_energy = (reference * reference).sum(dim=-1, keepdim=True) + eps  # (batch, 1)
    target = dot / reference_energy * reference  # (batch, samples)
    residual = estimate - target  # (batch, samples)
    ratio = ((target * target).sum(dim=-1) + eps) / ((residual * residual).sum(dim=-1) + eps)  # (batch,)
    return 10.0 * torch.log10(ratio)


def si_sdr_np(estimate: np.ndarray, reference: np.ndarray, zero_mean: bool = True, eps: float = EPS) -> float:
    """SI-SDR in dB of one ``estimate`` (samples,) w.r.t. ``reference`` (samples,), in float64."""
    estimate = np.asarray(estimate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if zero_mean:
        estimate = estimate - estimate.mean()
        reference = reference - reference.mean()
    alpha = np.dot(estimate, reference) / (np.dot(reference, reference) + eps)
    target = alpha * reference  # (samples,)
    residual = estimate - target  # (samples,)
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(residual, residual) + eps)))
