"""The kit's one Pearson r and one SI-SDR, in numpy and torch (losses, scorers and ridge use these).

- ``pearson_torch(pred, target)``: (batch, time, bands) -> (batch, bands), over time; constant -> 0
  (``eps_mode='add'``: the published CAT-WaveNet loss's ``cov / (norm + eps)``).
  A prediction with fewer frames than the target is compared with the target's first frames.
- ``pearson_np(pred, target)``: (..., time, bands) -> (..., bands) over axis -2; 1-D inputs give a scalar.
- ``pearson_circular_np(pred, target, shifts, segment)``: the same r against the target rolled by many
  shifts at once (FFT), per segment: the circular-shift null of `evaluation.controls`.
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


EPS_MODES = ("clamp", "add")


def pearson_torch(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8, eps_mode: str = "clamp") -> torch.Tensor:
    """Pearson r per (batch, band) over time: ``(batch, bands)``; constant inputs give 0.

    ``eps_mode``: ``"clamp"`` (the kit's) divides by ``max(norm, eps)``; ``"add"`` divides by ``norm + eps``,
    the published CAT-WaveNet loss's ``cov / (sqrt(var_x var_y) + 1e-6)`` (sums, not means), with ``eps=1e-6``.
    """
    if eps_mode not in EPS_MODES:
        raise ValueError(f"pearson_torch: eps_mode must be one of {EPS_MODES}, got {eps_mode!r}")
    pred, target = align_frames(pred, target)
    pred_c = pred - pred.mean(dim=1, keepdim=True)
    target_c = target - target.mean(dim=1, keepdim=True)
    cov = (pred_c * target_c).sum(dim=1)
    norm = torch.sqrt((pred_c ** 2).sum(dim=1) * (target_c ** 2).sum(dim=1))
    return cov / (norm + eps) if eps_mode == "add" else cov / torch.clamp(norm, min=eps)


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


def pearson_circular_np(pred, target, shifts, segment: int | None = None, eps: float = 1e-12) -> np.ndarray:
    """`pearson_np` of ``pred`` (time, bands) with ``target`` (time, bands) rolled by each shift, per segment.

    ``np.roll(target, k, axis=0)`` for every k of ``shifts`` (n_shifts,), cut with ``pred`` into consecutive
    segments of ``segment`` frames (default: the whole series; a shorter tail is left out) -> (n_shifts,
    n_segments, bands). Every shift at once: the cross term of each segment is one circular cross-correlation
    (FFT), the rolled windows' sums come from cumulative sums; the same r as `pearson_np` on the rolled arrays
    (tested to 1e-10), in O(segments x time log time) instead of O(shifts x time).
    """
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"expected (time, bands) arrays of one shape, got {pred.shape} and {target.shape}")
    n_frames, bands = target.shape
    length = n_frames if segment is None else int(segment)
    n_segments = n_frames // length if length >= 1 else 0
    if n_segments < 1:
        raise ValueError(f"segment of {segment} frames does not fit the series ({n_frames} frames)")
    shifts = np.asarray(shifts, dtype=np.int64) % n_frames  # (n_shifts,)
    pred = pred - pred.mean(axis=0)  # r is blind to constants; centring keeps the sums well conditioned
    target = target - target.mean(axis=0)
    spectrum = np.conj(np.fft.rfft(target, axis=0))  # (time // 2 + 1, bands)
    twice = np.concatenate([target, target])  # (2 time, bands): every rolled window is one slice of it
    sums = np.concatenate([np.zeros((1, bands)), np.cumsum(twice, axis=0)])  # (2 time + 1, bands)
    squares = np.concatenate([np.zeros((1, bands)), np.cumsum(twice ** 2, axis=0)])
    r = np.empty((len(shifts), n_segments, bands))
    for index in range(n_segments):
        first = index * length
        piece = pred[first : first + length]  # (segment, bands)
        masked = np.zeros_like(pred)
        masked[first : first + length] = piece
        # sum_t p[t] y[t - k] over the segment, for every k: the circular cross-correlation of p with y
        cross = np.fft.irfft(np.fft.rfft(masked, axis=0) * spectrum, n=n_frames, axis=0)[shifts]  # (n_shifts, bands)
        start = (first - shifts) % n_frames  # (n_shifts,): where the rolled window starts in target
        window_sum = sums[start + length] - sums[start]  # (n_shifts, bands)
        window_squares = squares[start + length] - squares[start]
        piece_sum = piece.sum(axis=0)  # (bands,)
        cov = cross - piece_sum * window_sum / length
        pred_var = (piece ** 2).sum(axis=0) - piece_sum ** 2 / length
        target_var = np.maximum(window_squares - window_sum ** 2 / length, 0.0)
        r[:, index] = cov / np.maximum(np.sqrt(pred_var * target_var), eps)
    return r


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
