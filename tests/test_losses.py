"""Golden tests for util.losses, values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from util.losses import kl_mel_loss, l1_loss, neg_pearson_loss
from util.metrics import pearson_np
from util.metrics import pearson_torch as pearson_r


def as_btc(values):
    return torch.tensor(values, dtype=torch.float64).reshape(1, -1, 1)


def test_pearson_hand_value():
    # x-mean = (-1,0,1); y-mean = (-7/3,-1/3,8/3); cov = 5; sxx = 2; syy = 114/9 -> r = 15/sqrt(228)
    r = pearson_r(as_btc([1, 2, 3]), as_btc([2, 4, 7]))
    assert r.shape == (1, 1)
    assert r.item() == pytest.approx(15 / math.sqrt(228), abs=1e-12)
    assert pearson_np(np.array([1, 2, 3.0]), np.array([2, 4, 7.0])) == pytest.approx(0.99339927, abs=1e-7)


def test_pearson_perfect_anti_and_per_band():
    t = torch.linspace(0, 1, 50, dtype=torch.float64)
    target = torch.stack([t, t ** 2], dim=-1)[None]  # (1, 50, 2)
    pred = torch.stack([3 * t + 1, -(t ** 2)], dim=-1)[None]
    r = pearson_r(pred, target)
    torch.testing.assert_close(r, torch.tensor([[1.0, -1.0]], dtype=torch.float64))
    assert neg_pearson_loss(pred, target).item() == pytest.approx(0.0, abs=1e-12)  # mean of (-1, +1)
    assert neg_pearson_loss(target, target).item() == pytest.approx(-1.0, abs=1e-12)
    np.testing.assert_allclose(pearson_np(pred[0].numpy(), target[0].numpy()), [1.0, -1.0], atol=1e-12)
    # constant prediction has no correlation, not NaN
    assert pearson_r(torch.ones(1, 50, 1), target[..., :1].float()).item() == 0.0


def test_pearson_crops_longer_target_and_rejects_longer_pred():
    target = torch.randn(2, 40, 3, generator=torch.Generator().manual_seed(0))
    pred = target[:, :25] * 2.0
    torch.testing.assert_close(pearson_r(pred, target), torch.ones(2, 3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError):
        pearson_r(target, pred)


def test_l1_hand_value():
    assert l1_loss(as_btc([1, 2, 3]), as_btc([2, 4, 7])).item() == pytest.approx((1 + 2 + 4) / 3)


def test_kl_hand_values():
    same = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(1))
    assert kl_mel_loss(same, same).item() == pytest.approx(0.0, abs=1e-7)
    assert kl_mel_loss(same, same + 3.0).item() == pytest.approx(0.0, abs=1e-6)  # softmax is shift invariant
    # target logits (0, ln 3) -> p = (1/4, 3/4); pred logits (0, 0) -> q = (1/2, 1/2)
    # KL(p||q) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.1308120...
    target = torch.tensor([[[0.0, math.log(3.0)]]])
    pred = torch.zeros(1, 1, 2)
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert kl_mel_loss(pred, target).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1308120, abs=1e-6)
    # averaged over frames: one frame with KL=expected, one with 0
    two = kl_mel_loss(torch.zeros(1, 2, 2), torch.tensor([[[0.0, math.log(3.0)], [1.0, 1.0]]]))
    assert two.item() == pytest.approx(expected / 2, abs=1e-6)


def test_losses_backpropagate():
    pred = torch.randn(3, 20, 10, requires_grad=True, generator=torch.Generator().manual_seed(2))
    target = torch.randn(3, 20, 10, generator=torch.Generator().manual_seed(3))
    (neg_pearson_loss(pred, target) + 0.2 * l1_loss(pred, target) + kl_mel_loss(pred, target)).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
