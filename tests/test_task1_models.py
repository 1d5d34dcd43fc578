"""Task 1 models: the dilated convolutional baseline's exact shapes and weight sharing, the similarity head
on a hand-worked case, the kit-encoder model (Task 2's VLAAI stack), the ridge baseline, the registry,
and a tiny model that overfits."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from task1_match_mismatch.models import MODELS, build_model
from task1_match_mismatch.models.dilated_conv import DilatedConvModel, SimilarityHead
from util.errors import EEGKitError


def test_baseline_shapes_valid_padding_shrinks_26_frames():
    torch.manual_seed(0)
    model = DilatedConvModel(stimulus_bands=1)
    assert model.shrink == 26  # 2 x (1 + 3 + 9)
    eeg, stimuli = torch.randn(3, 320, 64), torch.randn(3, 5, 320, 1)
    spatial = model.spatial(eeg.transpose(1, 2))
    assert spatial.shape == (3, 8, 320)  # 1x1 conv 64 -> 8, no activation (negative values stay)
    assert (spatial < 0).any()
    eeg_out = model.eeg_stack(spatial)
    assert eeg_out.shape == (3, 16, 294)
    convs = [m for m in model.eeg_stack.layers if isinstance(m, torch.nn.Conv1d)]
    assert [(c.kernel_size[0], c.dilation[0], c.padding[0], c.out_channels) for c in convs] == \
        [(3, 1, 0, 16), (3, 3, 0, 16), (3, 9, 0, 16)]
    assert model(eeg, stimuli).shape == (3, 5)
    # parameters, counted by hand: 64*8+8, 8*16*3+16, 2 x (16*16*3+16), 1*16*3+16, 2 x (16*16*3+16), 256+1
    assert sum(p.numel() for p in model.parameters()) == 520 + 400 + 2 * 784 + 64 + 2 * 784 + 257 == 4377
    assert model(torch.randn(2, 27, 64), torch.randn(2, 5, 27, 1)).shape == (2, 5)  # 1 frame left
    with pytest.raises(ValueError, match="too short"):
        model(torch.randn(2, 26, 64), torch.randn(2, 5, 26, 1))


def test_baseline_shares_one_stimulus_branch_across_candidates():
    torch.manual_seed(0)
    model = DilatedConvModel(stimulus_bands=10).eval()
    eeg, stimuli = torch.randn(2, 200, 64), torch.randn(2, 5, 200, 10)
    logits = model(eeg, stimuli)
    order = torch.tensor([3, 0, 4, 1, 2])
    torch.testing.assert_close(model(eeg, stimuli[:, order]), logits[:, order])  # permuted inputs, permuted scores
    # one candidate's score depends only on that candidate (the dense layer is shared, applied per candidate)
    changed = stimuli.clone()
    changed[:, 2] += 1.0
    moved = model(eeg, changed) - logits
    assert moved[:, 2].abs().min() > 0 and torch.equal(moved[:, [0, 1, 3, 4]], torch.zeros(2, 4))
    # one set of stimulus weights (input 10 bands), separate from the EEG branch's
    names = {name for name, _ in model.named_parameters()}
    assert {n for n in names if n.startswith("stimulus_stack")} == {
        f"stimulus_stack.layers.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}
    assert model.stimulus_stack.layers[0].weight.shape == (16, 10, 3)
    assert model.head.dense.weight.shape == (1, 256)
    # batch items are independent: the same item alone gives the same scores
    torch.testing.assert_close(model(eeg[:1], stimuli[:1]), logits[:1])


def test_similarity_head_hand_worked():
    head = SimilarityHead(eeg_filters=2, stimulus_filters=2)
    with torch.no_grad():
        head.dense.weight.copy_(torch.tensor([[1.0, 10.0, 100.0, 1000.0]]))  # (e0 s0, e0 s1, e1 s0, e1 s1)
        head.dense.bias.fill_(0.5)
    eeg = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]])  # (1, 2 filters, 3 frames)
    stim = torch.tensor([[[[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]]])  # (1, 1 candidate, 2 filters, 3 frames)
    # cosines: e0.s0 = 1, e0.s1 = 0, e1.s0 = 1/sqrt(2), e1.s1 = 0
    expected = 1.0 * 1 + 10.0 * 0 + 100.0 / np.sqrt(2) + 1000.0 * 0 + 0.5
    torch.testing.assert_close(head(eeg, stim), torch.tensor([[expected]], dtype=torch.float32))


def test_kit_encoder_model_carries_task2_vlaai_weights():
    from task2_regression.models.vlaai import VLAAI

    options = dict(n_blocks=2, encoder_filters=[8, 8, 8, 4, 4], encoder_kernels=4, context_kernel=4)
    model = build_model({"type": "vlaai", "stimulus_bands": 10, **options})
    assert model(torch.randn(2, 100, 64), torch.randn(2, 3, 100, 10)).shape == (2, 3)
    task2 = VLAAI({"mel": 10}, n_blocks=2, filters=[8, 8, 8, 4, 4], kernels=4, context_kernel=4, padding="anticausal")
    weights = {k: v for k, v in task2.state_dict().items() if not k.startswith("heads.")}
    model.encoder.load_state_dict(weights)  # the same keys and shapes: Task 2 work carries over
    x = torch.randn(1, 50, 64)
    torch.testing.assert_close(model.encoder(x), task2.encode(x))


def test_ridge_baseline_picks_the_best_correlated_candidate():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model({"type": "ridge", "n_taps": 4, "n_channels": 3})
    stimulus = rng.standard_normal((1, 400, 1))
    eeg = np.concatenate([np.roll(stimulus, 2, axis=1)] * 3, axis=2) + 0.1 * rng.standard_normal((1, 400, 3))
    model.decoder.partial_fit(eeg, {"stimulus": stimulus})
    model.decoder.solve(1e-3)
    others = rng.standard_normal((1, 3, 400, 1))
    candidates = torch.from_numpy(np.concatenate([others[:, :2], stimulus[:, None], others[:, 2:]], axis=1)).float()
    scores = model(torch.from_numpy(eeg).float(), candidates)  # (1, 4): Pearson r of each with the reconstruction
    assert scores.shape == (1, 4) and int(scores.argmax()) == 2 and float(scores[0, 2]) > 0.95
    recon = model.decoder(torch.from_numpy(eeg).float())["stimulus"][0, :, 0].numpy()
    assert float(scores[0, 0]) == pytest.approx(np.corrcoef(recon, candidates[0, 0, :397, 0].numpy())[0, 1], abs=1e-5)


def test_registry_refuses_bad_configs_in_one_line():
    assert set(MODELS) == {"dilated_conv", "vlaai", "ridge"}
    with pytest.raises(EEGKitError, match="model.type must be one of dilated_conv, vlaai, ridge"):
        build_model({"type": "transformer"})
    with pytest.raises(EEGKitError, match="did you mean model.filters"):
        build_model({"type": "dilated_conv", "filtres": 8})
    with pytest.raises(EEGKitError, match="model.kernel must be >= 1"):
        build_model({"type": "dilated_conv", "kernel": 0})


def test_tiny_baseline_overfits_a_few_windows():
    """The baseline learns to pick the matched stimulus on 12 fixed windows (train accuracy 100 %)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, frames, k = 12, 64, 5
    stimuli = torch.from_numpy(np.abs(rng.standard_normal((n, k, frames, 1)))).float()  # (12, 5, 64, 1)
    labels = torch.from_numpy(rng.integers(0, k, n))
    matched = stimuli[torch.arange(n), labels]  # (12, 64, 1)
    eeg = matched * torch.from_numpy(rng.standard_normal((1, 1, 64))).float() \
        + 0.3 * torch.from_numpy(rng.standard_normal((n, frames, 64))).float()  # (12, 64, 64)
    model = DilatedConvModel(stimulus_bands=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        loss = torch.nn.functional.cross_entropy(model(eeg, stimuli), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = model(eeg, stimuli)
    assert float(loss.detach()) < 0.2
    assert (logits.argmax(dim=1) == labels).all()
