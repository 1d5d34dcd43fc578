"""Scorer for Task 1 of the ICASSP 2024 Auditory EEG Challenge (match-mismatch): accuracy against chance.

Facts: `../shared/reference/task1_match_mismatch.md` (sections 1 and 4). Each test segment pairs
5 s of EEG with K = 5 stimulus segments; a prediction is the index 0..K-1 of the one the listener
heard. Scoring rule:
  * per subject: accuracy = fraction of its segments whose predicted index equals the label;
    a segment id missing from the predictions counts as wrong; predictions for unknown ids are
    ignored (counted in ``n_extra``);
  * final score: the mean of the per-subject accuracies (every subject weighs the same).

Beside every accuracy the report puts chance, 1 / K, and two binomial figures for the number of
segments n (`chance_summary`, built on `evaluation.aad.binomial_ci` and
`evaluation.aad.significance_threshold`):
  * ``ci95``: the Clopper-Pearson 95 % interval of the observed accuracy;
  * ``chance_range95``: the central 95 % of Bin(n, 1/K) / n, where a guesser's accuracy falls;
  * ``significance_threshold``: the (1 - alpha) quantile of Bin(n, 1/K) / n; an accuracy strictly
    above it is significant (one-sided, alpha = 0.05 by default).
The overall block pools all segments (k right out of n) for these figures.

Controls (`control_warnings`): a score made without the EEG (noise EEG, EEG of another segment,
or a model that never sees the EEG) should sit at chance; one that is significantly above chance
means the model recognises the matched stimulus from the stimuli alone (for example which
stimulus windows are ever matched), and the report says so.

Importable: `index_value` (the one check of a predicted or true index), `accuracy_per_subject`,
`chance_summary`, `beats_chance`, `control_warnings`, `score`, `load_labels`, `load_predictions`,
`format_report`, `check_zip_name`.

Files: labels are a folder of ``sub-XXX.json`` files ``{segment_id: index}`` (the synthetic test
set writes them to ``test_set/labels_task1/``); predictions are a folder of per-subject JSON files
or a submission zip named ``task_1_group_<name>_submission_<n>.zip`` (n = 1 or 2), each JSON
``{segment_id: index}``.

CLI:
  python -m evaluation.task1 --predictions ZIP|DIR --labels DIR [--candidates 5] [--alpha 0.05] \
      [--noise-predictions ZIP|DIR] [--mismatched-predictions ZIP|DIR] [--out report.json] [--overwrite]
"""
from __future__ import annotations
if not __package__:  # run by path (python evaluation/task1.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from evaluation.aad import binomial_ci, significance_threshold
from util.errors import EEGKitError, run_cli

N_CANDIDATES = 5  # the 2024 test set: the matched segment and 4 imposters
ALPHA = 0.05
ZIP_PATTERN = re.compile(r"task_1_group_[A-Za-z0-9_-]+_submission_[12]\.zip")
ZIP_FORM = "task_1_group_<name>_submission_<n>.zip (n = 1 or 2)"


# ----------------------------------------------------------------------------- values
def index_value(value: Any, where: str, n_candidates: int = N_CANDIDATES) -> int:
    """A JSON value as a candidate index 0..n_candidates-1; one EEGKitError line naming ``where`` otherwise.

    Only JSON integers pass: booleans (``true`` is not 1), floats (also ``2.0``), strings and null
    are refused, and so is an index outside 0..K-1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        kind = {bool: "a boolean", float: "a float", str: "a string", type(None): "null", list: "a list",
                dict: "an object"}.get(type(value), type(value).__name__)
        found = f"found {kind}" if isinstance(value, (list, dict)) else f"{value!r} is {kind}"
        raise EEGKitError(f"{where}: {found}, expected an integer index 0..{n_candidates - 1}")
    if not 0 <= int(value) < n_candidates:
        raise EEGKitError(f"{where}: index {int(value)} is out of range, expected 0..{n_candidates - 1} "
                          f"({n_candidates} candidates)")
    return int(value)


# ----------------------------------------------------------------------------- statistics
def chance_summary(n_correct: int, n_segments: int, n_candidates: int = N_CANDIDATES, alpha: float = ALPHA,
                   level: float = 0.95) -> dict:
    """Accuracy k / n beside chance 1 / K for n segments.

    Returns {"accuracy", "n_correct", "n_segments", "ci95" (Clopper-Pearson of the accuracy),
    "chance", "chance_range95" (central ``level`` of Bin(n, 1/K) / n), "significance_threshold"
    ((1 - alpha) quantile of Bin(n, 1/K) / n), "significant" (accuracy strictly above it), "alpha"}.
    """
    k, n, n_candidates = int(n_correct), int(n_segments), int(n_candidates)
    if n_candidates < 2:
        raise EEGKitError(f"chance_summary: need at least 2 candidates, got {n_candidates}")
    if n < 1 or not 0 <= k <= n:
        raise EEGKitError(f"chance_summary: need 0 <= n_correct <= n_segments and n_segments >= 1, got {k} of {n}")
    from scipy import stats

    chance = 1.0 / n_candidates
    tail = (1.0 - level) / 2
    chance_range = [float(stats.binom.ppf(tail, n, chance)) / n, float(stats.binom.ppf(1.0 - tail, n, chance)) / n]
    threshold = significance_threshold(n, alpha, chance=chance)
    return {"accuracy": k / n, "n_correct": k, "n_segments": n, "ci95": list(binomial_ci(k, n, level)),
            "chance": chance, "chance_range95": chance_range, "significance_threshold": threshold,
            "significant": bool(k / n > threshold), "alpha": float(alpha)}


def beats_chance(n_correct: int, n_segments: int, n_candidates: int = N_CANDIDATES, alpha: float = ALPHA) -> bool:
    """True when k right out of n is significantly above chance 1 / K (strictly above the threshold)."""
    return chance_summary(n_correct, n_segments, n_candidates, alpha)["significant"]


def control_warnings(controls: Mapping[str, Any], n_candidates: int = N_CANDIDATES, alpha: float = ALPHA) -> list[str]:
    """One warning per no-EEG control that scores significantly above chance.

    ``controls``: ``{name: (n_correct, n_segments)}`` or ``{name: chance_summary block}`` (None: not
    run), e.g. ``{"noise EEG": (17, 50), "mismatched EEG": (9, 50), "no EEG": ...}``. Such a control
    should be at chance: above it, the model picks the matched stimulus without the EEG.
    """
    warnings = []
    for name, value in controls.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            k, n = value["n_correct"], value["n_segments"]
        else:
            k, n = value
        block = chance_summary(k, n, n_candidates, alpha)
        if block["significant"]:
            warnings.append(
                f"{name} control: accuracy {100 * block['accuracy']:.1f} % ({k}/{n}) is above chance "
                f"{100 * block['chance']:.1f} % (threshold {100 * block['significance_threshold']:.1f} %, "
                f"alpha {alpha:g}): the model picks the matched stimulus without the EEG (for example it "
                f"recognises which stimulus windows are ever matched); its accuracy is not evidence of EEG decoding")
    return warnings


# ----------------------------------------------------------------------------- scoring
def accuracy_per_subject(predictions: Mapping[str, int], labels_by_subject: Mapping[str, Mapping[str, int]]) -> dict:
    """{subject: {"accuracy", "n_correct", "n_segments", "n_missing", "missing_ids"}}; a missing id counts as wrong.

    ``predictions``: {segment_id: index}; ``labels_by_subject``: {subject: {segment_id: index}}.
    """
    if not labels_by_subject:
        raise EEGKitError("labels: no subjects to score")
    out = {}
    for subject in sorted(labels_by_subject):
        labels = labels_by_subject[subject]
        if not labels:
            raise EEGKitError(f"labels {subject}: no segments")
        missing = sorted(segment_id for segment_id in labels if segment_id not in predictions)
        right = sum(1 for segment_id, label in labels.items()
                    if segment_id in predictions and int(predictions[segment_id]) == int(label))
        out[subject] = {"accuracy": right / len(labels), "n_correct": right, "n_segments": len(labels),
                        "n_missing": len(missing), "missing_ids": missing}
    return out


def score(predictions: Mapping[str, int], labels_by_subject: Mapping[str, Mapping[str, int]],
          n_candidates: int = N_CANDIDATES, alpha: float = ALPHA,
          controls: Mapping[str, Mapping[str, int] | None] | None = None) -> dict:
    """Score {segment_id: index} against {subject: {segment_id: index}}.

    Returns {"score" (mean over subjects), "std_over_subjects", "per_subject" ({subject: accuracy}),
    "per_subject_detail" ({subject: chance_summary + n_missing}), "overall" (pooled chance_summary),
    "n_subjects", "n_segments", "n_missing", "n_extra", "missing_ids", "n_candidates", "controls"
    ({name: the control's own score block}), "warnings"}. ``controls``: {name: predictions made
    without the real EEG} (e.g. "noise EEG", "mismatched EEG"), scored with the same labels.
    """
    per_subject = accuracy_per_subject(predictions, labels_by_subject)
    detail = {}
    for subject, entry in per_subject.items():
        detail[subject] = chance_summary(entry["n_correct"], entry["n_segments"], n_candidates, alpha)
        detail[subject]["n_missing"] = entry["n_missing"]
    accuracies = np.array([entry["accuracy"] for entry in per_subject.values()])
    k = sum(entry["n_correct"] for entry in per_subject.values())
    n = sum(entry["n_segments"] for entry in per_subject.values())
    known = {segment_id for labels in labels_by_subject.values() for segment_id in labels}
    report = {
        "score": float(accuracies.mean()),
        "std_over_subjects": float(accuracies.std()),
        "per_subject": {subject: entry["accuracy"] for subject, entry in per_subject.items()},
        "per_subject_detail": detail,
        "overall": chance_summary(k, n, n_candidates, alpha),
        "n_subjects": len(per_subject),
        "n_segments": n,
        "n_missing": sum(entry["n_missing"] for entry in per_subject.values()),
        "n_extra": len(set(predictions) - known),
        "missing_ids": sorted(i for entry in per_subject.values() for i in entry["missing_ids"]),
        "n_candidates": int(n_candidates),
        "controls": {},
        "warnings": [],
    }
    for name, control in (controls or {}).items():
        if control is None:
            continue
        control_report = score(control, labels_by_subject, n_candidates, alpha)
        report["controls"][name] = {"score": control_report["score"], "per_subject": control_report["per_subject"],
                                    "overall": control_report["overall"]}
    report["warnings"] = control_warnings({name: block["overall"] for name, block in report["controls"].items()},
                                          n_candidates, alpha)
    if report["n_missing"]:
        report["warnings"].append(f"{report['n_missing']} segment(s) have no prediction and count as wrong")
    return report


# ----------------------------------------------------------------------------- files
def check_zip_name(path: str | Path) -> None:
    """Refuse a zip not named ``task_1_group_<name>_submission_<n>.zip`` (n = 1 or 2)."""
    path = Path(path)
    if not ZIP_PATTERN.fullmatch(path.name):
        raise EEGKitError(f"{path}: not a Task 1 submission name; expected {ZIP_FORM}")


def load_predictions(path: str | Path, n_candidates: int = N_CANDIDATES) -> dict[str, int]:
    """{segment_id: index} merged from a folder of JSON files or a Task 1 submission zip (name checked).

    Every value goes through `index_value`; an id in two files is refused. The zip is read by
    `evaluation.task2.load_predictions` (the kit's one reader of submission zips, with its caps).
    """
    from evaluation.task2 import load_predictions as load_json_objects

    path = Path(path)
    if path.is_file():
        check_zip_name(path)
    return load_json_objects(path, convert=lambda value, where: index_value(value, where, n_candidates))


def load_labels(folder: str | Path, n_candidates: int = N_CANDIDATES) -> dict[str, dict[str, int]]:
    """Read ``sub-XXX.json`` label files ``{segment_id: index}`` into {subject: {segment_id: index}}."""
    from evaluation.task2 import label_files, subject_of
    from util.inputs import read_json

    labels: dict[str, dict[str, int]] = {}
    for file in label_files(folder):
        obj = read_json(file)
        if not isinstance(obj, dict) or not obj:
            raise EEGKitError(f"{file}: expected a non-empty JSON object {{segment_id: index}}")
        subject_labels = labels.setdefault(subject_of(file), {})
        for segment_id, value in obj.items():
            subject_labels[segment_id] = index_value(value, f"{file}: segment {segment_id}", n_candidates)
    return labels


# ----------------------------------------------------------------------------- output
def _percent(block: dict) -> str:
    lo, hi = block["ci95"]
    return f"{100 * block['accuracy']:6.1f} %  [{100 * lo:5.1f}, {100 * hi:5.1f}]"


def format_report(report: dict) -> str:
    """Readable table: accuracy per subject with its interval and threshold, then the overall lines."""
    lines = [f"{'subject':<12}{'segments':>9}{'missing':>8}  {'accuracy  [95 % CI]':<28}{'threshold':>10}  significant"]
    for subject, block in report["per_subject_detail"].items():
        lines.append(f"{subject:<12}{block['n_segments']:>9}{block['n_missing']:>8}  {_percent(block):<28}"
                     f"{100 * block['significance_threshold']:>8.1f} %  {'yes' if block['significant'] else 'no'}")
    overall = report["overall"]
    lo, hi = overall["chance_range95"]
    lines.append("-" * 80)
    lines.append(f"score (mean over {report['n_subjects']} subjects): {100 * report['score']:.1f} % "
                 f"+- {100 * report['std_over_subjects']:.1f} (std); {report['n_segments']} segments, "
                 f"{report['n_missing']} missing, {report['n_extra']} extra ignored")
    lines.append(f"pooled: {overall['n_correct']}/{overall['n_segments']} = {_percent(overall).strip()}; chance "
                 f"{100 * overall['chance']:.1f} % (1/{report['n_candidates']}; 95 % of guessers: "
                 f"{100 * lo:.1f}-{100 * hi:.1f} %); significant above {100 * overall['significance_threshold']:.1f} % "
                 f"(alpha {overall['alpha']:g}): {'yes' if overall['significant'] else 'no'}")
    for name, block in report["controls"].items():
        lines.append(f"control {name}: {100 * block['score']:.1f} % (pooled {block['overall']['n_correct']}/"
                     f"{block['overall']['n_segments']})")
    lines += [f"WARNING: {warning}" for warning in report["warnings"]]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.task1",
        description="Score Task 1 (match-mismatch) predictions the way the challenge does: accuracy per "
                    "subject, then the mean over subjects; beside chance, its binomial interval and the "
                    "significance threshold for the number of segments.")
    parser.add_argument("--predictions", required=True, type=Path,
                        help=f"folder of per-subject JSON files {{segment_id: index}} or a submission zip named "
                             f"{ZIP_FORM}")
    parser.add_argument("--labels", required=True, type=Path,
                        help="folder of sub-XXX.json label files {segment_id: index} (the synthetic test set's "
                             "test_set/labels_task1)")
    parser.add_argument("--candidates", type=int, default=N_CANDIDATES,
                        help=f"stimulus segments per EEG segment, K (chance is 1/K; default {N_CANDIDATES}, the "
                             "2024 test set)")
    parser.add_argument("--alpha", type=float, default=ALPHA,
                        help=f"one-sided significance level of the threshold above chance (default {ALPHA})")
    parser.add_argument("--noise-predictions", type=Path, default=None,
                        help="the same model's predictions on noise EEG (python -m task1_match_mismatch.predict "
                             "--control noise): scored as a control; a warning when it beats chance")
    parser.add_argument("--mismatched-predictions", type=Path, default=None,
                        help="its predictions with each segment's EEG swapped for another segment's "
                             "(predict --control mismatched): scored as a control; a warning when it beats chance")
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from util.inputs import finite_number
    from util.outdir import check_out_files

    finite_number(args.candidates, "--candidates", minimum=2, integer=True)
    alpha = finite_number(args.alpha, "--alpha", minimum=0.0, strict_minimum=True)
    if alpha >= 1.0:
        raise EEGKitError(f"--alpha {args.alpha}: must be below 1")
    check_out_files([("--out", args.out)], args.overwrite,
                    [p for p in (args.predictions, args.labels, args.noise_predictions, args.mismatched_predictions)
                     if p is not None])
    labels = load_labels(args.labels, args.candidates)
    predictions = load_predictions(args.predictions, args.candidates)
    controls = {"noise EEG": args.noise_predictions, "mismatched EEG": args.mismatched_predictions}
    controls = {name: load_predictions(path, args.candidates) for name, path in controls.items() if path is not None}
    report = score(predictions, labels, args.candidates, alpha, controls)
    print(format_report(report))
    if args.out is not None:
        from util.atomic import atomic_write_json

        atomic_write_json(args.out, report, indent=2)
        print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
