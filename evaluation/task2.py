"""Official-style scorer for Task 2 of the ICASSP 2024 Auditory EEG Challenge (mel reconstruction).

Scoring rule (docs reference, section 3):
  * per segment: Pearson r over time between prediction and true mel, per band
    (scipy.stats.pearsonr semantics), averaged over the bands. A band where either
    series is constant (e.g. an all-zero prediction) scores r = 0 instead of NaN;
  * a prediction shorter than its label is zero-padded at the end, a longer one is
    truncated to the label length;
  * a segment id missing from the predictions scores 0 (in every band);
  * mean over a subject's segments; mean over subjects = final score.
The report also gives the standard deviation over subjects (population std, ddof=0),
the per-subject means, the per-band means over all segments (missing ones count as 0),
n_segments and n_missing.

Labels: a folder of `sub-XXX.json` files `{segment_id: 1920 x 10}`; the subject is the file
name up to the first underscore (or the stem). The 2023 envelope format
`{segment_id: [envelope (3840 x 1), stimulus_name]}` is accepted too.
Predictions: a folder of JSON files or a submission zip; all JSON objects are merged.

Controls (`score_with_controls`, `evaluation.controls`): the circular-shift null of each subject
(always; `--n-shifts`), and, given the same model's predictions on noise EEG and on mismatched EEG
(`task2_regression.predict --control noise|mismatched`), those two controls; the report adds
`controls`, `score_above_noise`, `warnings`, `per_subject_controls` and `significance` (Holm).

CLI:
  python -m evaluation.task2 --predictions PRED_DIR_or_ZIP --labels LABELS_DIR \
      [--noise-predictions DIR] [--mismatched-predictions DIR] [--n-shifts N] \
      [--out report.json] [--plot report.png]
"""
from __future__ import annotations
if not __package__:  # run by path (python evaluation/task2.py ...): import the kit from the repository root
    import pathlib, sys; sys.path[0] = str(pathlib.Path(__file__).resolve().parents[1])  # noqa: E401,E702

import argparse
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from util.errors import EEGKitError, run_cli
from util.metrics import pearson_np
from util.config import int_arg


# ----------------------------------------------------------------------------- maths
def pearson_per_band(pred: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Pearson r over time per band; pred/label (time, bands) -> (bands,). Constant series -> 0."""
    return np.clip(pearson_np(pred, label), -1.0, 1.0)


def fit_length(pred: np.ndarray, n_frames: int) -> np.ndarray:
    """Zero-pad at the end or truncate a (time, bands) prediction to n_frames."""
    if pred.shape[0] >= n_frames:
        return pred[:n_frames]
    pad = np.zeros((n_frames - pred.shape[0], pred.shape[1]), dtype=pred.dtype)
    return np.concatenate([pred, pad], axis=0)


def to_array(value: Any, where: str, bands: int | None = None) -> np.ndarray:
    """A JSON value (nested lists) or an array as a finite float64 (time, bands) array; EEGKitError naming `where`.

    JSON booleans, strings (also numeric ones such as "1.5") and null are refused, not converted.
    """
    from util.inputs import check_array, json_numbers

    if isinstance(value, np.ndarray):
        array = value
    else:
        depth = 2 if isinstance(value, list) and value and isinstance(value[0], list) else 1
        array = json_numbers(value, where, ndim=depth)
    if array.ndim == 1 and (bands is None or bands == 1):
        array = array[:, None]  # (time,) envelope -> (time, 1)
    if array.ndim != 2 or array.shape[0] == 0:
        raise EEGKitError(f"{where}: expected a 2-D (time x bands) array, got shape {array.shape}")
    if bands is not None and array.shape[1] != bands:
        raise EEGKitError(f"{where}: expected {bands} bands per frame (time first), got shape {array.shape}")
    return check_array(array, where, ndim=2, what="values").astype(np.float64, copy=False)


# ----------------------------------------------------------------------------- scoring
def score(predictions: Mapping[str, Any], labels_by_subject: Mapping[str, Mapping[str, Any]]) -> dict:
    """Score predictions {segment_id: (time, bands)} against {subject: {segment_id: (time, bands)}}.

    Returns {"score", "std_over_subjects", "per_subject", "per_band", "n_segments", "n_missing",
    "n_subjects", "n_extra", "missing_ids"}. Predictions for unknown ids are ignored (counted in n_extra).
    """
    if not labels_by_subject:
        raise EEGKitError("labels: no subjects to score")
    per_subject: dict[str, float] = {}
    band_rows: list[np.ndarray] = []
    missing: list[str] = []
    known: set[str] = set()
    n_bands = None
    for subject in sorted(labels_by_subject):
        segment_scores = []
        for segment_id, label_value in labels_by_subject[subject].items():
            known.add(segment_id)
            label = to_array(label_value, f"labels {subject} {segment_id}")
            n_bands = label.shape[1] if n_bands is None else n_bands
            if label.shape[1] != n_bands:
                raise EEGKitError(f"labels {subject} {segment_id}: {label.shape[1]} bands, others have {n_bands}")
            if segment_id not in predictions:
                missing.append(segment_id)
                r = np.zeros(n_bands)
            else:
                source = getattr(predictions, "sources", {}).get(segment_id)  # the file, when loaded from one
                where = f"{source}: segment {segment_id}" if source else f"prediction {segment_id}"
                pred = to_array(predictions[segment_id], where, bands=n_bands)
                r = pearson_per_band(fit_length(pred, label.shape[0]), label)
            band_rows.append(r)
            segment_scores.append(float(r.mean()))
        if not segment_scores:
            raise EEGKitError(f"labels {subject}: no segments")
        per_subject[subject] = float(np.mean(segment_scores))
    subject_means = np.array(list(per_subject.values()))
    return {
        "score": float(subject_means.mean()),
        "std_over_subjects": float(subject_means.std()),
        "per_subject": per_subject,
        "per_band": [float(v) for v in np.mean(band_rows, axis=0)],
        "n_segments": len(band_rows),
        "n_missing": len(missing),
        "n_subjects": len(per_subject),
        "n_extra": len(set(predictions) - known),
        "missing_ids": sorted(missing),
    }


# ----------------------------------------------------------------------------- controls
def score_with_controls(predictions: Mapping[str, Any], labels_by_subject: Mapping[str, Mapping[str, Any]],
                        noise_predictions: Mapping[str, Any] | None = None,
                        mismatched_predictions: Mapping[str, Any] | None = None, fs: float = 64.0,
                        n_shifts: int | None = None, min_shift_s: float = 2.0, seed: int = 0) -> dict:
    """`score` plus the controls of `evaluation.controls`, overall and per subject.

    ``n_shifts``: circular shifts per subject; None lets the scorer choose enough for Holm over the subjects
    (`evaluation.controls.adequate_shifts`); the report states the count and who chose it (``shifts_rule``).

    - ``noise_predictions``: the same model's predictions on noise EEG (same ids), or None;
    - ``mismatched_predictions``: its predictions from mismatched EEG, for the ids that have one
      (subjects without any get no mismatched score), or None;
    - the circular-shift null: per subject, the predictions and labels of its scored segments
      concatenated in order, the labels shifted circularly by >= ``min_shift_s`` and re-scored with
      the segment rule (segments of one length; otherwise one Pearson over the series); the overall
      null averages the subjects' null draws.

    Adds ``controls``, ``score_above_noise``, ``warnings``, ``per_subject_controls`` ({subject:
    block}), ``significance`` (Holm across subjects) and ``n_shifts`` to the `score` report.
    """
    from evaluation import controls as ctl

    report = score(predictions, labels_by_subject)
    noise_report = None if noise_predictions is None else score(noise_predictions, labels_by_subject)
    mismatched_report = None
    if mismatched_predictions:
        subset = {s: {i: v for i, v in segs.items() if i in mismatched_predictions}
                  for s, segs in labels_by_subject.items()}
        subset = {s: segs for s, segs in subset.items() if segs}
        if subset:
            mismatched_report = score(mismatched_predictions, subset)
    rng = np.random.default_rng(seed)
    chosen = n_shifts is None
    if chosen:
        n_shifts = ctl.adequate_shifts(len(report["per_subject"]))
    nulls = {}
    for subject in report["per_subject"]:
        pairs = [(fit_length(to_array(predictions[i], f"prediction {i}"), to_array(v, i).shape[0]), to_array(v, i))
                 for i, v in labels_by_subject[subject].items() if i in predictions]
        lengths = {label.shape[0] for _, label in pairs}
        try:
            nulls[subject] = None if not pairs else ctl.circular_shift_null(
                np.concatenate([p for p, _ in pairs]), np.concatenate([label for _, label in pairs]), fs, n_shifts,
                min_shift_s, rng, segment=lengths.pop() if len(lengths) == 1 else None,
                observed=report["per_subject"][subject])
        except ValueError:  # shorter than twice the minimum shift
            nulls[subject] = None
    per_subject_controls = {
        subject: ctl.control_report(value, None if noise_report is None else noise_report["per_subject"][subject],
                                    nulls[subject],
                                    None if mismatched_report is None else mismatched_report["per_subject"].get(subject))
        for subject, value in report["per_subject"].items()}
    valid = [null for null in nulls.values() if null is not None]
    block = ctl.control_report(report["score"], None if noise_report is None else noise_report["score"],
                               ctl.combine_nulls(valid, report["score"]) if valid else None,
                               None if mismatched_report is None else mismatched_report["score"])
    significance = ctl.significance_block({s: (n["p_value"] if n else None) for s, n in nulls.items()}, n_shifts)
    block["warnings"] += significance.pop("warnings")
    if len(valid) < len(nulls):
        block["warnings"].append(f"circular shift: {len(nulls) - len(valid)} subject(s) too short for "
                                 f"shifts of {min_shift_s:g} s; no null for them")
    if mismatched_report is not None and mismatched_report["n_subjects"] < report["n_subjects"]:
        block["warnings"].append(f"mismatched EEG: {report['n_subjects'] - mismatched_report['n_subjects']} "
                                 "subject(s) have no other recording and no mismatched score")
    report.update(block)
    report.update({"per_subject_controls": per_subject_controls, "significance": significance,
                   "n_shifts": int(n_shifts), "shifts_rule": ctl.shifts_rule(n_shifts, len(nulls), chosen),
                   "min_shift_s": float(min_shift_s)})
    return report


def format_controls_report(report: dict) -> str:
    """Printout of the controls of a `score_with_controls` report: per subject, significance, overall."""
    from evaluation.controls import format_controls

    lines = ["controls per subject:"]
    for subject, block in report["per_subject_controls"].items():
        lines.append(f"  {subject}: score {report['per_subject'][subject]:.3f}")
        lines.append(format_controls(block, indent="    "))
    sig = report["significance"]
    lines.append(f"significant subjects (p < {sig['alpha']:g}, {sig['correction']}-corrected over "
                 f"{sig['n_subjects']} subjects, {report['n_shifts']} circular shifts): "
                 f"{', '.join(sig['significant']) or 'none'}")
    if "shifts_rule" in report:
        lines.append(f"shifts: {report['shifts_rule']}")
    lines.append(f"overall: score {report['score']:.3f}")
    lines.append(format_controls(report, indent="  "))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- loading
def _parse_json(text: bytes | str, where: str) -> dict:
    from util.inputs import parse_json

    obj = parse_json(text, where)
    if not isinstance(obj, dict):
        raise EEGKitError(f"{where}: expected a JSON object {{segment_id: prediction}}")
    return obj


class Predictions(dict):
    """``{segment_id: (time, bands) array}`` that also knows the file each id came from (``sources``)."""

    def __init__(self):
        super().__init__()
        self.sources: dict[str, str] = {}


def _merge(merged: Predictions, obj: dict, where: str, convert=None) -> None:
    convert = to_array if convert is None else convert
    for segment_id, value in obj.items():
        if segment_id in merged:
            raise EEGKitError(f"{where}: segment id {segment_id} also appears in {merged.sources[segment_id]}")
        merged[segment_id] = convert(value, f"{where}: segment {segment_id}")
        merged.sources[segment_id] = where


def load_predictions(path: str | Path, convert=None) -> Predictions:
    """Merge every JSON object of a folder (*.json) or a zip into {segment_id: (time, bands) array}.

    Zip members are read under the caps of `util.inputs` (1 GiB per JSON member, declared and
    streamed; 4 GiB for all members together), so a zip bomb is refused with one line.
    ``convert(value, where)`` checks and converts each value (default `to_array`; Task 1's scorer
    passes its integer-index check).
    """
    from util import inputs

    path = Path(path)
    merged = Predictions()
    if not path.exists():
        raise EEGKitError(f"{path}: predictions folder or zip not found")
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise EEGKitError(f"{path}: no .json prediction files in this folder")
        for file in files:
            obj = inputs.read_json(file)
            if not isinstance(obj, dict):
                raise EEGKitError(f"{file}: expected a JSON object {{segment_id: prediction}}")
            _merge(merged, obj, str(file), convert)
        return merged
    try:
        with inputs.open_zip(path, str(path), None, "predictions zip",  # a regular file only; members capped
                             invalid="not a folder nor a valid zip file") as archive:
            infos = sorted((i for i in archive.infolist() if i.filename.endswith(".json")
                            and not i.filename.startswith("__MACOSX")), key=lambda i: i.filename)
            if not infos:
                raise EEGKitError(f"{path}: no .json files in this zip")
            declared = sum(info.file_size for info in infos)
            if declared > inputs.MAX_ZIP_TOTAL_BYTES:
                raise EEGKitError(f"{path}: its JSON members declare {declared} bytes, beyond the "
                                  f"{inputs.cap_text(inputs.MAX_ZIP_TOTAL_BYTES)} cap for a whole zip")
            total = 0
            for info in infos:
                where = f"{path}:{info.filename}"
                data = inputs.read_zip_member(archive, info.filename, where)
                total += len(data)
                if total > inputs.MAX_ZIP_TOTAL_BYTES:
                    raise EEGKitError(f"{path}: its JSON members inflate beyond the "
                                      f"{inputs.cap_text(inputs.MAX_ZIP_TOTAL_BYTES)} cap for a whole zip")
                _merge(merged, _parse_json(data, where), where, convert)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise EEGKitError(f"{path}: not a folder nor a valid zip file ({type(error).__name__})") from None
    return merged


MAPPING_GLOB = "sub-*_mapping.json"  # the test set's one mapping file per subject


def mapping_files(test_dir) -> list[Path]:
    """The test set's ``sub-XXX_mapping.json`` files, sorted (the one glob of the kit for them)."""
    test_dir = Path(test_dir)
    if not test_dir.is_dir():
        raise EEGKitError(f"{test_dir}: test set folder not found")
    files = sorted(test_dir.glob(MAPPING_GLOB))
    if not files:
        raise EEGKitError(f"{test_dir}: no sub-XXX_mapping.json files found (expected DATA/test_set/TASK2_regression, "
                          f"or TASK1_match_mismatch for Task 1)")
    return files


def subject_of(file: Path) -> str:
    """Subject name: the file name up to the first underscore, or the stem."""
    return file.stem.split("_", 1)[0]


def _label_value(value: Any) -> Any:
    """Accept 2024 labels (time x bands) and 2023 ones ([envelope, stimulus_name])."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[1], str):
        return value[0]
    return value


def label_files(folder: str | Path) -> list[Path]:
    """The ``*.json`` label files of a labels folder, sorted; a missing or empty folder is one line
    (Task 1's and Task 2's labels are laid out alike: one ``sub-XXX.json`` per subject)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EEGKitError(f"{folder}: labels folder not found")
    files = sorted(folder.glob("*.json"))
    if not files:
        raise EEGKitError(f"{folder}: no .json label files in this folder")
    return files


def load_labels(folder: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read `sub-XXX*.json` label files into {subject: {segment_id: (time, bands) array}}."""
    labels: dict[str, dict[str, np.ndarray]] = {}
    from util.inputs import read_json

    for file in label_files(folder):
        obj = read_json(file)
        if not isinstance(obj, dict):
            raise EEGKitError(f"{file}: expected a JSON object {{segment_id: label}}")
        subject_labels = labels.setdefault(subject_of(file), {})
        for segment_id, value in obj.items():
            where = f"{file}: segment {segment_id}"
            subject_labels[segment_id] = to_array(_label_value(value), where)
    return labels


# ----------------------------------------------------------------------------- output
def format_report(report: dict) -> str:
    """Readable table of a score report."""
    lines = [f"{'subject':<16}{'mean r':>10}"]
    lines += [f"{subject:<16}{value:>10.4f}" for subject, value in report["per_subject"].items()]
    lines.append("-" * 26)
    lines.append(f"{'band':<16}{'mean r':>10}")
    lines += [f"{f'band {i}':<16}{value:>10.4f}" for i, value in enumerate(report["per_band"])]
    lines.append("-" * 26)
    lines.append(
        f"score {report['score']:.4f} +- {report['std_over_subjects']:.4f} (std over {report['n_subjects']} subjects); "
        f"{report['n_segments']} segments, {report['n_missing']} missing, {report['n_extra']} extra predictions ignored"
    )
    return "\n".join(lines)


def plot_report(report: dict, png_path: str | Path) -> None:
    """Bar plots of per-subject (with its controls when the report has them) and per-band mean r, saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from util.atomic import atomic_savefig

    subjects = list(report["per_subject"])
    fig, (ax_sub, ax_band) = plt.subplots(1, 2, figsize=(max(8.0, 0.35 * len(subjects) + 5), 4))
    if "per_subject_controls" in report:  # scores beside their controls (evaluation.controls)
        from evaluation.controls import draw_controls

        draw_controls(ax_sub, report)
    else:
        ax_sub.bar(range(len(subjects)), [report["per_subject"][s] for s in subjects], color="tab:blue")
    ax_sub.axhline(report["score"], color="k", ls="--", lw=1, label=f"score {report['score']:.4f}")
    ax_sub.set_xticks(range(len(subjects)), subjects, rotation=90, fontsize=7)
    ax_sub.set_ylabel("mean Pearson r")
    if "per_subject_controls" not in report:
        ax_sub.set_title("per subject")
    elif report.get("controls"):
        noise = (report["controls"].get("noise_eeg") or {}).get("score")
        above = report.get("score_above_noise")
        fig.suptitle(f"score {report['score']:.3f}; noise-EEG control "
                     f"{'n/a' if noise is None else f'{noise:.3f}'}; above noise "
                     f"{'n/a' if above is None else f'{above:.3f}'}", fontsize=9)
    ax_sub.legend(fontsize=8)
    ax_band.bar(range(len(report["per_band"])), report["per_band"], color="tab:orange")
    ax_band.set_xticks(range(len(report["per_band"])))
    ax_band.set_xlabel("band")
    ax_band.set_title("per band (all segments)")
    fig.tight_layout()
    atomic_savefig(fig, png_path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.task2",
        description="Score Task 2 (mel reconstruction) predictions the way the challenge does: "
        "mean over subjects of the mean over segments of the band-averaged Pearson r.",
    )
    parser.add_argument("--predictions", required=True, type=Path,
                        help="folder of JSON files or a submission zip; all {segment_id: time x bands} objects are merged")
    parser.add_argument("--labels", required=True, type=Path,
                        help="folder of sub-XXX.json label files {segment_id: time x bands} "
                        "(2023 format [envelope, stimulus] also accepted)")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON to this file")
    parser.add_argument("--plot", type=Path, default=None, help="write per-subject and per-band bar plots to this PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out / --plot file")
    parser.add_argument("--noise-predictions", type=Path, default=None,
                        help="the same model's predictions on noise EEG (python -m task2_regression.predict "
                             "--control noise): the noise-EEG control")
    parser.add_argument("--mismatched-predictions", type=Path, default=None,
                        help="its predictions from mismatched EEG (predict --control mismatched): the "
                             "mismatched-EEG control")
    parser.add_argument("--n-shifts", type=int_arg(1, 100000), default=None,
                        help="circular shifts (>= 2 s) per subject for the null, always computed (default: "
                             "chosen by the scorer, ceil(20 x subjects / 0.05) within [100, 20000], so Holm "
                             "over the subjects can reach p < 0.05; the report states the count)")
    args = parser.parse_args(argv)
    if args.n_shifts is not None and args.n_shifts < 1:
        raise EEGKitError(f"--n-shifts {args.n_shifts}: must be at least 1")
    from util.outdir import check_out_files

    check_out_files([("--out", args.out), ("--plot", args.plot)], args.overwrite,
                    [args.predictions, args.labels, args.noise_predictions, args.mismatched_predictions])

    labels = load_labels(args.labels)
    predictions = load_predictions(args.predictions)
    noise = None if args.noise_predictions is None else load_predictions(args.noise_predictions)
    mismatched = None if args.mismatched_predictions is None else load_predictions(args.mismatched_predictions)
    report = score_with_controls(predictions, labels, noise, mismatched, n_shifts=args.n_shifts)
    print(format_report(report))
    print(format_controls_report(report))
    if args.out is not None:
        from util.atomic import atomic_write_json

        atomic_write_json(args.out, report, indent=2)
        print(f"report written to {args.out}")
    if args.plot is not None:
        plot_report(report, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    run_cli(main)
