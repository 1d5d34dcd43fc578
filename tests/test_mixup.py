"""Tests for util.mixup.cross_subject_mixup."""
from __future__ import annotations

import pytest
import torch

from util.mixup import cross_subject_mixup, pair_indices


def make_batch(subjects, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(subjects)
    return {"eeg": torch.randn(n, 16, 64, generator=g), "mel": torch.randn(n, 16, 10, generator=g),
            "envelope": torch.randn(n, 16, 1, generator=g), "subject": torch.tensor(subjects),
            "recording": torch.arange(n)}


def test_linearity_same_lambda_and_bounds():
    batch = make_batch([0, 0, 1, 1, 2, 2, 3, 3])
    mixed, infos = cross_subject_mixup(batch, ("eeg", "mel", "envelope"), generator=torch.Generator().manual_seed(5),
                                       return_info=True)
    (info,) = infos
    a, b, lam = info["a"], info["b"], info["lam"]
    assert a.numel() == b.numel() == lam.numel() == 4
    assert sorted(torch.cat([a, b]).tolist()) == list(range(8))  # every example used once
    assert ((lam >= 0) & (lam <= 1)).all()
    for key in ("eeg", "mel", "envelope"):
        x = batch[key]
        assert mixed[key].shape == x.shape
        for k in range(4):
            torch.testing.assert_close(mixed[key][a[k]], lam[k] * x[a[k]] + (1 - lam[k]) * x[b[k]])
            torch.testing.assert_close(mixed[key][b[k]], (1 - lam[k]) * x[a[k]] + lam[k] * x[b[k]])
    assert (batch["subject"][a] != batch["subject"][b]).all()
    assert torch.equal(mixed["subject"], batch["subject"])
    assert not torch.equal(mixed["eeg"], batch["eeg"])


def test_pairs_different_subjects_whenever_possible():
    g = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = int(torch.randint(2, 25, (1,), generator=g))
        subjects = torch.randint(0, 6, (n,), generator=g)
        a, b = pair_indices(subjects, g)
        largest = int(torch.bincount(subjects).max())
        if largest <= n // 2:
            assert (subjects[a] != subjects[b]).all(), (subjects, a, b)


def test_lambda_uniform_and_odd_batch_leftover_unchanged():
    g = torch.Generator().manual_seed(1)
    lams = []
    for _ in range(200):
        batch = make_batch([0, 1, 2, 3, 4], seed=2)
        mixed, (info,) = cross_subject_mixup(batch, ("eeg",), generator=g, return_info=True)
        leftover = (set(range(5)) - set(info["a"].tolist()) - set(info["b"].tolist())).pop()
        torch.testing.assert_close(mixed["eeg"][leftover], batch["eeg"][leftover])
        lams.append(info["lam"])
    lams = torch.cat(lams)
    assert 0.45 < lams.mean() < 0.55 and lams.min() < 0.05 and lams.max() > 0.95


def test_times_two_mixes_up_to_four_windows():
    batch = make_batch([0, 1, 2, 3, 4, 5, 6, 7])
    mixed, infos = cross_subject_mixup(batch, ("eeg", "mel"), times=2, generator=torch.Generator().manual_seed(3),
                                       return_info=True)
    assert len(infos) == 2
    # reconstruct the weights each example gives to the 8 originals
    weights = torch.eye(8)
    for info in infos:
        new = weights.clone()
        for a, b, lam in zip(info["a"], info["b"], info["lam"]):
            new[a] = lam * weights[a] + (1 - lam) * weights[b]
            new[b] = (1 - lam) * weights[a] + lam * weights[b]
        weights = new
    expected = torch.einsum("ij,jtc->itc", weights, batch["eeg"])
    torch.testing.assert_close(mixed["eeg"], expected, atol=1e-5, rtol=1e-5)
    assert ((weights > 0).sum(dim=1) <= 4).all() and ((weights > 0).sum(dim=1) >= 3).any()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(8))


def test_requires_subject():
    with pytest.raises(KeyError):
        cross_subject_mixup({"eeg": torch.zeros(2, 3, 4)}, ("eeg",))
