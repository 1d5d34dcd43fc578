"""The kit's controls: what a score would be without the EEG (pure numpy, layer 1; imports only util).

Every scorer reports its score beside these controls, under the same JSON keys
(``control_report``)::

    {"controls": {"noise_eeg": {"score": s}, "circular_shift": {"mean": m, "p95": q, "p_value": p},
                  "mismatched_eeg": {"score": s}},
     "score_above_noise": score - noise score, "warnings": [...]}

- ``noise_eeg(eeg, rng)``: Gaussian EEG with the recording's per-channel mean and std, same shape
  ``(time, channels)``. The model's score on it is the EEG-independent part of its score (edge
  behaviour, padding, a learned fixed pattern on a target that repeats).
- ``circular_shift_null(prediction, target, fs, ...)``: the prediction scored against the target
  shifted circularly by random offsets of at least ``min_shift_s`` (default 2 s), ``n_shifts``
  times (default 100). With ``segment`` the shifted target is cut into consecutive segments and
  scored with the Task 2 rule (band-averaged Pearson per segment, mean over segments), so the
  null is on the same scale as the score. All shifts are scored at once by
  ``util.metrics.pearson_circular_np`` (FFT cross-correlation per segment; no per-shift Pearson). Returns
  the null's mean, 95th percentile and the permutation p-value ``(count(null >= observed) + 1) / (n + 1)``.
- ``adequate_shifts(n_subjects)``: how many shifts the scorers draw when the user does not say: enough for
  Holm over the subjects to reach ``alpha`` with room to spare, ``ceil(20 x subjects / alpha)`` within
  [100, 20000] (18 subjects: 7200; the smallest reachable p is then 1/7201, 1/20 of Holm's first threshold).
- ``mismatched_pairs(keys)``: for each recording ``(subject, stimulus)``, another recording of the
  same subject, one with another stimulus where one exists (its EEG, paired with this recording's
  target, is the mismatched-EEG control); ``None`` when the subject has a single recording.
- ``holm(p_values, alpha)``: the Holm-Bonferroni step-down correction across subjects.
- ``control_report(score, noise_score, shift_null, mismatched_score)``: the block above, with the
  warning ``the score contains an EEG-independent part`` when the noise control exceeds the
  null's 95th percentile.

A control that was not computed (``--no-costly-controls``) is reported as ``None`` in its slot.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from util.metrics import pearson_circular_np, pearson_np

EEG_INDEPENDENT_WARNING = "the score contains an EEG-independent part"
CORRECTION = "holm"  # the multiple-comparison correction across subjects (Holm-Bonferroni step-down)
ALPHA = 0.05
SHIFTS_PER_TEST = 20  # the scorer's shifts: SHIFTS_PER_TEST x subjects / alpha (`adequate_shifts`) ...
MIN_SHIFTS, MAX_SHIFTS = 100, 20_000  # ... at least 100, at most 20,000


def noise_eeg(eeg: np.ndarray, rng: np.random.Generator, n_frames: int | None = None) -> np.ndarray:
    """Gaussian EEG (time, channels) with the per-channel mean and std of ``eeg`` (time, channels).

    ``n_frames``: the length of the noise (default: that of ``eeg``), e.g. one segment with the
    statistics of the whole recording.
    """
    eeg = np.asarray(eeg)
    if eeg.ndim != 2:
        raise ValueError(f"noise_eeg: expected (time, channels), got shape {eeg.shape}")
    mean = eeg.mean(axis=0, dtype=np.float64)  # (channels,)
    std = eeg.std(axis=0, dtype=np.float64)  # (channels,)
    shape = eeg.shape if n_frames is None else (int(n_frames), eeg.shape[1])
    noise = rng.standard_normal(shape) * std + mean  # (time, channels)
    return noise.astype(eeg.dtype if np.issubdtype(eeg.dtype, np.floating) else np.float32)


def draw_shifts(n_frames: int, fs: float, n_shifts: int, min_shift_s: float,
                rng: np.random.Generator) -> np.ndarray:
    """``n_shifts`` circular offsets (frames), uniform in [min_shift, n_frames - min_shift]."""
    min_shift = int(round(min_shift_s * fs))
    if min_shift < 1:
        raise ValueError(f"circular shift: min_shift_s {min_shift_s} is below one frame at {fs} Hz")
    if n_frames - 2 * min_shift < 0:
        raise ValueError(f"circular shift: {n_frames} frames ({n_frames / fs:.1f} s) are too short for shifts "
                         f"of at least {min_shift_s:g} s both ways (need {2 * min_shift} frames)")
    if n_shifts < 1:
        raise ValueError(f"circular shift: n_shifts must be >= 1, got {n_shifts}")
    return rng.integers(min_shift, n_frames - min_shift + 1, size=n_shifts)  # (n_shifts,)


def segment_score(prediction: np.ndarray, target: np.ndarray, segment: int | None = None) -> np.ndarray:
    """Task 2 rule on (..., time, bands): band-averaged Pearson per segment, mean over segments -> (...).

    Without ``segment`` the whole series is one segment. A tail shorter than a segment is left out.
    """
    prediction = np.broadcast_to(np.asarray(prediction, dtype=np.float64), np.shape(target))
    if segment is None:
        return pearson_np(prediction, target).mean(axis=-1)
    n_segments = target.shape[-2] // segment
    if n_segments < 1:
        raise ValueError(f"segment of {segment} frames is longer than the series ({target.shape[-2]} frames)")
    used = n_segments * segment
    shape = target.shape[:-2] + (n_segments, segment, target.shape[-1])
    r = pearson_np(prediction[..., :used, :].reshape(shape), target[..., :used, :].reshape(shape))
    return r.mean(axis=-1).mean(axis=-1)  # (..., n_segments, bands) -> (...)


def circular_shift_null(prediction, target, fs: float, n_shifts: int = 100, min_shift_s: float = 2.0,
                        rng: np.random.Generator | None = None, segment: int | None = None,
                        observed: float | None = None) -> dict:
    """Null of ``prediction`` (time, bands) against ``target`` (time, bands) circularly shifted.

    ``segment`` (frames): score each shift with the Task 2 segment rule (see ``segment_score``).
    ``observed``: the score to test (default: the unshifted score of the same arrays).
    Returns ``{"mean", "p95", "p_value", "n_shifts", "min_shift_s", "observed", "values"}``
    (``values``: the (n_shifts,) null scores; not for JSON).
    """
    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if prediction.ndim == 1:
        prediction = prediction[:, None]
    if target.ndim == 1:
        target = target[:, None]
    if prediction.shape != target.shape:
        raise ValueError(f"circular shift: prediction {prediction.shape} vs target {target.shape}")
    rng = np.random.default_rng(0) if rng is None else rng
    n_frames = target.shape[0]
    shifts = draw_shifts(n_frames, fs, n_shifts, min_shift_s, rng)  # (n_shifts,)
    if observed is None:
        observed = float(segment_score(prediction, target, segment))
    if segment is not None and n_frames // segment < 1:
        raise ValueError(f"segment of {segment} frames is longer than the series ({n_frames} frames)")
    r = pearson_circular_np(prediction, target, shifts, segment)  # (n_shifts, n_segments, bands)
    null = r.mean(axis=-1).mean(axis=-1)  # the segment rule of `segment_score`, per shift
    return summarize_null(null, observed, min_shift_s)


def summarize_null(null: np.ndarray, observed: float, min_shift_s: float) -> dict:
    """Mean, 95th percentile and permutation p-value (count(null >= observed) + 1) / (n + 1)."""
    null = np.asarray(null, dtype=np.float64)
    count = int(np.sum(null >= observed - 1e-12))
    return {"mean": float(null.mean()), "p95": float(np.percentile(null, 95)),
            "p_value": (count + 1) / (len(null) + 1), "n_shifts": int(len(null)),
            "min_shift_s": float(min_shift_s), "observed": float(observed), "values": null}


def combine_nulls(nulls: Sequence[Mapping], observed: float) -> dict:
    """Null of a mean over subjects: draw k is the mean of the subjects' draws k (independent shifts)."""
    values = np.mean([null["values"] for null in nulls], axis=0)  # (n_shifts,)
    return summarize_null(values, observed, nulls[0]["min_shift_s"])


def mismatched_pairs(keys: Sequence[tuple]) -> list:
    """For each ``(subject, stimulus)`` key, the index of another recording of the same subject.

    A recording with another stimulus is preferred (the next one in order, cyclically); a second
    recording of the same stimulus is the fallback; ``None`` when the subject has no other recording.
    """
    keys = [tuple(key) for key in keys]
    by_subject: dict = {}
    for i, (subject, _stimulus) in enumerate(keys):
        by_subject.setdefault(subject, []).append(i)
    pairs: list = []
    for i, (subject, stimulus) in enumerate(keys):
        others = by_subject[subject]
        order = others[others.index(i) + 1 :] + others[: others.index(i)]  # cyclic, after i
        other_stimulus = [j for j in order if keys[j][1] != stimulus]
        pairs.append(other_stimulus[0] if other_stimulus else (order[0] if order else None))
    return pairs


def holm(p_values: Mapping[str, float], alpha: float = ALPHA) -> dict:
    """Holm-Bonferroni across subjects: ``{"correction", "alpha", "p_adjusted", "significant"}``.

    Sorted p_(1) <= ... <= p_(m); adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); a subject
    is significant when its adjusted p < alpha. Subjects whose p is ``None`` are left out.
    """
    items = sorted(((p, s) for s, p in p_values.items() if p is not None), key=lambda item: item[0])
    m = len(items)
    adjusted: dict = {}
    running = 0.0
    for rank, (p, subject) in enumerate(items):
        running = max(running, min(1.0, (m - rank) * float(p)))
        adjusted[subject] = running
    significant = sorted(s for s, p in adjusted.items() if p < alpha)
    return {"correction": CORRECTION, "alpha": alpha, "p_adjusted": dict(sorted(adjusted.items())),
            "significant": significant, "n_subjects": m}


def min_reachable_p(n_shifts: int) -> float:
    return 1.0 / (n_shifts + 1)


def control_report(score: float, noise_score: float | None, shift_null: Mapping | None,
                   mismatched_score: float | None) -> dict:
    """The controls block of a report (keys identical in every scorer); see the module docstring."""
    warnings: list = []
    shift = None
    if shift_null is not None:
        shift = {"mean": float(shift_null["mean"]), "p95": float(shift_null["p95"]),
                 "p_value": float(shift_null["p_value"])}
    if noise_score is not None and shift is not None and noise_score > shift["p95"]:
        warnings.append(f"{EEG_INDEPENDENT_WARNING}: the noise-EEG control ({noise_score:.3f}) exceeds the "
                        f"circular-shift null's 95th percentile ({shift['p95']:.3f})")
    return {"controls": {"noise_eeg": {"score": None if noise_score is None else float(noise_score)},
                         "circular_shift": shift,
                         "mismatched_eeg": {"score": None if mismatched_score is None else float(mismatched_score)}},
            "score_above_noise": None if noise_score is None else float(score) - float(noise_score),
            "warnings": warnings}


def adequate_shifts(n_subjects: int, alpha: float = ALPHA) -> int:
    """Shifts per subject the scorer draws by default: ``ceil(SHIFTS_PER_TEST x n_subjects / alpha)`` in
    [MIN_SHIFTS, MAX_SHIFTS]. Holm's first threshold is alpha / n_subjects and the smallest permutation p is
    1 / (n + 1), so this leaves a factor SHIFTS_PER_TEST between the two (below 1000 subjects)."""
    wanted = int(np.ceil(SHIFTS_PER_TEST * max(1, int(n_subjects)) / alpha))
    return int(min(MAX_SHIFTS, max(MIN_SHIFTS, wanted)))


def shifts_rule(n_shifts: int, n_subjects: int, chosen: bool, alpha: float = ALPHA) -> str:
    """The sentence a report states about its shift count: chosen by the scorer (and how) or by --n-shifts."""
    if chosen:
        return (f"{n_shifts} circular shifts per subject, chosen by the scorer: ceil({SHIFTS_PER_TEST} x "
                f"{n_subjects} subjects / alpha {alpha:g}) within [{MIN_SHIFTS}, {MAX_SHIFTS}] (--n-shifts overrides)")
    return f"{n_shifts} circular shifts per subject, set by --n-shifts"


def significance_block(p_values: Mapping[str, float], n_shifts: int, alpha: float = ALPHA) -> dict:
    """Holm across subjects plus a warning when ``n_shifts`` cannot reach ``alpha`` after correction."""
    block = holm(p_values, alpha)
    m = block["n_subjects"]
    block["warnings"] = []
    if m and m * min_reachable_p(n_shifts) >= alpha:
        block["warnings"].append(
            f"with {n_shifts} shifts the smallest p-value is {min_reachable_p(n_shifts):.4f}; Holm over {m} "
            f"subjects cannot reach p < {alpha:g} (use at least {int(np.ceil(m / alpha))} shifts)")
    return block


def format_controls(block: Mapping, indent: str = "") -> str:
    """Lines for a printout: the three controls, the score above noise and the warnings."""
    controls = block.get("controls", {})

    def value(x, fmt="{:.3f}"):
        return "n/a" if x is None else fmt.format(x)

    noise = (controls.get("noise_eeg") or {}).get("score")
    mismatched = (controls.get("mismatched_eeg") or {}).get("score")
    shift = controls.get("circular_shift")
    shift_text = ("n/a" if not shift else
                  f"mean {shift['mean']:.3f} p95 {shift['p95']:.3f} p {shift['p_value']:.3f}")
    lines = [f"{indent}controls: noise EEG {value(noise)} | circular shift {shift_text} | "
             f"mismatched EEG {value(mismatched)} | above noise {value(block.get('score_above_noise'))}"]
    lines += [f"{indent}WARNING: {w}" for w in block.get("warnings", [])]
    return "\n".join(lines)


def draw_controls(ax, report: Mapping, score_label: str = "score") -> None:
    """Per-subject bars of the score, the noise-EEG and mismatched-EEG controls, and the null's p95.

    ``report`` holds ``per_subject`` ({subject: score}) and ``per_subject_controls`` (blocks of
    ``control_report``); the overall warnings go into the title.
    """
    subjects = list(report["per_subject"])
    blocks = report["per_subject_controls"]
    x = np.arange(len(subjects))
    width = 0.27

    def values(name):
        return [np.nan if (blocks[s]["controls"].get(name) or {}).get("score") is None
                else blocks[s]["controls"][name]["score"] for s in subjects]

    ax.bar(x - width, [report["per_subject"][s] for s in subjects], width, color="tab:blue", label=score_label)
    ax.bar(x, values("noise_eeg"), width, color="tab:red", label="noise EEG")
    ax.bar(x + width, values("mismatched_eeg"), width, color="tab:gray", label="mismatched EEG")
    p95 = [np.nan if not blocks[s]["controls"].get("circular_shift") else blocks[s]["controls"]["circular_shift"]["p95"]
           for s in subjects]
    ax.scatter(x, p95, marker="_", s=300, color="k", zorder=3, label="circular-shift null p95")
    all_warnings = list(report.get("warnings", [])) + [w for s in subjects for w in blocks[s]["warnings"]]
    title = "per subject, with controls"
    if any(w.startswith(EEG_INDEPENDENT_WARNING) for w in all_warnings):
        title += "\nWARNING: " + EEG_INDEPENDENT_WARNING
    ax.set_title(title, fontsize=9, color="tab:red" if "WARNING" in title else "k")
