"""Validate Task 1 or Task 2 predictions against the test set and package the challenge submission zip.

  python submit.py --task 2 --predictions PRED_DIR --test-set DATA/test_set/TASK2_regression \
      --group NAME --out OUTDIR [--target auto|mel|envelope]
  python submit.py --task 1 --predictions PRED_DIR --test-set DATA/test_set/TASK1_match_mismatch \
      --group NAME --out OUTDIR

Task 1 (match-mismatch, `../shared/reference/task1_match_mismatch.md` section 4): PRED_DIR holds
one `sub-XXX.json` per subject of the test set, `{segment_id: index}` as written by
task1_match_mismatch/predict.py. Checks (`validate_task1`), against every `sub-XXX_mapping.json`
(`{segment_id: {"eeg": id, "stimulus": [5 ids]}}`):
  * every segment of a subject's mapping has a prediction in that subject's file;
  * every value is a JSON integer 0..K-1 (K = the segment's number of stimulus ids, 5): no floats
    (also 2.0), booleans, strings or null, no 5 (`evaluation.task1.index_value`);
  * nothing else: no id outside the subject's mapping, no file other than one `sub-XXX.json` per
    test subject (the kit's marker file `.eegkit-output` aside), no sub-folder.
Refused with exit status 2 and nothing written: a single problem is the one error line; several are
printed one a line before it, as for Task 2. Otherwise
`OUTDIR/task_1_group_NAME_submission_<n>.zip` (n = 1 or 2), flat, one `sub-XXX.json` per subject.

Task 2:

PRED_DIR holds per-subject JSON files `{segment_id: prediction}`, time first, as written by
task2_regression/predict.py:
  * mel (the 2024 target): 1920 lists of 10 floats (1920 x 10);
  * envelope (the 2023 target): 1920 x 1 lists, or a flat list of 1920 floats.
`--target auto` (the default) takes the target from the predictions (10 bands: mel; 1 band or a
flat list: envelope); every segment must then have that shape. Checks, against every
`sub-XXX_mapping.json` of the test set:
  * every mapping segment id has a prediction, and no prediction has an unknown id;
  * every prediction is numeric (JSON numbers: booleans, strings such as "1.5" and null are
    refused), exactly 1920 frames of the target's bands (time first) and finite;
  * every JSON file parses, and no id appears in two files.
On any problem every problem is printed (one line each, naming the file and the id) and the
script exits with status 2 without writing anything. Otherwise it writes
`OUTDIR/task_2_group_NAME_submission_1.zip` (or `_2` when `_1` exists; it refuses when both
exist -- the challenge allows two submissions) atomically, with one `sub-XXX.json` per subject.

Envelope format: the 2023 challenge's labels are `{segment_id: [envelope (T x 1), stimulus]}`; the
reference (`task2_challenge.md`) gives no layout for a 2023 envelope *submission*. The zip holds
`{segment_id: [f, ...]}`, one flat list of T floats per segment (one value per 64-Hz frame, time
first): the envelope has a single band, a flat list is its plainest JSON form, and
`evaluation.task2` reads it as (T, 1). T is 1920, the 30-s segments of the test set this kit reads.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np

from evaluation.task2 import mapping_files, subject_of
from util.atomic import atomic_write_bytes
from util.errors import EEGKitError, run_cli
from util.inputs import json_numbers, read_json
from util.outdir import MARKER, check_out_dir, is_kit_file, writing_into

N_FRAMES = 1920  # 30 s at 64 Hz
N_BANDS = 10
MAX_SUBMISSIONS = 2


def load_mappings(test_set_dir: Path) -> dict[str, tuple[Path, list[str]]]:
    """{subject: (mapping file, [segment ids])} from every sub-XXX_mapping.json of the test set."""
    files = mapping_files(test_set_dir)
    mappings: dict[str, tuple[Path, list[str]]] = {}
    for file in files:
        obj = read_json(file)
        if not isinstance(obj, dict):
            raise EEGKitError(f"{file}: expected a JSON object {{segment_id: {{'eeg': eeg_id}}}}")
        subject = subject_of(file)
        mappings[subject] = (file, [str(segment_id) for segment_id in obj])
    return mappings


TARGET_BANDS = {"mel": N_BANDS, "envelope": 1}


def prediction_target(value) -> str | None:
    """'mel' or 'envelope' from a prediction's shape (10 bands / 1 band or flat), None when neither."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1):
        return "envelope"
    if array.ndim == 2 and array.shape[1] == N_BANDS:
        return "mel"
    return None


def check_prediction(value, where: str, target: str = "mel") -> tuple[list | None, str | None]:
    """Return (the prediction in the submission layout, None) or (None, problem text).

    mel: 1920 lists of 10 floats; envelope: (1920, 1) or (1920,) in, a flat list of 1920 floats out.
    """
    bands = TARGET_BANDS[target]
    depth = 2 if isinstance(value, list) and value and isinstance(value[0], list) else 1
    try:  # JSON booleans, strings (also "1.5") and null are refused, not converted
        array = json_numbers(value, where, ndim=depth)
    except EEGKitError as error:
        return None, f"{error} (expected a {N_FRAMES} x {bands} array of numbers)"
    if target == "envelope" and array.ndim == 1:
        array = array[:, None]  # (1920,) -> (1920, 1)
    if array.shape != (N_FRAMES, bands):
        hint = " (transposed? time must come first)" if array.shape == (bands, N_FRAMES) else ""
        if target == "envelope" and array.ndim == 2 and array.shape[1] == N_BANDS:
            hint = " (a mel prediction; pass --target mel or auto)"
        elif target == "mel" and array.ndim in (1, 2) and array.shape[-1] in (1, N_FRAMES):
            hint = hint or " (an envelope prediction? pass --target envelope or auto)"
        return None, f"{where}: shape {array.shape}, expected ({N_FRAMES}, {bands}){hint}"
    if not np.isfinite(array).all():
        return None, f"{where}: contains NaN or Inf"
    return (array[:, 0].tolist() if target == "envelope" else array.tolist()), None


def validate(predictions_dir: Path, mappings: dict[str, tuple[Path, list[str]]],
             target: str = "mel") -> tuple[dict, list[str]]:
    """Check predictions; returns ({subject: {segment_id: lists}}, problems).

    target: 'mel', 'envelope' or 'auto' (the target of the first prediction whose shape names one).
    """
    if not predictions_dir.is_dir():
        raise EEGKitError(f"{predictions_dir}: predictions folder not found")
    files = sorted(predictions_dir.glob("*.json"))
    if not files:
        raise EEGKitError(f"{predictions_dir}: no .json prediction files in this folder")
    problems: list[str] = []
    merged: dict[str, list] = {}
    source: dict[str, Path] = {}
    for file in files:
        try:
            obj = read_json(file)  # size cap, malformed text and too deep nesting: one line each
        except EEGKitError as error:
            problems.append(str(error))
            continue
        if not isinstance(obj, dict):
            problems.append(f"{file}: expected a JSON object {{segment_id: prediction}}")
            continue
        for segment_id, value in obj.items():
            if segment_id in source:
                problems.append(f"{file}: segment {segment_id}: also in {source[segment_id]}")
                continue
            source[segment_id] = file
            if target == "auto":
                target = prediction_target(value) or "auto"
            lists, problem = check_prediction(value, f"{file}: segment {segment_id}",
                                              "mel" if target == "auto" else target)
            if problem:
                problems.append(problem)
            else:
                merged[segment_id] = lists
    expected: dict[str, str] = {}
    for subject, (mapping_file, segment_ids) in mappings.items():
        for segment_id in segment_ids:
            expected[segment_id] = subject
            if segment_id not in source:
                problems.append(f"{mapping_file}: segment {segment_id}: no prediction")
    for segment_id, file in source.items():
        if segment_id not in expected:
            problems.append(f"{file}: segment {segment_id}: unknown id (in no mapping file)")
    by_subject: dict[str, dict[str, list]] = {subject: {} for subject in mappings}
    for segment_id, subject in expected.items():
        if segment_id in merged:
            by_subject[subject][segment_id] = merged[segment_id]
    return by_subject, problems


LOCK_WAIT_S = 60.0  # a second submit.py on the same --out waits this long for the first one's lock


def write_submission(out_dir: Path, group: str, task: int, by_subject: dict) -> Path:
    """Write the next free submission zip of ``group`` into ``out_dir``; returns its path.

    Under --out's lock file (`util.outdir.writing_into`): a second submit.py on the same folder waits
    for the first and then takes the next number, so no submission is lost; a folder this run created
    is removed again when the write fails (disk full), so no partial folder is left.
    """
    data = build_zip(by_subject)
    with writing_into(out_dir, "--out", wait_s=LOCK_WAIT_S):
        path = submission_path(out_dir, group, task)
        atomic_write_bytes(path, data)
    return path


def submission_path(out_dir: Path, group: str, task: int = 2) -> Path:
    """First free `task_<task>_group_<group>_submission_<n>.zip` (n = 1, 2); EEGKitError when both exist."""
    for number in range(1, MAX_SUBMISSIONS + 1):
        path = out_dir / f"task_{task}_group_{group}_submission_{number}.zip"
        if not path.exists():
            return path
    raise EEGKitError(f"{out_dir}: Task {task} submissions 1 and 2 for group {group} already exist; refusing to "
                      f"write a third")


def load_task1_mappings(test_set_dir: Path) -> dict[str, tuple[Path, dict[str, int]]]:
    """{subject: (mapping file, {segment_id: number of stimulus candidates})} of a Task 1 test set."""
    mappings: dict[str, tuple[Path, dict[str, int]]] = {}
    for file in mapping_files(test_set_dir):
        obj = read_json(file)
        if not isinstance(obj, dict) or not obj:
            raise EEGKitError(f"{file}: expected a non-empty JSON object {{segment_id: {{'eeg': id, 'stimulus': [ids]}}}}")
        candidates = {}
        for segment_id, entry in obj.items():
            stimuli = entry.get("stimulus") if isinstance(entry, dict) else None
            if not isinstance(stimuli, list) or len(stimuli) < 2:
                raise EEGKitError(f"{file}: segment {segment_id} has no 'stimulus' list of candidate ids (a Task 1 "
                                  f"mapping is needed: DATA/test_set/TASK1_match_mismatch)")
            candidates[str(segment_id)] = len(stimuli)
        mappings[subject_of(file)] = (file, candidates)
    return mappings


def validate_task1(predictions_dir: Path, mappings: dict[str, tuple[Path, dict[str, int]]]) -> tuple[dict, list[str]]:
    """Check Task 1 predictions; returns ({subject: {segment_id: index}}, problems)."""
    from evaluation.task1 import index_value

    if not predictions_dir.is_dir():
        raise EEGKitError(f"{predictions_dir}: predictions folder not found")
    problems: list[str] = []
    owner = {segment_id: subject for subject, (_, ids) in mappings.items() for segment_id in ids}
    files = {}
    for entry in sorted(predictions_dir.iterdir()):
        if entry.name == MARKER:
            continue
        if entry.is_dir():
            problems.append(f"{entry}: a folder; a Task 1 submission holds only one sub-XXX.json per subject")
        elif entry.suffix != ".json":
            problems.append(f"{entry}: extra file; a Task 1 submission holds only one sub-XXX.json per subject")
        elif entry.stem not in mappings:
            problems.append(f"{entry}: extra file; the test set has no {entry.stem}_mapping.json")
        else:
            files[entry.stem] = entry
    by_subject: dict[str, dict[str, int]] = {}
    for subject, (mapping_file, candidates) in mappings.items():
        if subject not in files:
            problems.append(f"{predictions_dir / (subject + '.json')}: missing ({len(candidates)} segments of "
                            f"{mapping_file.name} have no prediction)")
            continue
        file = files[subject]
        try:
            obj = read_json(file)
        except EEGKitError as error:
            problems.append(str(error))
            continue
        if not isinstance(obj, dict):
            problems.append(f"{file}: expected a JSON object {{segment_id: index}}")
            continue
        chosen = {}
        for segment_id, value in obj.items():
            if segment_id not in candidates:
                where = f"belongs to {owner[segment_id]}" if segment_id in owner else "in no mapping file"
                problems.append(f"{file}: segment {segment_id}: extra key ({where}, not in {mapping_file.name})")
                continue
            try:
                chosen[segment_id] = index_value(value, f"{file}: segment {segment_id}", candidates[segment_id])
            except EEGKitError as error:
                problems.append(str(error))
        for segment_id in candidates:
            if segment_id not in obj:
                problems.append(f"{mapping_file}: segment {segment_id}: no prediction")
        by_subject[subject] = {segment_id: chosen[segment_id] for segment_id in candidates if segment_id in chosen}
    return by_subject, problems


def build_zip(by_subject: dict[str, dict[str, list]]) -> bytes:
    """Zip bytes with one `<subject>.json` per subject."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for subject in sorted(by_subject):
            archive.writestr(f"{subject}.json", json.dumps(by_subject[subject]))
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python submit.py",
        description="Validate predictions against the test-set mapping files and write the challenge "
        "submission zip (nothing is written when any check fails).",
    )
    parser.add_argument("--task", type=int, required=True, choices=[1, 2],
                        help="challenge task: 1 (match-mismatch: an index 0..4 per segment) or 2 (stimulus "
                             "reconstruction: mel, or the envelope)")
    parser.add_argument("--predictions", type=Path, required=True,
                        help="folder of per-subject JSON files; Task 2: {segment_id: 1920 x 10 list} (mel) or "
                             "{segment_id: 1920 x 1 or flat 1920 list} (envelope); Task 1: {segment_id: index 0..4}, "
                             "one sub-XXX.json per test subject and nothing else")
    parser.add_argument("--target", default="auto", choices=("auto", "mel", "envelope"),
                        help="Task 2 only: the predicted target: mel (1920 x 10, the 2024 format) or envelope "
                             "(written as a flat 1920-float list per segment, the 2023 target); auto (default) takes "
                             "it from the predictions' shape")
    parser.add_argument("--test-set", type=Path, required=True,
                        help="the test set folder holding sub-XXX_mapping.json files: DATA/test_set/TASK2_regression "
                             "(Task 2) or DATA/test_set/TASK1_match_mismatch (Task 1)")
    parser.add_argument("--group", required=True,
                        help="your group name as registered (letters, digits, '-' and '_')")
    parser.add_argument("--out", type=Path, required=True,
                        help="output folder for task_<TASK>_group_NAME_submission_N.zip (N = 1, or 2 if 1 exists); "
                             "a folder holding anything else (other than this group's submissions) is refused "
                             "unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="allow an --out folder that holds other files (they are left alone)")
    args = parser.parse_args(argv)

    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.group):
        raise EEGKitError(f"--group {args.group!r}: use only letters, digits, '-' and '_'")
    if args.out.exists() and not args.out.is_dir():
        raise EEGKitError(f"--out {args.out}: exists and is a file, not a folder")
    if args.task == 1 and args.target != "auto":
        raise EEGKitError(f"--target {args.target}: only for --task 2 (a Task 1 prediction is an index)")
    own = re.compile(rf"task_[12]_group_{re.escape(args.group)}_submission_\d+\.zip")
    others = [p for p in args.out.iterdir() if not own.fullmatch(p.name) and not is_kit_file(p.name)] \
        if args.out.is_dir() else []
    # an earlier submission of this group is expected (it becomes _2); anything else needs --overwrite
    check_out_dir(args.out, overwrite=args.overwrite or not others, inputs=[args.predictions, args.test_set])
    if args.task == 1:
        return _submit_task1(args)
    mappings = load_mappings(args.test_set)
    by_subject, problems = validate(args.predictions, mappings, args.target)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        raise EEGKitError(f"{args.predictions}: {len(problems)} problem(s) found; no submission written")
    path = write_submission(args.out, args.group, 2, by_subject)
    n_segments = sum(len(v) for v in by_subject.values())
    first = next((v for segments in by_subject.values() for v in segments.values()), None)
    kind = "envelope, 1920 floats" if first and not isinstance(first[0], list) else "mel, 1920 x 10"
    print(f"wrote {path} ({len(by_subject)} subjects, {n_segments} segments; {kind} each)")
    return 0


def _submit_task1(args: argparse.Namespace) -> int:
    """The Task 1 half of `main`, after the --out checks: validate, then write the zip (or nothing)."""
    by_subject, problems = validate_task1(args.predictions, load_task1_mappings(args.test_set))
    if len(problems) == 1:  # the one problem is the error line
        raise EEGKitError(f"{problems[0]}; no submission written")
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        raise EEGKitError(f"{args.predictions}: {len(problems)} problem(s) found; no submission written")
    path = write_submission(args.out, args.group, 1, by_subject)
    n_segments = sum(len(v) for v in by_subject.values())
    print(f"wrote {path} ({len(by_subject)} subjects, {n_segments} segments; an index 0..4 each)")
    return 0


if __name__ == "__main__":
    run_cli(main)
