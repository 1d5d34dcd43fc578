"""Auditory attention decoding (AAD) scorer: accuracy per decision window, binomial CI, significance and MESD.

Facts: `../shared/reference/aad.md` (implemented from its definitions).

Input: per-decision-window scores of a decoder, one row per window:
  subject, window_s (decision-window length in s), r_attended, r_unattended
(typically the Pearson r of the reconstructed envelope with each talker's envelope; any score
where "higher = this talker" works). A window is decided right when r_attended > r_unattended
(a tie counts as wrong).

Per subject and window length the report gives
  * accuracy = fraction of windows decided right, and n_windows;
  * ci95: the Clopper-Pearson exact 95 % interval of that fraction (scipy.stats.beta quantiles);
  * significance_threshold: the (1 - alpha) quantile of Bin(n, 0.5) divided by n; an accuracy
    strictly ABOVE it is significant ("significant");
and per subject the MESD (minimal expected switch duration, Geirnaert et al. 2020, see
`expected_switch_duration` and `mesd` for the Markov-chain model and its p -> 1 limit).

CLI:
  python -m evaluation.aad --correlations FILE.csv|FILE.npz --out report.json [--plot report.png] \
      [--n-min 5] [--p0 0.8] [--comfort 0.65] [--alpha 0.05] [--overwrite]
"""
from __future__ import annotations
if not __package__:  # run by path (python evaluation/aad.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import csv
import math
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from util.errors import EEGKitError, run_cli

COLUMNS = ("subject", "window_s", "r_attended", "r_unattended")
DECISION_WINDOWS_S = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)  # the decision windows the AAD literature reports
_TOL = 1e-9  # slack for floor/ceil/>= on values that are integers in exact arithmetic (c * (N - 1), kbar)


def parse_windows(text, flag: str = "--windows") -> tuple[float, ...]:
    """``"1,2,5"`` (or a sequence) -> sorted unique positive window lengths in s; one-line error naming ``flag``."""
    values = []
    for item in (text.split(",") if isinstance(text, str) else text):
        item = str(item).strip()
        try:
            value = float(item)
        except ValueError:
            raise EEGKitError(f"{flag} {text}: {item!r} is not a number (e.g. 1,2,5,10,20,30,60)") from None
        if not math.isfinite(value) or value <= 0:
            raise EEGKitError(f"{flag} {text}: window lengths must be positive seconds, got {item}")
        values.append(value)
    if not values:
        raise EEGKitError(f"{flag} {text!r}: no window lengths given")
    return tuple(sorted(set(values)))


# ----------------------------------------------------------------------------- accuracy and binomial statistics
def decision_accuracy(r_attended, r_unattended) -> float:
    """Fraction of windows with r_attended > r_unattended (ties count as wrong); inputs (n_windows,)."""
    r_att = np.asarray(r_attended, dtype=np.float64).reshape(-1)  # (n_windows,)
    r_unatt = np.asarray(r_unattended, dtype=np.float64).reshape(-1)  # (n_windows,)
    if r_att.shape != r_unatt.shape:
        raise EEGKitError(f"decision_accuracy: {r_att.size} attended vs {r_unatt.size} unattended scores")
    if r_att.size == 0:
        raise EEGKitError("decision_accuracy: no decision windows")
    if not (np.isfinite(r_att).all() and np.isfinite(r_unatt).all()):
        raise EEGKitError("decision_accuracy: scores contain NaN or Inf")
    return float(np.mean(r_att > r_unatt))


def binomial_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson exact interval for k successes out of n at the given confidence level.

    With a = 1 - level: lower = Beta(a/2; k, n - k + 1) quantile, upper = Beta(1 - a/2; k + 1, n - k)
    quantile; lower = 0 when k = 0 and upper = 1 when k = n (the other bound keeps a/2).
    """
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise EEGKitError(f"binomial_ci: need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    if not 0.0 < level < 1.0:
        raise EEGKitError(f"binomial_ci: level must be in (0, 1), got {level}")
    from scipy import stats  # imported here: a CLI run that fails on its input need not load scipy

    a = 1.0 - level
    lower = 0.0 if k == 0 else float(stats.beta.ppf(a / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(stats.beta.ppf(1 - a / 2, k + 1, n - k))
    return lower, upper


def significance_threshold(n: int, alpha: float = 0.05, chance: float = 0.5) -> float:
    """(1 - alpha) quantile of Bin(n, chance), divided by n: an accuracy strictly above it is significant.

    The quantile is the smallest k with P(X <= k) >= 1 - alpha, so P(X > k) <= alpha. ``chance`` is
    the accuracy of guessing: 0.5 for two talkers (AAD), 1 / K for K candidates (Task 1 match-mismatch).
    """
    n = int(n)
    if n < 1:
        raise EEGKitError(f"significance_threshold: need n >= 1 windows, got {n}")
    if not 0.0 < alpha < 1.0:
        raise EEGKitError(f"significance_threshold: alpha must be in (0, 1), got {alpha}")
    if not 0.0 < chance < 1.0:
        raise EEGKitError(f"significance_threshold: chance must be in (0, 1), got {chance}")
    from scipy import stats

    k = int(stats.binom.ppf(1.0 - alpha, n, chance))
    # guard the quantile against rounding in the CDF: smallest k with CDF(k) >= 1 - alpha
    while k > 0 and stats.binom.cdf(k - 1, n, chance) >= 1.0 - alpha:
        k -= 1
    while k < n and stats.binom.cdf(k, n, chance) < 1.0 - alpha:
        k += 1
    return k / n


# ----------------------------------------------------------------------------- MESD
def _check_mesd_params(n_min: Any, p0: float, c: float) -> int:
    if isinstance(n_min, bool) or int(n_min) != n_min or n_min < 2:
        raise EEGKitError(f"n_min must be an integer >= 2, got {n_min}")
    if not 0.0 < p0 < 1.0:
        raise EEGKitError(f"p0 must be in (0, 1), got {p0}")
    if not 0.0 < c < 1.0:
        raise EEGKitError(f"c (comfort level) must be in (0, 1), got {c}")
    return int(n_min)


def _n_states(log_r: float, n_min: int, p0: float, c: float) -> int:
    """Smallest N >= n_min with (kbar - 1) / (N - 1) >= c, kbar = floor(log(r**N (1-P0) + P0) / log r + 1).

    g(N) = log(r**N (1 - P0) + P0) / log r is computed as logaddexp(N log r + log(1-P0), log P0) / log r,
    so r**N never overflows. The search is vectorised and skips ranges that cannot qualify:
      * g(N) > N - m with m = log(1/(1-P0)) / log r, so N_up = ceil((m + 1 - c) / (1 - c)) always
        qualifies (floor(g) > g - 1 > N - m - 1 >= c (N - 1)): the answer lies in [n_min, max(n_min, N_up)];
      * a qualifying N needs g(N) >= c (N - 1); g is convex in N (g' = A / (A + P0), A = r**N (1-P0),
        increases), so {N : g(N) < c (N - 1)} is an interval and can be jumped over by bisection.
    For p close to 0.5 (log r -> 0) N grows like 1/log r, which this handles without a long loop.
    """
    log_1mp0, log_p0 = math.log1p(-p0), math.log(p0)

    def g(n):
        return np.logaddexp(n * log_r + log_1mp0, log_p0) / log_r

    def qualifies(n):  # n: (m,) float array of candidate N
        kbar = np.floor(g(n) + 1.0 + _TOL)
        return kbar - 1.0 >= c * (n - 1.0) - _TOL

    m = -log_1mp0 / log_r
    n_up = max(n_min, int(math.ceil((m + 1.0 - c) / (1.0 - c))) + 1)
    start, chunk = n_min, 64
    while start <= n_up:
        candidates = np.arange(start, min(n_up, start + chunk - 1) + 1, dtype=np.float64)  # (chunk,)
        ok = qualifies(candidates)
        if ok.any():
            return int(candidates[int(np.argmax(ok))])
        start = int(candidates[-1]) + 1
        chunk *= 2
        if start <= n_up and g(float(start)) < c * (start - 1.0):
            lo, hi = start, n_up  # g < c (N-1) at lo, g >= c (N-1) at hi (hi qualifies)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if g(float(mid)) < c * (mid - 1.0):
                    lo = mid
                else:
                    hi = mid
            start = hi
    return n_up  # reached only through floating-point noise at N_up, which qualifies in exact arithmetic


def _log_r(p: float) -> float:
    """log r = log(p / (1 - p)) = log1p((2p - 1) / (1 - p)): accurate for p near 0.5 (no log p - log(1-p) cancellation)."""
    return math.log1p((2.0 * p - 1.0) / (1.0 - p))


def _mean_steps(p: float, k: int) -> float:
    """Expected number of decisions to first reach state k from the stationary-weighted states 1..k-1.

    aad.md: steps = (r**(k+1) - r**k) / (r**k - r) * sum_{i=1..k-1} r**-i h(i),
    h(i) = (k - i) / d + p (r**-k - r**-i) / d**2, d = 2p - 1, r = p / (1 - p).
    Written with q = 1/r = (1-p)/p in [0, 1) and K = k - 1, the normalised weights are w_i = q**i / Z, and
      E[i]    = sum i q**i / Z = 1/(1-q) - K q**K / (1 - q**K) = p/d - K q**K / (1 - q**K),
      E[q**i] = q (1 + q**K) / (1 + q), so r**-k - E[r**-i] = -q (1 - q**k) / (1 + q) and p q / (1 + q) = p (1-p),
    giving the closed form used here (no power of r, so nothing overflows for p close to 1):
      steps = (k - E[i]) / d - p (1 - p) (1 - q**k) / d**2.
    At p = 1 (q = 0) it gives E[i] = 1 and steps = k - 1: the normalised weights q**i / Z all go to state 1
    (the weights r**-i are largest at the smallest i, so they concentrate on i = 1, not on k - 1),
    and h(1) -> k - 1; this is the deterministic chain started mirrored in state 1 (its stationary mass
    sits in the top state N), which climbs one state per decision. The formula is continuous at p = 1.
    """
    d = 2.0 * p - 1.0
    big_k = k - 1
    if p >= 1.0:
        return float(big_k)
    log_q = -_log_r(p)  # log q = -log r < 0
    q_big_k = math.exp(big_k * log_q)  # q**K (underflows to 0 harmlessly)
    one_minus_q_big_k = -math.expm1(big_k * log_q)  # 1 - q**K, accurate for q near 1
    one_minus_q_k = -math.expm1(k * log_q)  # 1 - q**k
    mean_i = p / d - big_k * q_big_k / one_minus_q_big_k
    return (k - mean_i) / d - p * (1.0 - p) * one_minus_q_k / d**2


def expected_switch_duration(tau: float, p: float, n_min=5, p0=0.8, c=0.65) -> dict:
    """ESD of a decision window of tau s with accuracy p: {"esd_s", "n_states", "k_target"}.

    Markov chain with N gain states; every tau s the state moves one step towards the attended talker
    with probability p (away with 1 - p). N = smallest N >= n_min with (kbar - 1)/(N - 1) >= c,
    k_target = ceil(c (N - 1) + 1), ESD = tau * mean steps to reach k_target (see `_mean_steps`).
    p <= 0.5: the chain does not drift to the attended side, esd_s = inf, n_states and k_target None.
    p == 1: the explicit limit, N = n_min (kbar = N when r -> inf) and ESD = tau * (k_target - 1).
    """
    n_min = _check_mesd_params(n_min, p0, c)
    tau, p = float(tau), float(p)
    if not (math.isfinite(tau) and tau > 0):
        raise EEGKitError(f"expected_switch_duration: tau must be a finite number > 0, got {tau}")
    if not 0.0 <= p <= 1.0:
        raise EEGKitError(f"expected_switch_duration: accuracy p must be in [0, 1], got {p}")
    if p <= 0.5:
        return {"esd_s": math.inf, "n_states": None, "k_target": None}
    if p >= 1.0:
        n_states = n_min  # kbar = floor(N + 1 + log(1-P0)/log r) -> N, and (N - 1)/(N - 1) = 1 >= c
    else:
        n_states = _n_states(_log_r(p), n_min, p0, c)
    k_target = int(math.ceil(c * (n_states - 1) + 1 - _TOL))
    return {"esd_s": tau * _mean_steps(p, k_target), "n_states": n_states, "k_target": k_target}


def _fmt_s(value: float) -> str:
    return format(float(value), "g")


def mesd(window_s, accuracy, n_min=5, p0=0.8, c=0.65, n_points=1000) -> dict:
    """Minimal expected switch duration over an accuracy-vs-window curve; window_s, accuracy (n_windows,).

    Points with accuracy <= 0.5 are dropped (warning naming them). None left: mesd_s inf, reason
    "no decision window above chance". One left: its ESD, no interpolation. Otherwise the accuracy is
    interpolated linearly in tau on n_points taus from the smallest to the largest remaining window and
    MESD = min ESD (warning when the optimum is at an end of that range).
    Returns {"mesd_s", "tau_opt_s", "p_opt", "n_states", "k_target", "warnings", "reason"}.
    """
    n_min = _check_mesd_params(n_min, p0, c)
    taus = np.asarray(window_s, dtype=np.float64).reshape(-1)  # (n_windows,)
    accs = np.asarray(accuracy, dtype=np.float64).reshape(-1)  # (n_windows,)
    if taus.shape != accs.shape or taus.size == 0:
        raise EEGKitError(f"mesd: need equal, non-zero numbers of windows and accuracies, got {taus.size}, {accs.size}")
    if not (np.isfinite(taus).all() and (taus > 0).all()):
        raise EEGKitError("mesd: window lengths must be finite and > 0")
    if not (np.isfinite(accs).all() and ((accs >= 0) & (accs <= 1)).all()):
        raise EEGKitError("mesd: accuracies must be in [0, 1]")
    if np.unique(taus).size != taus.size:
        raise EEGKitError("mesd: repeated window length")
    if isinstance(n_points, bool) or int(n_points) != n_points or n_points < 2:
        raise EEGKitError(f"mesd: n_points must be an integer >= 2, got {n_points}")
    order = np.argsort(taus)
    taus, accs = taus[order], accs[order]
    warnings: list[str] = []
    dropped = accs <= 0.5
    if dropped.any():
        names = ", ".join(f"{_fmt_s(t)} s ({a:.4g})" for t, a in zip(taus[dropped], accs[dropped]))
        warnings.append(f"dropped decision windows at or below chance (accuracy <= 0.5): {names}")
    taus, accs = taus[~dropped], accs[~dropped]
    result = {"mesd_s": math.inf, "tau_opt_s": None, "p_opt": None, "n_states": None, "k_target": None,
              "warnings": warnings, "reason": None}
    if taus.size == 0:
        result["reason"] = "no decision window above chance"
        return result
    if taus.size == 1:
        warnings.append(f"only one decision window above chance ({_fmt_s(taus[0])} s): its ESD, no interpolation")
        grid_tau, grid_p = taus, accs  # (1,)
    else:
        grid_tau = np.linspace(taus[0], taus[-1], int(n_points))  # (n_points,)
        grid_p = np.interp(grid_tau, taus, accs)  # (n_points,)
    best, best_index = None, -1
    for index, (tau, p) in enumerate(zip(grid_tau, grid_p)):
        esd = expected_switch_duration(float(tau), float(p), n_min, p0, c)
        if best is None or esd["esd_s"] < best["esd_s"]:
            best, best_index = esd, index
    result.update(mesd_s=float(best["esd_s"]), tau_opt_s=float(grid_tau[best_index]), p_opt=float(grid_p[best_index]),
                  n_states=best["n_states"], k_target=best["k_target"])
    if grid_tau.size > 1 and best_index in (0, grid_tau.size - 1):
        side = "shortest" if best_index == 0 else "longest"
        warnings.append(f"MESD optimum at the {side} evaluated window ({_fmt_s(grid_tau[best_index])} s): "
                        "the true minimum may lie outside the evaluated range")
    return result


# ----------------------------------------------------------------------------- loading
def _finite_float(text: str, where: str, column: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise EEGKitError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise EEGKitError(f"{where}: {column} {text!r} is not finite")
    return value


R_TOLERANCE = 1e-6  # a Pearson r computed in float32 may pass +-1 by rounding


def _check_row(row: dict, where: str) -> dict:
    if not row["subject"]:
        raise EEGKitError(f"{where}: empty subject")
    if row["window_s"] <= 0:
        raise EEGKitError(f"{where}: window_s {row['window']} must be > 0")
    for column in ("r_attended", "r_unattended"):
        if abs(row[column]) > 1 + R_TOLERANCE:
            raise EEGKitError(f"{where}: {column} {row[column]:g} is outside [-1, 1] (a correlation)")
    return row


def _load_csv(path: Path) -> list[dict]:
    from util import inputs

    data = inputs.read_regular(path, inputs.MAX_TEXT_BYTES, "CSV file")  # no FIFO, no device, capped
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise EEGKitError(f"{path}: not a UTF-8 text CSV file") from None
    if not text.strip():
        raise EEGKitError(f"{path}: empty file (expected a header {','.join(COLUMNS)} and one row per window)")
    reader = csv.reader(text.splitlines())
    try:
        header = [name.strip() for name in next(reader)]
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise EEGKitError(f"{path}: duplicated column {duplicated[0]!r} in the header")
        missing = [name for name in COLUMNS if name not in header]
        if missing:
            raise EEGKitError(f"{path}: missing column {missing[0]!r} (header: {','.join(header)}; "
                              f"needs {','.join(COLUMNS)})")
        index = {name: header.index(name) for name in COLUMNS}
        rows = []
        for fields in reader:
            where = f"{path}: line {reader.line_num}"
            if not fields or all(not f.strip() for f in fields):
                continue  # blank line
            if len(fields) != len(header):
                raise EEGKitError(f"{where}: {len(fields)} fields, the header has {len(header)}")
            window = fields[index["window_s"]].strip()
            rows.append(_check_row({
                "subject": fields[index["subject"]].strip(),
                "window": window,
                "window_s": _finite_float(window, where, "window_s"),
                "r_attended": _finite_float(fields[index["r_attended"]].strip(), where, "r_attended"),
                "r_unattended": _finite_float(fields[index["r_unattended"]].strip(), where, "r_unattended"),
            }, where))
    except csv.Error as error:
        raise EEGKitError(f"{path}: line {reader.line_num}: not valid CSV ({error})") from None
    if not rows:
        raise EEGKitError(f"{path}: no data rows after the header")
    return rows


def _load_npz(path: Path) -> list[dict]:
    from util.inputs import NpzReader

    try:  # no pickle; each member capped (declared size and npy header) by util.inputs
        archive = NpzReader(path)
    except EEGKitError as error:
        if "not a readable" not in str(error):  # a FIFO, a device, duplicate members: the reader's own line
            raise
        raise EEGKitError(f"{path}: not a valid .npz file ({str(error).split('(', 1)[-1].split(':')[0]})") from None
    with archive:
        missing = [name for name in COLUMNS if name not in archive.files]
        if missing:
            raise EEGKitError(f"{path}: missing array {missing[0]!r} (has: {', '.join(archive.files) or 'none'}; "
                              f"needs {', '.join(COLUMNS)})")
        arrays = {}
        for name in COLUMNS:
            try:
                arrays[name] = archive[name]
            except EEGKitError as error:
                if "object array" not in str(error):
                    raise
                raise EEGKitError(f"{path}: array {name!r} is an object array (not loadable without pickle); "
                                  "store subject as a unicode string array and numbers as floats") from None
    for name, array in arrays.items():
        if array.ndim != 1:
            raise EEGKitError(f"{path}: array {name!r} must be 1-D, got shape {array.shape}")
    lengths = {name: array.shape[0] for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise EEGKitError(f"{path}: arrays of unequal length ({', '.join(f'{k} {v}' for k, v in lengths.items())})")
    if lengths["subject"] == 0:
        raise EEGKitError(f"{path}: no rows (arrays are empty)")
    subjects = arrays["subject"]
    if subjects.dtype.kind == "S":
        try:
            subjects = np.char.decode(subjects, "utf-8")
        except UnicodeDecodeError:
            raise EEGKitError(f"{path}: array 'subject' is not UTF-8 text") from None
    elif subjects.dtype.kind != "U":
        raise EEGKitError(f"{path}: array 'subject' must be a unicode string array, got dtype {subjects.dtype}")
    for name in COLUMNS[1:]:
        if arrays[name].dtype.kind not in "iuf":
            raise EEGKitError(f"{path}: array {name!r} must be numeric, got dtype {arrays[name].dtype}")
        bad = np.flatnonzero(~np.isfinite(arrays[name].astype(np.float64)))
        if bad.size:
            raise EEGKitError(f"{path}: {name} at index {bad[0]} is not finite ({arrays[name][bad[0]]})")
    rows = []
    for i in range(lengths["subject"]):
        window_s = float(arrays["window_s"][i])
        rows.append(_check_row({
            "subject": str(subjects[i]).strip(), "window": format(window_s, "g"), "window_s": window_s,
            "r_attended": float(arrays["r_attended"][i]), "r_unattended": float(arrays["r_unattended"][i]),
        }, f"{path}: index {i}"))
    return rows


def _check_window_keys(rows: Iterable[dict], where: str) -> dict[str, float]:
    """{window key: window_s}; one spelling per length and one length per spelling."""
    by_key: dict[str, float] = {}
    by_value: dict[float, str] = {}
    for row in rows:
        key, value = row["window"], float(row["window_s"])
        if by_key.setdefault(key, value) != value:
            raise EEGKitError(f"{where}: window {key!r} stands for two lengths ({by_key[key]} and {value})")
        if by_value.setdefault(value, key) != key:
            raise EEGKitError(f"{where}: window length {value:g} s written both as {by_value[value]!r} and {key!r}")
    return by_key


def load_correlations(path) -> list[dict]:
    """Read a .csv or .npz of per-window scores into rows
    {"subject": str, "window": str, "window_s": float, "r_attended": float, "r_unattended": float}.

    CSV: header with (at least) subject,window_s,r_attended,r_unattended in any order; the window key is
    the text as written ("60", "2.5"). NPZ: those four keys as equal-length 1-D arrays (subject a unicode
    string array), loaded with allow_pickle=False; the window key is format(float(window_s), "g").
    """
    path = Path(path)
    if not path.exists():
        raise EEGKitError(f"{path}: correlations file not found")
    if path.is_dir():
        raise EEGKitError(f"{path}: is a folder, expected a .csv or .npz file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _load_csv(path)
    elif suffix == ".npz":
        rows = _load_npz(path)
    else:
        raise EEGKitError(f"{path}: expected a .csv or .npz file, got {path.suffix or 'no extension'}")
    _check_window_keys(rows, str(path))
    return rows


# ----------------------------------------------------------------------------- scoring
def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def score_correlations(rows, n_min=5, p0=0.8, c=0.65, alpha=0.05) -> dict:
    """Report dict from rows (as `load_correlations` returns); JSON-serialisable, inf/NaN as null.

    {"subjects": {subject: {"accuracy", "n_windows", "ci95", "significance_threshold", "significant"
    (each {window key: value}), "mesd_s" (null when undefined), "mesd" (the `mesd` dict, inf as null),
    "warnings"}}, "mean_accuracy": {window key: mean over the subjects that have it}, "median_mesd_s"
    (over subjects with a defined MESD, null if none), "n_subjects", "params", "warnings"}.
    """
    n_min = _check_mesd_params(n_min, p0, c)
    if not 0.0 < alpha < 1.0:
        raise EEGKitError(f"alpha must be in (0, 1), got {alpha}")
    # rows built in code may leave out the window key: it is then format(window_s, "g"), as for npz
    rows = [row if "window" in row else {**row, "window": format(float(row["window_s"]), "g")} for row in rows]
    if not rows:
        raise EEGKitError("score_correlations: no rows")
    window_s = _check_window_keys(rows, "correlations")
    grouped: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        grouped.setdefault(str(row["subject"]), {}).setdefault(row["window"], []).append(row)
    all_windows = sorted(window_s, key=lambda key: window_s[key])
    subjects: dict[str, dict] = {}
    report_warnings: list[str] = []
    for subject in sorted(grouped):
        windows = sorted(grouped[subject], key=lambda key: window_s[key])
        entry: dict[str, Any] = {"accuracy": {}, "n_windows": {}, "ci95": {}, "significance_threshold": {},
                                 "significant": {}}
        for key in windows:
            r_att = [row["r_attended"] for row in grouped[subject][key]]
            r_unatt = [row["r_unattended"] for row in grouped[subject][key]]
            n = len(r_att)
            accuracy = decision_accuracy(r_att, r_unatt)
            k = int(np.sum(np.asarray(r_att) > np.asarray(r_unatt)))  # windows decided right
            threshold = significance_threshold(n, alpha)
            entry["accuracy"][key] = accuracy
            entry["n_windows"][key] = n
            entry["ci95"][key] = list(binomial_ci(k, n, 0.95))
            entry["significance_threshold"][key] = threshold
            entry["significant"][key] = bool(accuracy > threshold)
        curve = mesd([window_s[key] for key in windows], [entry["accuracy"][key] for key in windows],
                     n_min=n_min, p0=p0, c=c)
        entry["mesd_s"] = _json_float(curve["mesd_s"])
        entry["mesd"] = {**curve, "mesd_s": _json_float(curve["mesd_s"]), "warnings": list(curve["warnings"])}
        entry["warnings"] = list(curve["warnings"])
        if curve["reason"]:
            entry["warnings"].append(f"MESD undefined: {curve['reason']}")
        report_warnings += [f"{subject}: {text}" for text in entry["warnings"]]
        subjects[subject] = entry
    mean_accuracy = {}
    for key in all_windows:
        values = [entry["accuracy"][key] for entry in subjects.values() if key in entry["accuracy"]]
        mean_accuracy[key] = float(np.mean(values))
        lacking = [s for s, entry in subjects.items() if key not in entry["accuracy"]]
        if lacking:
            report_warnings.append(f"window {key} s: mean over {len(values)} subjects, missing for {', '.join(lacking)}")
    defined = [entry["mesd_s"] for entry in subjects.values() if entry["mesd_s"] is not None]
    return {
        "subjects": subjects,
        "mean_accuracy": mean_accuracy,
        "median_mesd_s": float(statistics.median(defined)) if defined else None,
        "n_subjects": len(subjects),
        "params": {"n_min": n_min, "p0": float(p0), "c": float(c), "alpha": float(alpha), "ci": "Clopper-Pearson"},
        "warnings": report_warnings,
    }


# ----------------------------------------------------------------------------- output
def format_report(report: dict) -> str:
    """The printout: one line per subject and window, then the MESD per subject and the means."""
    alpha = report["params"]["alpha"]
    lines = [f"{'subject':<14}{'window s':>9}{'n':>6}{'accuracy':>10}{'95% CI (Clopper-Pearson)':>27}"
             f"{'threshold':>11}{'signif.':>9}"]
    for subject, entry in report["subjects"].items():
        for key, accuracy in entry["accuracy"].items():
            lo, hi = entry["ci95"][key]
            lines.append(f"{subject:<14}{key:>9}{entry['n_windows'][key]:>6}{accuracy:>10.3f}"
                         f"{f'[{lo:.3f}, {hi:.3f}]':>27}{entry['significance_threshold'][key]:>11.3f}"
                         f"{'yes' if entry['significant'][key] else 'no':>9}")
    lines.append("-" * 86)
    lines.append(f"{'subject':<14}{'MESD s':>10}{'at tau s':>10}{'accuracy':>10}{'N':>6}{'k_c':>5}")
    for subject, entry in report["subjects"].items():
        info = entry["mesd"]
        if entry["mesd_s"] is None:
            lines.append(f"{subject:<14}{'undefined':>10}  ({info['reason']})")
        else:
            lines.append(f"{subject:<14}{entry['mesd_s']:>10.2f}{info['tau_opt_s']:>10.2f}{info['p_opt']:>10.3f}"
                         f"{info['n_states']:>6}{info['k_target']:>5}")
    lines.append("-" * 86)
    lines.append("mean accuracy over subjects: "
                 + ", ".join(f"{key} s {value:.3f}" for key, value in report["mean_accuracy"].items()))
    median = report["median_mesd_s"]
    lines.append(f"median MESD over subjects with a defined MESD: {'undefined' if median is None else f'{median:.2f} s'}"
                 f" ({report['n_subjects']} subjects; significance at alpha {alpha:g}; MESD N_min "
                 f"{report['params']['n_min']}, P0 {report['params']['p0']:g}, c {report['params']['c']:g})")
    if report["warnings"]:
        lines.append("warnings:")
        lines += [f"  {text}" for text in report["warnings"]]
    return "\n".join(lines)


def _figure(report: dict):
    """Accuracy vs window length per subject (log x) with thresholds and chance; MESD bars per subject."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subjects = list(report["subjects"])
    fig, (ax_acc, ax_mesd) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, subject in enumerate(subjects):
        entry = report["subjects"][subject]
        keys = list(entry["accuracy"])
        taus = [float(key) if _is_number(key) else np.nan for key in keys]
        color = colors[index % len(colors)]
        mesd_text = "undefined" if entry["mesd_s"] is None else f"{entry['mesd_s']:.1f} s"
        ax_acc.plot(taus, [entry["accuracy"][k] for k in keys], "o-", color=color, label=f"{subject} (MESD {mesd_text})")
        ax_acc.plot(taus, [entry["significance_threshold"][k] for k in keys], ":", color=color, lw=1,
                    label=f"significance threshold (alpha {report['params']['alpha']:g})" if index == 0 else None)
    ax_acc.axhline(0.5, color="grey", ls="--", lw=1, label="chance (50 %)")
    ax_acc.set_xscale("log")
    ax_acc.set_xlabel("decision window (s)")
    ax_acc.set_ylabel("AAD accuracy")
    ax_acc.set_ylim(0.0, 1.02)
    ax_acc.set_title("accuracy per decision window")
    ax_acc.legend(fontsize=7, loc="lower right")
    values = [report["subjects"][s]["mesd_s"] for s in subjects]
    ax_mesd.bar(range(len(subjects)), [v if v is not None else 0.0 for v in values], color="tab:blue")
    for index, value in enumerate(values):
        if value is None:
            ax_mesd.text(index, 0.0, "undefined", rotation=90, ha="center", va="bottom", fontsize=7)
    if report["median_mesd_s"] is not None:
        ax_mesd.axhline(report["median_mesd_s"], color="k", ls="--", lw=1,
                        label=f"median {report['median_mesd_s']:.1f} s")
        ax_mesd.legend(fontsize=8)
    ax_mesd.set_xticks(range(len(subjects)), subjects, rotation=90, fontsize=7)
    ax_mesd.set_ylabel("MESD (s)")
    ax_mesd.set_title("minimal expected switch duration")
    fig.tight_layout()
    return fig


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def write_report(report: dict, out, plot=None) -> None:
    """Write the report as JSON (atomically) and, when `plot` is given, the figure (atomically)."""
    from util.atomic import atomic_savefig, atomic_write_json

    fig = _figure(report) if plot is not None else None  # built first: a plotting error writes nothing
    try:
        atomic_write_json(out, report, indent=2)
        if fig is not None:
            atomic_savefig(fig, plot, dpi=120)
    finally:
        if fig is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)


# ----------------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one-line EEGKitErrors (exit status 2 through run_cli)."""

    def error(self, message: str):
        raise EEGKitError(f"{self.prog}: {message}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m evaluation.aad",
        description="Score auditory attention decoding from per-window correlations: accuracy, Clopper-Pearson "
        "95 % CI and binomial significance threshold per subject and decision-window length, and the "
        "minimal expected switch duration (MESD) per subject (see ../shared/reference/aad.md).",
    )
    parser.add_argument("--correlations", required=True, type=Path,
                        help="CSV with columns subject,window_s,r_attended,r_unattended (one row per decision "
                        "window; extra columns ignored) or an .npz with those four 1-D arrays")
    parser.add_argument("--out", required=True, type=Path, help="write the report as JSON to this file")
    parser.add_argument("--plot", type=Path, default=None,
                        help="also write a figure (accuracy vs window length per subject, MESD per subject) to "
                        "this .png (or .pdf/.svg)")
    parser.add_argument("--n-min", type=int, default=5, help="MESD: minimal number of gain states N_min (default 5)")
    parser.add_argument("--p0", type=float, default=0.8,
                        help="MESD: probability P0 of staying in the comfort region (default 0.8)")
    parser.add_argument("--comfort", type=float, default=0.65,
                        help="MESD: comfort level c, the lower bound of the comfort region on the normalised gain "
                        "scale (default 0.65)")
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="significance level of the binomial chance threshold per window length (default 0.05)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --out / --plot files")
    args = parser.parse_args(argv)

    if args.n_min < 2:
        raise EEGKitError(f"--n-min: must be an integer >= 2, got {args.n_min}")
    for flag, value in (("--p0", args.p0), ("--comfort", args.comfort), ("--alpha", args.alpha)):
        if not 0.0 < value < 1.0:
            raise EEGKitError(f"{flag}: must be in (0, 1), got {value}")
    outputs = [("--out", args.out)] + ([("--plot", args.plot)] if args.plot is not None else [])
    if args.plot is not None and args.plot.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise EEGKitError(f"--plot {args.plot}: expected a .png, .pdf or .svg file name")
    if args.plot is not None and _same_file(args.plot, args.out):
        raise EEGKitError(f"--plot {args.plot}: same file as --out")
    for flag, path in outputs:
        if _same_file(path, args.correlations):
            raise EEGKitError(f"{flag} {path}: same file as --correlations (would overwrite the input)")
        if path.is_dir():
            raise EEGKitError(f"{flag} {path}: is a folder, expected a file name")
        if path.exists() and not args.overwrite:
            raise EEGKitError(f"{flag} {path}: already exists (pass --overwrite to replace it)")
    from util.outdir import check_out_files

    check_out_files(outputs, args.overwrite, [args.correlations])  # the one rule (inputs, checkpoints, FIFOs, ...)

    rows = load_correlations(args.correlations)
    report = score_correlations(rows, n_min=args.n_min, p0=args.p0, c=args.comfort, alpha=args.alpha)
    print(format_report(report))
    write_report(report, args.out, args.plot)
    print(f"report written to {args.out}")
    if args.plot is not None:
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    run_cli(main)
