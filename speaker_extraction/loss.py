"""Training loss for speaker extraction: negative zero-mean SI-SDR (batched torch).

`si_sdr_torch` matches `evaluation.speech_metrics.si_sdr` (zero-mean form):
alpha = <est, ref> / ||ref||^2, target = alpha * ref,
SI-SDR = 10 log10(||target||^2 / ||est - target||^2). A small ``eps`` keeps
silent references and perfect estimates finite (no NaN gradients).
"""
from __future__ import annotations

import torch

EPS = 1e-8


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


def neg_si_sdr_loss(estimate: torch.Tensor, reference: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Mean negative zero-mean SI-SDR over the batch (scalar, to minimise)."""
    return -si_sdr_torch(estimate, reference, zero_mean=True, eps=eps).mean()
