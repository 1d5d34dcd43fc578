"""Combined multi-target loss for Task 2 regression models.

    total = pearson * sum_t NP(pred_t, target_t)
          + l1      * sum_t L1(pred_t, target_t)
          + kl      * KL(mel)

where t runs over every target the model outputs (e.g. envelope, mel, mel80,
mag for the CAT-guided WaveNet), NP is the negative Pearson correlation (per
band over time, averaged) and KL is KL(target || prediction) of the softmax over
the 10 mel bands per frame, on the `mel` target only. The terms come from
`util.losses`.

``variant`` (config ``loss.variant``) picks the constants of two terms:
- ``kit`` (default): r = cov / max(norm, 1e-8); KL summed over the bands, averaged over frames;
- ``published``: the CAT-WaveNet authors' loss (``../shared/reference/published_models.md`` 1.7):
  r = cov / (norm + 1e-6) (sums, not means), KL ``reduction='mean'`` over batch x time x bands
  (a tenth of the kit's for 10 bands). With weights pearson 1, l1 0.2, kl 1 this is their
  ``l_p + 0.2 l_1 + l_k``.

Models may return fewer frames than the target (e.g. a valid-padded linear
conv returns T - 15 frames); output frame i is aligned with target frame i, so
the first `time_out` target frames are compared.
"""
from __future__ import annotations

from typing import Mapping

import torch

from util import losses


# loss.variant -> (Pearson eps, util.metrics.pearson_torch eps_mode, util.losses.kl_mel_loss reduction)
VARIANTS = {"kit": (1e-8, "clamp", "frame"), "published": (1e-6, "add", "element")}


def align(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut both (batch, time, bands) tensors to the model's (shorter) output length."""
    time_out = min(pred.shape[1], target.shape[1])
    return pred[:, :time_out], target[:, :time_out]


class MultiTargetLoss:
    """Weighted sum of negative Pearson, L1 and mel-KL terms over a dict of targets.

    Args:
        pearson, l1, kl: weights of the three term families (config `loss:` section).
        kl_target: the target the KL term is computed on (the 10-band mel).
        variant: ``kit`` or ``published`` (the constants of the Pearson and KL terms; module docstring).
    """

    def __init__(self, pearson: float = 1.0, l1: float = 0.0, kl: float = 0.0, kl_target: str = "mel",
                 variant: str = "kit"):
        if variant not in VARIANTS:
            raise ValueError(f"MultiTargetLoss: variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        self.pearson = float(pearson)
        self.l1 = float(l1)
        self.kl = float(kl)
        self.kl_target = kl_target
        self.variant = variant
        self.pearson_eps, self.pearson_eps_mode, self.kl_reduction = VARIANTS[variant]

    @classmethod
    def from_config(cls, loss_cfg: Mapping | None) -> "MultiTargetLoss":
        loss_cfg = dict(loss_cfg or {})
        return cls(
            pearson=float(loss_cfg.get("pearson", 1.0)),
            l1=float(loss_cfg.get("l1", 0.0)),
            kl=float(loss_cfg.get("kl", 0.0)),
            variant=str(loss_cfg.get("variant", "kit")),
        )

    def __call__(
        self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """outputs: {target: (batch, time_out, bands)}; batch: {target: (batch, time, bands), ...}.

        Returns (total loss tensor, {term_name: float}) with one entry per target and term
        (`np_mel`, `l1_mel`, `kl_mel`, ...) plus `total`.
        """
        if not outputs:
            raise ValueError("MultiTargetLoss: the model returned no outputs")
        terms: dict[str, float] = {}
        total = None
        for name, pred in outputs.items():
            if name not in batch:
                raise KeyError(f"MultiTargetLoss: target {name!r} missing from the batch")
            pred_a, target_a = align(pred, batch[name])  # (batch, time_out, bands) each
            parts = []
            if self.pearson != 0.0:
                neg_pearson = losses.neg_pearson_loss(pred_a, target_a, self.pearson_eps, self.pearson_eps_mode)
                terms[f"np_{name}"] = float(neg_pearson.detach())
                parts.append(self.pearson * neg_pearson)
            if self.l1 != 0.0:
                l1_term = losses.l1_loss(pred_a, target_a)
                terms[f"l1_{name}"] = float(l1_term.detach())
                parts.append(self.l1 * l1_term)
            if self.kl != 0.0 and name == self.kl_target:
                kl_term = losses.kl_mel_loss(pred_a, target_a, self.kl_reduction)
                terms[f"kl_{name}"] = float(kl_term.detach())
                parts.append(self.kl * kl_term)
            for part in parts:
                total = part if total is None else total + part
        if total is None:
            raise ValueError("MultiTargetLoss: all loss weights are zero")
        terms["total"] = float(total.detach())
        return total, terms
