"""Training loss for speaker extraction: negative zero-mean SI-SDR (`util.metrics.si_sdr_torch`, batched)."""
from __future__ import annotations

import torch

from util.metrics import EPS, si_sdr_torch


def neg_si_sdr_loss(estimate: torch.Tensor, reference: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """Mean negative zero-mean SI-SDR over the batch (scalar, to minimise)."""
    return -si_sdr_torch(estimate, reference, zero_mean=True, eps=eps).mean()
