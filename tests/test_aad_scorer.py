"""Golden tests for the AAD scorer (evaluation/aad.py): accuracy, Clopper-Pearson CI, binomial
significance threshold and MESD, worked out by hand from ../shared/reference/aad.md; CSV/npz loading; CLI."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from evaluation.aad import (
    binomial_ci,
    decision_accuracy,
    expected_switch_duration,
    format_report,
    load_correlations,
    main,
    mesd,
    score_correlations,
    significance_threshold,
    write_report,
)
from util.errors import EEGKitError

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- literal aad.md reference
def ref_n_states(p: float, n_min: int = 5, p0: float = 0.8, c: str = "0.65") -> int:
    """aad.md verbatim: increase N from N_min until (kbar - 1)/(N - 1) >= c, kbar = floor(log(r^N (1-P0) + P0)/log r + 1)."""
    r = p / (1 - p)
    n = n_min
    while True:
        kbar = math.floor(math.log(r**n * (1 - p0) + p0) / math.log(r) + 1)
        if Fraction(kbar - 1, n - 1) >= Fraction(c):
            return n
        n += 1


def ref_k_target(n: int, c: str = "0.65") -> int:
    return math.ceil(Fraction(c) * (n - 1) + 1)  # exact decimal c: no 0.65*20 = 13.000...02 trap


def ref_steps(p: float, k: int) -> float:
    """aad.md verbatim: (r^(k+1) - r^k)/(r^k - r) * sum_{i=1..k-1} r^-i h(i)."""
    r = p / (1 - p)
    d = 2 * p - 1

    def h(i):
        return (k - i) / d + p * (r**-k - r**-i) / d**2

    return (r ** (k + 1) - r**k) / (r**k - r) * sum(r**-i * h(i) for i in range(1, k))


def ref_esd(tau: float, p: float, n_min: int = 5, p0: float = 0.8, c: str = "0.65") -> float:
    n = ref_n_states(p, n_min, p0, c)
    return tau * ref_steps(p, ref_k_target(n, c))


def ref_mesd(taus, accs, n_points=1000):
    """Linear interpolation on n_points taus between the smallest and largest kept window; min ESD."""
    kept = [(t, a) for t, a in sorted(zip(taus, accs)) if a > 0.5]
    grid = np.linspace(kept[0][0], kept[-1][0], n_points)
    values = np.interp(grid, [t for t, _ in kept], [a for _, a in kept])
    esd = [ref_esd(float(t), float(p)) for t, p in zip(grid, values)]
    best = int(np.argmin(esd))
    return esd[best], float(grid[best])


# ----------------------------------------------------------------------------- accuracy, CI, threshold
def test_decision_accuracy_counts_ties_as_wrong():
    r_att = [0.30, 0.20, 0.10, 0.05, 0.40, 0.15, 0.22, 0.10, 0.01, 0.08]
    r_unatt = [0.10, 0.10, 0.00, 0.01, 0.05, 0.30, 0.22, 0.20, 0.00, 0.09]
    # right: windows 0,1,2,3,4,8 (6) ; wrong: 5, 7, 9 ; tie: 6 (wrong)  -> 6/10
    assert decision_accuracy(r_att, r_unatt) == pytest.approx(0.6, abs=1e-15)
    with pytest.raises(EEGKitError):
        decision_accuracy([0.1, 0.2], [0.1])
    with pytest.raises(EEGKitError):
        decision_accuracy([], [])


def _binom_tail_ge(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))


def _bisect(f, lo=0.0, hi=1.0, iterations=80):
    """Root of an increasing f on [lo, hi]."""
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def test_clopper_pearson_7_of_10_by_hand():
    # 10 windows, 7 right: accuracy 0.7
    r_att = np.array([0.3, 0.2, 0.25, 0.1, 0.4, 0.2, 0.3, 0.0, -0.1, 0.05])
    r_unatt = np.array([0.1, 0.1, 0.05, 0.0, 0.1, 0.1, 0.1, 0.2, 0.1, 0.10])
    assert decision_accuracy(r_att, r_unatt) == pytest.approx(0.7)
    # Clopper-Pearson by its definition: lower p_L solves P(X >= 7 | p_L) = 0.025,
    # upper p_U solves P(X <= 7 | p_U) = 0.025 (X ~ Bin(10, p)), each found by bisection on sums of comb()
    lower = _bisect(lambda p: _binom_tail_ge(7, 10, p) - 0.025)
    upper = _bisect(lambda p: 0.025 - (1 - _binom_tail_ge(8, 10, p)))
    # the beta-quantile form of the same interval
    assert lower == pytest.approx(stats.beta.ppf(0.025, 7, 4), abs=1e-10)
    assert upper == pytest.approx(stats.beta.ppf(0.975, 8, 3), abs=1e-10)
    # the tabulated values for 7/10
    assert (lower, upper) == pytest.approx((0.3475, 0.9333), abs=5e-5)
    assert binomial_ci(7, 10) == pytest.approx((lower, upper), abs=1e-9)


def test_clopper_pearson_edges_by_hand():
    # k = 0: lower 0, upper solves (1 - p)^10 = 0.025 -> p = 1 - 0.025^(1/10)
    assert binomial_ci(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1), abs=1e-12)
    # k = n: upper 1, lower solves p^10 = 0.025 -> p = 0.025^(1/10) = 0.69150...
    assert binomial_ci(10, 10) == pytest.approx((0.025 ** 0.1, 1.0), abs=1e-12)
    assert 0.025 ** 0.1 == pytest.approx(0.6915, abs=1e-4)
    # 99 % level for 7/10 from the same definition with 0.005 tails
    lower = _bisect(lambda p: _binom_tail_ge(7, 10, p) - 0.005)
    upper = _bisect(lambda p: 0.005 - (1 - _binom_tail_ge(8, 10, p)))
    assert binomial_ci(7, 10, level=0.99) == pytest.approx((lower, upper), abs=1e-9)


def test_significance_threshold_by_summing_combinations():
    # n = 10: cumulative counts of C(10, j), j = 0..8, out of 2^10 = 1024:
    #   1, 11, 56, 176, 386, 638, 848, 968, 1013
    cumulative = np.cumsum([math.comb(10, j) for j in range(11)])
    assert list(cumulative[:9]) == [1, 11, 56, 176, 386, 638, 848, 968, 1013]
    # P(X <= 7) = 968/1024 = 0.9453 < 0.95 <= P(X <= 8) = 1013/1024 = 0.9893 -> quantile 8 -> 8/10
    assert 968 / 1024 < 0.95 <= 1013 / 1024
    assert significance_threshold(10) == 0.8
    # n = 20 out of 2^20 = 1048576: cumulative up to 13 is 988116 (0.9423), up to 14 is 1026876 (0.9793)
    cumulative = np.cumsum([math.comb(20, j) for j in range(21)])
    assert cumulative[13] == 988116 and cumulative[14] == 1026876
    assert cumulative[13] / 2**20 < 0.95 <= cumulative[14] / 2**20
    assert significance_threshold(20) == 0.7  # 14/20; 15/20 right is significant: P(X >= 15) = 21700/2^20 = 0.0207
    # alpha 0.01, n = 10: P(X <= 8) = 0.9893 < 0.99 <= P(X <= 9) = 1023/1024 -> 9/10
    assert significance_threshold(10, alpha=0.01) == 0.9


# ----------------------------------------------------------------------------- MESD by hand
def test_esd_by_hand_p08():
    tau, p = 10.0, 0.8
    r = p / (1 - p)  # 4
    assert r == pytest.approx(4.0)
    # N = 5: kbar = floor(log(4^5 * 0.2 + 0.8)/log 4 + 1) = floor(log(205.6)/log(4) + 1) = floor(3.842 + 1) = 4
    kbar = math.floor(math.log(4**5 * 0.2 + 0.8) / math.log(4) + 1)
    assert kbar == 4
    assert (kbar - 1) / (5 - 1) == 0.75 >= 0.65  # so N stays at N_min = 5
    # k_c = ceil(0.65 * 4 + 1) = ceil(3.6) = 4
    k = math.ceil(0.65 * 4 + 1)
    assert k == 4
    # d = 2p - 1 = 0.6, r^-k = 1/256 = 0.00390625
    # h(1) = 3/0.6 + 0.8 (1/256 - 1/4)/0.36  = 5       - 0.546875    = 4.453125
    # h(2) = 2/0.6 + 0.8 (1/256 - 1/16)/0.36 = 3.33333 - 0.13020833  = 3.203125
    # h(3) = 1/0.6 + 0.8 (1/256 - 1/64)/0.36 = 1.66667 - 0.02604167  = 1.640625
    h = [3 / 0.6 + 0.8 * (1 / 256 - 1 / 4) / 0.36, 2 / 0.6 + 0.8 * (1 / 256 - 1 / 16) / 0.36,
         1 / 0.6 + 0.8 * (1 / 256 - 1 / 64) / 0.36]
    assert h == pytest.approx([4.453125, 3.203125, 1.640625], abs=1e-12)
    # sum r^-i h(i) = 0.25*4.453125 + 0.0625*3.203125 + 0.015625*1.640625 = 1.339111328125
    weighted = 0.25 * h[0] + 0.0625 * h[1] + 0.015625 * h[2]
    assert weighted == pytest.approx(1.339111328125, abs=1e-12)
    # prefactor (4^5 - 4^4)/(4^4 - 4) = 768/252 = 1/0.328125 (the weights' sum 0.25 + 0.0625 + 0.015625)
    steps = 768 / 252 * weighted  # = 4.0811011905
    assert steps == pytest.approx(4.0811011905, abs=1e-9)
    assert ref_steps(0.8, 4) == pytest.approx(steps, rel=1e-12)
    result = expected_switch_duration(tau, p)
    assert result["n_states"] == 5 and result["k_target"] == 4
    assert result["esd_s"] == pytest.approx(tau * steps, rel=1e-12)  # 40.811 s
    assert result["esd_s"] == pytest.approx(40.811011905, abs=1e-8)


@pytest.mark.parametrize("p", [0.505, 0.51, 0.55, 0.6, 0.65, 0.7, 0.75, 0.85, 0.9, 0.95, 0.99, 0.999, 0.999999])
@pytest.mark.parametrize("n_min,p0,c", [(5, 0.8, "0.65"), (2, 0.5, "0.5"), (10, 0.9, "0.8")])
def test_esd_matches_literal_formula(p, n_min, p0, c):
    tau = 2.5
    n = ref_n_states(p, n_min, p0, c)
    expected = tau * ref_steps(p, ref_k_target(n, c))
    result = expected_switch_duration(tau, p, n_min=n_min, p0=p0, c=float(c))
    assert result["n_states"] == n
    assert result["k_target"] == ref_k_target(n, c)
    assert result["esd_s"] == pytest.approx(expected, rel=1e-7)


def test_esd_p_equal_one_is_the_continuous_limit():
    # p = 1: deterministic chain, N = N_min = 5, k_c = ceil(0.65*4 + 1) = 4; the mirrored start has all
    # its weight in state 1 (r^-i/sum r^-j -> 1 for i = 1), so ESD = tau * (k_c - 1) = 3 tau
    result = expected_switch_duration(10.0, 1.0)
    assert result == {"esd_s": 30.0, "n_states": 5, "k_target": 4}
    assert expected_switch_duration(10.0, 1 - 1e-9)["esd_s"] == pytest.approx(30.0, rel=1e-6)
    # the literal formula at p = 1 - 1e-6 (r = 999999) is within 1e-5 of 3 tau too
    assert ref_esd(10.0, 1 - 1e-6) == pytest.approx(30.0, rel=1e-5)
    assert expected_switch_duration(10.0, 1 - 1e-6)["esd_s"] == pytest.approx(ref_esd(10.0, 1 - 1e-6), rel=1e-9)
    # N_min 8: k_c = ceil(0.65*7 + 1) = ceil(5.55) = 6 -> 5 tau
    assert expected_switch_duration(2.0, 1.0, n_min=8) == {"esd_s": 10.0, "n_states": 8, "k_target": 6}


def test_esd_at_or_below_chance_and_near_chance():
    assert expected_switch_duration(5.0, 0.5) == {"esd_s": math.inf, "n_states": None, "k_target": None}
    assert expected_switch_duration(5.0, 0.3)["esd_s"] == math.inf
    # p = 0.501: the literal N loop runs to 1119 states; the scorer finds the same N without looping
    assert expected_switch_duration(1.0, 0.501)["n_states"] == ref_n_states(0.501) == 1119
    # p = 0.5 + 1e-9 (log r = 4e-9): N ~ 1.1e9, too many for the literal loop. With x = N log r the
    # condition tends to log(0.2 e^x + 0.8) >= 0.65 x, whose positive root x* = 4.47 gives N ~ x*/log r;
    # and the exact condition must hold at N and fail at N - 1 (r^N = exp(N log r) does not overflow here)
    p = 0.5 + 1e-9
    near = expected_switch_duration(1.0, p)
    log_r = math.log1p((2 * p - 1) / (1 - p))
    x_star = _bisect(lambda x: math.log(0.2 * math.exp(x) + 0.8) - 0.65 * x, 1.0, 20.0)  # increasing on [1, 20]
    assert x_star == pytest.approx(4.47, abs=0.01)
    n = near["n_states"]
    assert n == pytest.approx(x_star / log_r, rel=1e-6)

    def holds(n_states):
        kbar = math.floor(math.log(math.exp(n_states * log_r) * 0.2 + 0.8) / log_r + 1)
        return (kbar - 1) / (n_states - 1) >= 0.65

    assert holds(n) and not holds(n - 1)
    assert math.isfinite(near["esd_s"]) and near["esd_s"] > 1e15
    with pytest.raises(EEGKitError):
        expected_switch_duration(0.0, 0.8)
    with pytest.raises(EEGKitError):
        expected_switch_duration(1.0, 1.2)


def _steps_by_hand_p09() -> float:
    # p = 0.9: r = 9, d = 0.8, d^2 = 0.64; N = 5 (kbar = floor(log(0.2*59049 + 0.8)/log 9 + 1)
    #   = floor(log(11810.6)/log(9) + 1) = floor(4.2675 + 1) = 5; (5-1)/4 = 1 >= 0.65), k_c = 4
    assert math.floor(math.log(0.2 * 9**5 + 0.8) / math.log(9) + 1) == 5
    h1 = 3 / 0.8 + 0.9 * (1 / 6561 - 1 / 9) / 0.64  # 3.75 - 0.156036 = 3.593964
    h2 = 2 / 0.8 + 0.9 * (1 / 6561 - 1 / 81) / 0.64  # 2.5 - 0.017147 = 2.482853
    h3 = 1 / 0.8 + 0.9 * (1 / 6561 - 1 / 729) / 0.64  # 1.25 - 0.001715 = 1.248285
    weights = [1 / 9, 1 / 81, 1 / 729]  # stationary weights r^-i, normalised below
    return (weights[0] * h1 + weights[1] * h2 + weights[2] * h3) / sum(weights)


def test_mesd_steep_curve():
    # accuracy jumps from 0.55 at 1 s to 0.9 at 2 s and creeps to 0.95 at 10 s: the optimum is at the kink, 2 s
    taus, accs = [1.0, 2.0, 10.0], [0.55, 0.9, 0.95]
    steps = _steps_by_hand_p09()
    assert steps == pytest.approx(3.4582975, abs=1e-6)
    expected, tau_opt = ref_mesd(taus, accs)
    assert tau_opt == pytest.approx(2.0)  # 2 s is grid point 111 of linspace(1, 10, 1000)
    assert expected == pytest.approx(2.0 * steps, rel=1e-9)  # 6.9166 s
    result = mesd(taus, accs)
    assert result["mesd_s"] == pytest.approx(2.0 * steps, rel=1e-9)
    assert result["tau_opt_s"] == pytest.approx(2.0) and result["p_opt"] == pytest.approx(0.9)
    assert result["n_states"] == 5 and result["k_target"] == 4
    assert result["warnings"] == [] and result["reason"] is None


def test_mesd_flat_curve_optimum_at_shortest_window():
    # 0.70 at 1 s, 0.72 at 60 s: ESD grows about linearly with tau, so the optimum is tau = 1 s (edge warning)
    # p = 0.7: r = 7/3, kbar = floor(log(0.2 (7/3)^5 + 0.8)/log(7/3) + 1) = floor(log(14.633)/0.8473 + 1)
    #   = floor(3.167 + 1) = 4, (4-1)/4 = 0.75 >= 0.65 -> N = 5, k_c = 4
    r, d = 7 / 3, 0.4
    assert math.floor(math.log(0.2 * r**5 + 0.8) / math.log(r) + 1) == 4
    h = [(4 - i) / d + 0.7 * (r**-4 - r**-i) / d**2 for i in (1, 2, 3)]
    weights = [r**-1, r**-2, r**-3]
    steps = sum(w * hi for w, hi in zip(weights, h)) / sum(weights)
    assert steps == pytest.approx(4.99760121, abs=1e-7)
    result = mesd([60.0, 1.0], [0.72, 0.70])  # order of the input does not matter
    assert result["mesd_s"] == pytest.approx(1.0 * steps, rel=1e-12)
    assert result["tau_opt_s"] == 1.0 and result["p_opt"] == pytest.approx(0.7)
    assert len(result["warnings"]) == 1 and "shortest" in result["warnings"][0]
    assert ref_mesd([1.0, 60.0], [0.70, 0.72])[0] == pytest.approx(result["mesd_s"], rel=1e-9)


def test_mesd_drops_points_at_or_below_chance():
    taus, accs = [1.0, 2.0, 5.0, 10.0], [0.5, 0.45, 0.7, 0.8]
    result = mesd(taus, accs)
    dropped = [w for w in result["warnings"] if "dropped" in w]
    assert len(dropped) == 1 and "1 s (0.5)" in dropped[0] and "2 s (0.45)" in dropped[0]
    # what is left is the curve 5 s: 0.7 -> 10 s: 0.8; ESD(5 s, 0.7) = 5 * 4.99760 = 24.988 is its minimum
    assert result["mesd_s"] == pytest.approx(5.0 * 4.99760121, abs=1e-6)
    assert result["tau_opt_s"] == 5.0
    assert result["mesd_s"] == pytest.approx(ref_mesd(taus, accs)[0], rel=1e-9)
    assert result["mesd_s"] == pytest.approx(mesd([5.0, 10.0], [0.7, 0.8])["mesd_s"], rel=1e-12)


def test_mesd_p_one_and_single_point():
    # p = 1 on both windows: ESD = 3 tau, minimum 3 * 5 = 15 s at the shortest window
    result = mesd([5.0, 10.0], [1.0, 1.0])
    assert result["mesd_s"] == pytest.approx(15.0) and result["tau_opt_s"] == 5.0
    # 0.9 at 1 s then 1.0 at 4 s: ESD(1 s, 0.9) = 3.4583 s beats 3 * 4 = 12 s
    assert mesd([1.0, 4.0], [0.9, 1.0])["mesd_s"] == pytest.approx(_steps_by_hand_p09(), rel=1e-9)
    # one point left after dropping: its ESD, no interpolation; 20 s at 0.8 -> 20 * 4.0811011905
    single = mesd([1.0, 20.0], [0.3, 0.8])
    assert single["mesd_s"] == pytest.approx(20 * 4.0811011905, abs=1e-7)
    assert single["tau_opt_s"] == 20.0
    assert any("only one" in w for w in single["warnings"]) and any("dropped" in w for w in single["warnings"])


def test_mesd_all_at_chance_is_undefined():
    result = mesd([1.0, 10.0, 60.0], [0.5, 0.4, 0.5])
    assert result["mesd_s"] == math.inf
    assert result["reason"] == "no decision window above chance"
    assert result["tau_opt_s"] is None and result["n_states"] is None
    assert any("dropped" in w for w in result["warnings"])


def test_mesd_published_guide_loosely():
    guide = {60: 0.895, 30: 0.832, 20: 0.788, 10: 0.726, 5: 0.666, 1: 0.579}
    result = mesd(list(guide), list(guide.values()))
    assert 9.0 <= result["mesd_s"] <= 89.0
    assert 1.0 < result["tau_opt_s"] < 60.0 and result["warnings"] == []


# ----------------------------------------------------------------------------- loading and the report
def _synthetic_rows(seed: int = 0):
    """Two subjects, windows 2.5/10/60 s; S2 decodes at chance. Exact counts chosen by hand."""
    rng = np.random.default_rng(seed)
    plan = {("S1", "2.5"): (20, 13), ("S1", "10"): (12, 10), ("S1", "60"): (10, 10),
            ("S2", "2.5"): (20, 8), ("S2", "10"): (12, 6), ("S2", "60"): (10, 5)}
    rows = []
    for (subject, window), (n, right) in plan.items():
        for i in range(n):
            r_unatt = float(rng.uniform(-0.1, 0.1))
            r_att = r_unatt + (0.05 if i < right else -0.05)
            rows.append({"subject": subject, "window_s": window, "r_attended": r_att, "r_unattended": r_unatt})
    return rows


def _write_csv(path: Path, rows, extra=True):
    with open(path, "w", newline="") as handle:
        fields = ["r_unattended", "window_s", "trial", "subject", "r_attended"] if extra else \
            ["subject", "window_s", "r_attended", "r_unattended"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "trial": i % 3} if extra else row)


def _check_report(report):
    s1, s2 = report["subjects"]["S1"], report["subjects"]["S2"]
    assert list(s1["accuracy"]) == ["2.5", "10", "60"]  # numeric order, keys as written
    assert s1["accuracy"] == pytest.approx({"2.5": 13 / 20, "10": 10 / 12, "60": 1.0})
    assert s1["n_windows"] == {"2.5": 20, "10": 12, "60": 10}
    assert s1["ci95"]["60"] == pytest.approx([0.025 ** 0.1, 1.0])  # 10/10: (0.025^(1/10), 1)
    assert s1["significance_threshold"]["60"] == 0.8
    assert s1["significant"] == {"2.5": False, "10": True, "60": True}  # 13/20 < 0.7 ; 10/12 > 9/12 ; 1 > 0.8
    assert s1["significance_threshold"]["10"] == 0.75  # n = 12: P(X <= 8) = 3797/4096 = 0.927, P(X <= 9) = 0.981
    assert s1["mesd_s"] == pytest.approx(mesd([2.5, 10, 60], [0.65, 10 / 12, 1.0])["mesd_s"])
    assert s2["mesd_s"] is None and s2["mesd"]["mesd_s"] is None
    assert s2["mesd"]["reason"] == "no decision window above chance"
    assert report["median_mesd_s"] == pytest.approx(s1["mesd_s"])  # median over subjects with a defined MESD
    assert report["mean_accuracy"] == pytest.approx({"2.5": (13 + 8) / 40, "10": 16 / 24, "60": 0.75})
    assert report["n_subjects"] == 2
    assert report["params"] == {"n_min": 5, "p0": 0.8, "c": 0.65, "alpha": 0.05, "ci": "Clopper-Pearson"}
    assert any(w.startswith("S2: ") for w in report["warnings"])
    json.dumps(report, allow_nan=False)  # no NaN/inf anywhere


def test_csv_and_npz_round_trip(tmp_path):
    rows = _synthetic_rows()
    _write_csv(tmp_path / "corr.csv", rows)
    loaded = load_correlations(tmp_path / "corr.csv")
    assert {row["window"] for row in loaded} == {"2.5", "10", "60"}
    assert loaded[0]["r_attended"] == pytest.approx(rows[0]["r_attended"], abs=1e-15)
    report_csv = score_correlations(loaded)
    _check_report(report_csv)
    np.savez(tmp_path / "corr.npz", subject=np.array([r["subject"] for r in rows]),
             window_s=np.array([float(r["window_s"]) for r in rows]),
             r_attended=np.array([r["r_attended"] for r in rows]),
             r_unattended=np.array([r["r_unattended"] for r in rows]))
    report_npz = score_correlations(load_correlations(tmp_path / "corr.npz"))
    _check_report(report_npz)
    assert report_npz == report_csv  # "10.0" as a float becomes the key "10", as the CSV wrote it
    text = format_report(report_csv)
    assert "S1" in text and "undefined" in text and "2.5" in text
    write_report(report_csv, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report_csv))


def test_window_spellings_must_agree(tmp_path):
    rows = _synthetic_rows()
    rows[0]["window_s"] = "2.50"  # the same length as "2.5" written differently
    _write_csv(tmp_path / "corr.csv", rows)
    with pytest.raises(EEGKitError, match=r"corr.csv: window length 2.5 s written both as"):
        load_correlations(tmp_path / "corr.csv")


def test_score_parameters_are_checked():
    rows = [{"subject": "S", "window": "1", "window_s": 1.0, "r_attended": 1.0, "r_unattended": 0.0}]
    assert score_correlations(rows)["subjects"]["S"]["accuracy"] == {"1": 1.0}
    # rows built in code without a window key get format(window_s, "g")
    no_key = [{"subject": "S", "window_s": 2.50, "r_attended": 0.0, "r_unattended": 1.0}]
    assert score_correlations(no_key)["subjects"]["S"]["accuracy"] == {"2.5": 0.0}
    for kwargs in ({"n_min": 1}, {"p0": 1.0}, {"c": 0.0}, {"alpha": 1.5}):
        with pytest.raises(EEGKitError):
            score_correlations(rows, **kwargs)


# ----------------------------------------------------------------------------- CLI
def _cli(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "evaluation.aad", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_good_run(tmp_path):
    _write_csv(tmp_path / "corr.csv", _synthetic_rows())
    out, plot = tmp_path / "out" / "report.json", tmp_path / "out" / "report.png"
    result = _cli("--correlations", tmp_path / "corr.csv", "--out", out, "--plot", plot)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"subjects", "mean_accuracy", "median_mesd_s", "n_subjects", "params", "warnings"}
    assert set(report["subjects"]["S1"]) == {"accuracy", "n_windows", "ci95", "significance_threshold",
                                             "significant", "mesd_s", "mesd", "warnings"}
    assert set(report["subjects"]["S1"]["mesd"]) >= {"mesd_s", "tau_opt_s", "p_opt", "n_states", "warnings", "reason"}
    _check_report(report)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "S1" in result.stdout and "MESD" in result.stdout
    # a second run refuses to overwrite, then --overwrite replaces (with other parameters)
    before = out.read_bytes()
    again = _cli("--correlations", tmp_path / "corr.csv", "--out", out)
    assert again.returncode == 2 and "--out" in again.stderr and "already exists" in again.stderr
    assert out.read_bytes() == before
    replaced = _cli("--correlations", tmp_path / "corr.csv", "--out", out, "--plot", plot, "--overwrite",
                    "--alpha", "0.01", "--n-min", "6")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(out.read_text())["params"]["alpha"] == 0.01
    help_text = _cli("--help").stdout
    for flag in ("--correlations", "--out", "--plot", "--n-min", "--p0", "--comfort", "--alpha", "--overwrite"):
        assert flag in help_text


def _bad_inputs(folder: Path) -> list[tuple[str, list[str], str]]:
    """(name, extra CLI args, text the error must contain); files are created in `folder`."""
    good = _synthetic_rows()
    cases = []

    def csv_file(name, text):
        (folder / name).write_text(text)
        return str(folder / name)

    cases.append(("missing file", ["--correlations", str(folder / "absent.csv")], "absent.csv: correlations file not found"))
    cases.append(("not csv/npz", ["--correlations", csv_file("corr.txt", "a,b\n")], "corr.txt: expected a .csv or .npz"))
    cases.append(("missing column", ["--correlations", csv_file("nocol.csv", "subject,window_s,r_attended\nS,1,0.2\n")],
                  "nocol.csv: missing column 'r_unattended'"))
    cases.append(("non-numeric r", ["--correlations", csv_file(
        "text.csv", "subject,window_s,r_attended,r_unattended\nS,1,0.2,0.1\nS,1,abc,0.1\n")],
        "text.csv: line 3: r_attended 'abc' is not a number"))
    cases.append(("non-finite r", ["--correlations", csv_file(
        "nan.csv", "subject,window_s,r_attended,r_unattended\nS,1,0.2,nan\n")], "nan.csv: line 2: r_unattended"))
    cases.append(("non-numeric window", ["--correlations", csv_file(
        "win.csv", "subject,window_s,r_attended,r_unattended\nS,ten,0.2,0.1\n")], "win.csv: line 2: window_s 'ten'"))
    cases.append(("window <= 0", ["--correlations", csv_file(
        "zero.csv", "subject,window_s,r_attended,r_unattended\nS,0,0.2,0.1\n")], "zero.csv: line 2: window_s 0 must be > 0"))
    cases.append(("empty file", ["--correlations", csv_file("empty.csv", "")], "empty.csv: empty file"))
    cases.append(("header only", ["--correlations", csv_file(
        "header.csv", "subject,window_s,r_attended,r_unattended\n")], "header.csv: no data rows"))
    cases.append(("duplicated column", ["--correlations", csv_file(
        "dup.csv", "subject,window_s,r_attended,r_unattended,subject\nS,1,0.2,0.1,T\n")], "dup.csv: duplicated column 'subject'"))
    cases.append(("ragged line", ["--correlations", csv_file(
        "ragged.csv", "subject,window_s,r_attended,r_unattended\nS,1,0.2\n")], "ragged.csv: line 2: 3 fields"))
    np.savez(folder / "unequal.npz", subject=np.array(["S", "S"]), window_s=np.array([1.0, 1.0]),
             r_attended=np.array([0.1, 0.2, 0.3]), r_unattended=np.array([0.0, 0.0]))
    cases.append(("unequal npz", ["--correlations", str(folder / "unequal.npz")], "unequal.npz: arrays of unequal length"))
    np.savez(folder / "object.npz", subject=np.array(["S", 1], dtype=object), window_s=np.array([1.0, 1.0]),
             r_attended=np.array([0.1, 0.2]), r_unattended=np.array([0.0, 0.0]))
    cases.append(("object npz", ["--correlations", str(folder / "object.npz")], "object.npz: array 'subject' is an object array"))
    np.savez(folder / "nokey.npz", subject=np.array(["S"]), window_s=np.array([1.0]), r_attended=np.array([0.1]))
    cases.append(("npz missing key", ["--correlations", str(folder / "nokey.npz")], "nokey.npz: missing array 'r_unattended'"))
    (folder / "broken.npz").write_bytes(b"not a zip at all")
    cases.append(("broken npz", ["--correlations", str(folder / "broken.npz")], "broken.npz: not a valid .npz"))
    _write_csv(folder / "good.csv", good)
    good_csv = str(folder / "good.csv")
    cases.append(("bad --p0", ["--correlations", good_csv, "--p0", "1.5"], "--p0: must be in (0, 1)"))
    cases.append(("bad --comfort", ["--correlations", good_csv, "--comfort", "0"], "--comfort: must be in (0, 1)"))
    cases.append(("bad --alpha", ["--correlations", good_csv, "--alpha", "abc"], "--alpha"))
    cases.append(("bad --n-min", ["--correlations", good_csv, "--n-min", "1"], "--n-min: must be an integer >= 2"))
    cases.append(("bad --plot suffix", ["--correlations", good_csv, "--plot", "OUTDIR/plot.jpg"], "--plot"))
    return cases


def _prepare_bad_cases(tmp_path):
    inputs, outdir = tmp_path / "in", tmp_path / "outdir"
    inputs.mkdir()
    outdir.mkdir()
    cases = []
    for name, args, expected in _bad_inputs(inputs):
        args = [a.replace("OUTDIR", str(outdir)) for a in args]
        cases.append((name, args + ["--out", str(outdir / f"{name.replace(' ', '_')}.json")], expected))
    good_csv = str(inputs / "good.csv")
    # --out equal to the input is refused even with --overwrite; a missing required flag is named
    cases.append(("out is input", ["--correlations", good_csv, "--out", good_csv, "--overwrite"],
                  "same file as --correlations"))
    cases.append(("no --correlations", ["--out", str(outdir / "x.json")], "--correlations"))
    return cases, inputs, outdir


def _check_one_line(name, code, stderr, expected, failures):
    lines = stderr.strip().splitlines()
    if code != 2 or "Traceback" in stderr or len(lines) != 1 or not lines[0].startswith("error: ") \
            or expected not in lines[0]:
        failures.append(f"{name}: exit {code}, stderr {stderr!r}")


def test_bad_inputs_exit_2_one_line_and_write_nothing(tmp_path, capsys):
    """Every bad input through run_cli in-process: exit status 2, one `error:` line naming the file or flag."""
    from util.errors import run_cli

    cases, inputs, outdir = _prepare_bad_cases(tmp_path)
    before = (inputs / "good.csv").read_bytes()
    failures = []
    for name, args, expected in cases:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, args)
        _check_one_line(name, exit_info.value.code, capsys.readouterr().err, expected, failures)
    assert not failures, "\n".join(failures)
    assert list(outdir.iterdir()) == []
    assert (inputs / "good.csv").read_bytes() == before


def test_cli_bad_inputs_as_subprocesses(tmp_path):
    """A sample of the bad inputs as a user runs them (python -m evaluation.aad), run concurrently."""
    cases, inputs, outdir = _prepare_bad_cases(tmp_path)
    sample = {"missing file", "missing column", "non-numeric r", "object npz", "unequal npz", "bad --p0",
              "bad --alpha", "out is input"}
    processes = [(name, expected, subprocess.Popen([sys.executable, "-m", "evaluation.aad", *args], cwd=REPO,
                                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                 for name, args, expected in cases if name in sample]
    assert len(processes) == len(sample)
    failures = []
    for name, expected, process in processes:
        _, stderr = process.communicate(timeout=120)
        _check_one_line(name, process.returncode, stderr, expected, failures)
    assert not failures, "\n".join(failures)
    assert list(outdir.iterdir()) == []


def test_main_in_process_raises_eegkit_error(tmp_path):
    with pytest.raises(EEGKitError, match="absent.npz: correlations file not found"):
        main(["--correlations", str(tmp_path / "absent.npz"), "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()
