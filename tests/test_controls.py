"""evaluation.controls worked out by hand: a perfect predictor, a pure-noise predictor and a constant.

Hand-worked facts used below:
- An impulse e_0 of n frames against a circularly shifted impulse e_s (s != 0): both centred are
  e - 1/n; cov = -2/n + n/n^2 = -1/n; var = (1 - 1/n)^2 + (n - 1)/n^2 = (n - 1)/n; so r = -1/(n - 1).
  For n = 8: -1/7.
- sin and cos over whole periods are uncorrelated (r = 0 exactly): the mismatched-EEG score of a
  perfect decoder when the other recording carries the cos stimulus.
- A constant prediction has r = 0 with anything (the kit's Pearson returns 0 for constant input),
  so every shifted score is 0 and the p-value is (100 + 1) / (100 + 1) = 1.
"""
from __future__ import annotations

import numpy as np
import pytest

from evaluation import controls
from util.metrics import pearson_np


def _naive_null(prediction, target, shifts, segment=None):
    """Reference: one np.roll and one Pearson per shift (what the vectorised form must equal)."""
    out = []
    for s in shifts:
        shifted = np.roll(target, s, axis=0)
        if segment is None:
            out.append(pearson_np(prediction, shifted).mean())
        else:
            n = target.shape[0] // segment
            out.append(np.mean([pearson_np(prediction[k * segment:(k + 1) * segment],
                                           shifted[k * segment:(k + 1) * segment]).mean() for k in range(n)]))
    return np.array(out)


# ----------------------------------------------------------------------------- circular shift
def test_circular_shift_perfect_predictor_on_an_impulse_is_minus_one_seventh():
    target = np.zeros((8, 1))
    target[0] = 1.0
    null = controls.circular_shift_null(target, target, fs=1.0, n_shifts=100, min_shift_s=2.0,
                                        rng=np.random.default_rng(0))
    assert null["observed"] == pytest.approx(1.0)
    assert null["mean"] == pytest.approx(-1 / 7)
    assert null["p95"] == pytest.approx(-1 / 7)
    assert null["p_value"] == pytest.approx(1 / 101)  # no shift reaches 1: (0 + 1) / (100 + 1)


def test_shifts_are_at_least_min_shift_both_ways():
    shifts = controls.draw_shifts(10, fs=1.0, n_shifts=2000, min_shift_s=3.0, rng=np.random.default_rng(1))
    assert shifts.min() == 3 and shifts.max() == 7  # circular distance >= 3 frames either way
    with pytest.raises(ValueError, match="too short"):
        controls.draw_shifts(5, fs=1.0, n_shifts=10, min_shift_s=3.0, rng=np.random.default_rng(1))


def test_circular_shift_constant_predictor_scores_zero_with_p_one():
    target = np.random.default_rng(2).standard_normal((640, 3))
    null = controls.circular_shift_null(np.full((640, 3), 0.7), target, fs=64.0, rng=np.random.default_rng(0),
                                        segment=320)
    assert null["observed"] == pytest.approx(0.0, abs=1e-12)
    assert null["mean"] == pytest.approx(0.0, abs=1e-12) and null["p95"] == pytest.approx(0.0, abs=1e-12)
    assert null["p_value"] == 1.0  # every shifted score (0) >= the observed 0: (100 + 1) / (100 + 1)


def test_circular_shift_noise_predictor_matches_the_naive_loop_and_is_not_significant():
    rng = np.random.default_rng(3)
    target = rng.standard_normal((1280, 2))
    prediction = rng.standard_normal((1280, 2))  # pure noise
    shifts = controls.draw_shifts(1280, 64.0, 50, 2.0, np.random.default_rng(7))
    for segment in (None, 320):
        null = controls.circular_shift_null(prediction, target, 64.0, n_shifts=50, rng=np.random.default_rng(7),
                                            segment=segment)
        naive = _naive_null(prediction, target, shifts, segment)
        assert null["mean"] == pytest.approx(naive.mean(), abs=1e-12)
        assert null["p95"] == pytest.approx(np.percentile(naive, 95), abs=1e-12)
    # pure noise: the p-value is uniform under the null, so about 5 % of seeds fall below 0.05
    p_values = []
    for seed in range(200):
        r = np.random.default_rng(100 + seed)
        p_values.append(controls.circular_shift_null(r.standard_normal((256, 1)), r.standard_normal((256, 1)), 8.0,
                                                     n_shifts=99, rng=r)["p_value"])
    assert 0.0 < np.mean(np.array(p_values) < 0.05) < 0.12
    assert 0.4 < np.mean(p_values) < 0.6


def test_circular_shift_perfect_predictor_on_noise_target_is_significant():
    target = np.random.default_rng(4).standard_normal((6400, 10))
    null = controls.circular_shift_null(target, target, 64.0, rng=np.random.default_rng(0), segment=1920)
    assert null["observed"] == pytest.approx(1.0)
    assert abs(null["mean"]) < 0.02 and null["p95"] < 0.05  # ~ 1/sqrt(1920) per band, averaged over 10 bands
    assert null["p_value"] == pytest.approx(1 / 101)


# ----------------------------------------------------------------------------- noise EEG
def test_noise_eeg_keeps_shape_and_per_channel_mean_and_std():
    rng = np.random.default_rng(5)
    eeg = (rng.standard_normal((20000, 4)) * [1.0, 2.0, 0.5, 0.0] + [0.0, 3.0, -1.0, 7.0]).astype(np.float32)
    noise = controls.noise_eeg(eeg, np.random.default_rng(0))
    assert noise.shape == eeg.shape and noise.dtype == np.float32
    np.testing.assert_allclose(noise.mean(axis=0), [0.0, 3.0, -1.0, 7.0], atol=0.05)
    np.testing.assert_allclose(noise.std(axis=0), [1.0, 2.0, 0.5, 0.0], rtol=0.03, atol=1e-6)
    np.testing.assert_array_equal(noise[:, 3], 7.0)  # a flat channel stays flat
    assert abs(pearson_np(noise[:, 0], eeg[:, 0])) < 0.03  # it carries nothing of the recording
    with pytest.raises(ValueError, match="time, channels"):
        controls.noise_eeg(eeg[:, 0], np.random.default_rng(0))


def _sin_cos_recordings(n=1280, period=1280):
    """Two recordings of one subject: EEG channel 0 carries the stimulus (sin, then cos, one period).

    A circular shift by s frames of a one-period sinusoid has r = cos(2 pi s / n) with the original,
    below 1 for every allowed shift (2 s = 128 frames: at most cos(0.2 pi) = 0.809).
    """
    t = np.arange(n)
    sin = np.sin(2 * np.pi * t / period)[:, None]
    cos = np.cos(2 * np.pi * t / period)[:, None]
    rng = np.random.default_rng(6)
    eeg = [np.concatenate([sin, rng.standard_normal((n, 3))], axis=1),
           np.concatenate([cos, rng.standard_normal((n, 3))], axis=1)]
    return eeg, [sin, cos]


@pytest.mark.parametrize("kind", ["perfect", "noise", "constant"])
def test_three_controls_for_three_predictors(kind):
    eeg, targets = _sin_cos_recordings()
    rng = np.random.default_rng(8)
    models = {"perfect": lambda x: x[:, :1],  # reads the stimulus off channel 0
              "noise": lambda x: rng.standard_normal((len(x), 1)),
              "constant": lambda x: np.ones((len(x), 1))}
    model = models[kind]
    score = controls.segment_score(model(eeg[0]), targets[0])
    noise_score = controls.segment_score(model(controls.noise_eeg(eeg[0], np.random.default_rng(0))), targets[0])
    other = controls.mismatched_pairs([("s1", "a"), ("s1", "b")])[0]
    mismatched = controls.segment_score(model(eeg[other]), targets[0])
    null = controls.circular_shift_null(model(eeg[0]), targets[0], fs=64.0, rng=np.random.default_rng(9))
    block = controls.control_report(score, noise_score, null, mismatched)
    if kind == "perfect":
        assert score == pytest.approx(1.0)
        assert abs(noise_score) < 0.1  # noise of 1280 frames: |r| ~ 1/sqrt(1280) = 0.028
        assert mismatched == pytest.approx(0.0, abs=1e-9)  # sin vs cos over one whole period
        assert null["p_value"] == pytest.approx(1 / 101)
        shifts = controls.draw_shifts(1280, 64.0, 100, 2.0, np.random.default_rng(9))
        assert null["mean"] == pytest.approx(np.cos(2 * np.pi * shifts / 1280).mean(), abs=1e-9)
        assert block["score_above_noise"] == pytest.approx(1.0 - noise_score)
    elif kind == "noise":
        assert abs(score) < 0.1 and abs(noise_score) < 0.1 and abs(mismatched) < 0.1
        assert null["p_value"] > 0.01
    else:
        for value in (score, noise_score, mismatched, null["mean"], null["p95"], block["score_above_noise"]):
            assert value == pytest.approx(0.0, abs=1e-12)
        assert null["p_value"] == 1.0
    assert block["warnings"] == []  # none of the three has an EEG-independent part above the null


# ----------------------------------------------------------------------------- pairing, report, Holm
def test_mismatched_pairs_prefer_another_stimulus_of_the_same_subject():
    keys = [("s1", "a"), ("s1", "a"), ("s1", "b"), ("s2", "c"), ("s3", "d"), ("s3", "e")]
    assert controls.mismatched_pairs(keys) == [2, 2, 0, None, 5, 4]
    assert controls.mismatched_pairs([("s1", "a"), ("s1", "a")]) == [1, 0]  # same stimulus: the fallback


def test_control_report_keys_and_the_warning():
    null = {"mean": 0.01, "p95": 0.05, "p_value": 0.2}
    block = controls.control_report(0.30, 0.20, null, 0.02)
    assert block["controls"] == {"noise_eeg": {"score": 0.20}, "circular_shift": {"mean": 0.01, "p95": 0.05,
                                                                                   "p_value": 0.2},
                                 "mismatched_eeg": {"score": 0.02}}
    assert block["score_above_noise"] == pytest.approx(0.10)
    assert len(block["warnings"]) == 1 and block["warnings"][0].startswith(controls.EEG_INDEPENDENT_WARNING)
    clean = controls.control_report(0.30, 0.04, null, 0.02)
    assert clean["warnings"] == []
    off = controls.control_report(0.30, None, null, None)  # costly controls turned off
    assert off["controls"]["noise_eeg"] == {"score": None} and off["score_above_noise"] is None
    assert "noise EEG n/a" in controls.format_controls(off)
    assert "WARNING: the score contains an EEG-independent part" in controls.format_controls(block)


def test_holm_by_hand():
    # sorted: a 0.01 * 3 = 0.03; c 0.03 * 2 = 0.06; b max(0.06, 0.04 * 1) = 0.06
    result = controls.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": None})
    assert result["correction"] == "holm"
    assert result["p_adjusted"] == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert result["significant"] == ["a"]
    block = controls.significance_block({f"s{i}": 1 / 101 for i in range(18)}, n_shifts=100)
    assert block["significant"] == [] and "cannot reach" in block["warnings"][0]  # 18 / 101 > 0.05


def test_speaker_extraction_controls_block_by_hand():
    from evaluation.speaker_extraction import se_control_block

    rows = [{"subject": 1, "si_sdri": v, "mixture_si_sdr": 0.5} for v in (8.0, 10.0, 12.0, 10.0)]  # mean 10 dB
    noise = [{"subject": 1, "si_sdri": v} for v in (4.0, 6.0, 5.0, 5.0)]  # mean 5, se = 0.707 / 2 = 0.354
    shuffled = [{"subject": 1, "si_sdri": v} for v in (-8.0, -10.0, -9.0, -9.0)]
    block = se_control_block(rows, noise, shuffled)
    assert block["score"] == 10.0 and block["score_above_noise"] == 5.0
    assert block["controls"]["noise_eeg"] == {"score": 5.0} and block["controls"]["mismatched_eeg"] == {"score": -9.0}
    assert block["controls"]["mixture"] == {"score": 0.0, "si_sdr": 0.5} and block["controls"]["circular_shift"] is None
    assert block["warnings"][0].startswith(controls.EEG_INDEPENDENT_WARNING)  # 5 dB without EEG: flagged
    quiet = se_control_block(rows, [{"subject": 1, "si_sdri": v} for v in (-1.0, 1.0, 0.5, -0.5)], shuffled)
    assert quiet["warnings"] == [] and quiet["per_subject_controls"]["1"]["score_above_noise"] == 10.0


def test_pearson_circular_equals_pearson_np_on_rolled_arrays_with_a_tail_and_offsets():
    from util.metrics import pearson_circular_np, pearson_np

    rng = np.random.default_rng(21)
    target = rng.standard_normal((1000, 3)) * 5 + 100  # a large offset: the sums must stay well conditioned
    prediction = target + 3 * rng.standard_normal(target.shape) + 7
    shifts = np.array([0, 5, 129, 700, 999, -3])
    got = pearson_circular_np(prediction, target, shifts, segment=300)  # 3 segments, a 100-frame tail left out
    want = np.stack([pearson_np(prediction[:900].reshape(3, 300, 3), np.roll(target, k, axis=0)[:900].reshape(3, 300, 3))
                     for k in shifts])
    assert got.shape == (6, 3, 3)
    np.testing.assert_allclose(got, want, atol=1e-10)
    whole = pearson_circular_np(prediction, target, shifts)
    np.testing.assert_allclose(whole[:, 0], [pearson_np(prediction, np.roll(target, k, axis=0)) for k in shifts], atol=1e-10)
    assert got[0, 0, 0] > 0.8 and abs(got[3]).max() < 0.2  # aligned vs 700 frames off


def test_adequate_shifts_rule():
    assert controls.adequate_shifts(18) == 7200 and controls.adequate_shifts(1) == 400
    assert controls.adequate_shifts(0) == 400 and controls.adequate_shifts(10_000) == 20_000
    assert controls.min_reachable_p(controls.adequate_shifts(18)) * 18 < 0.05 / 10
