"""Read and write the KU Leuven AAD dataset's subject files (``S1.mat`` ... ``S16.mat``).

Layout as distributed (Das et al., Zenodo 3997352) and as ``scipy.io.loadmat``
returns it: ``loadmat('S1.mat')['trials']`` is a 1 x 20 object (cell) array;
each cell holds a 1 x 1 struct with fields

- ``RawData``: struct with ``Channels`` (cell of channel labels) and
  ``EegData`` (samples x 64),
- ``FileHeader``: struct with ``SampleRate`` (128),
- ``TrialID``, ``attended_ear`` ('L'/'R'), ``stimuli`` (cell: left-ear file,
  right-ear file), ``condition`` ('HRTF'/'dry'), ``experiment``, ``part``,
  ``attended_track`` (1/2), ``repetition`` (0/1), ``subject`` ('S1').

So ``trials[0, k]['RawData'][0, 0]['EegData'][0, 0]`` is the EEG of trial k.
The reader also accepts a plain struct array (``trials[0, k]`` a record) and
files saved with ``squeeze_me``-like 1-element wrappers; every 1-element
wrapper is unwrapped.

Bounded reading: the file is opened by `util.inputs.open_regular` (a FIFO or a
device is refused, never read) under `util.inputs.MAX_MAT_BYTES`, and before
scipy parses it every compressed variable (MAT v5 ``miCOMPRESSED``) is inflated
once in a counting pass that stops as soon as the variables together pass the
same cap, so a small file that inflates to many GB is refused in bounded memory.
Whole-number fields (``attended_track``, ``TrialID``, ``part``, ...) must hold
whole numbers: ``1.5`` or a MATLAB logical ``true`` is refused, not truncated.

Public API: ``RawTrial`` (one trial, EEG time first ``(samples, 64)``),
``read_subject_mat(path) -> list[RawTrial]``, ``load_mat(path)`` (the bounded ``loadmat``),
``write_subject_mat(path, trials)`` (atomic; used by ``synthetic.kul``),
``BIOSEMI64`` (channel labels used when writing).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io

from util import inputs
from util.atomic import atomic_path
from util.errors import EEGKitError
from util.inputs import check_array

__all__ = ["RawTrial", "read_subject_mat", "write_subject_mat", "load_mat", "BIOSEMI64", "N_CHANNELS"]

N_CHANNELS = 64

# BioSemi 64-channel cap labels (10-20 names) in the cap's A1..B32 order.
BIOSEMI64 = [
    "Fp1", "AF7", "AF3", "F1", "F3", "F5", "F7", "FT7", "FC5", "FC3", "FC1", "C1", "C3", "C5", "T7", "TP7",
    "CP5", "CP3", "CP1", "P1", "P3", "P5", "P7", "P9", "PO7", "PO3", "O1", "Iz", "Oz", "POz", "Pz", "CPz",
    "Fpz", "Fp2", "AF8", "AF4", "AFz", "Fz", "F2", "F4", "F6", "F8", "FT8", "FC6", "FC4", "FC2", "FCz", "Cz",
    "C2", "C4", "C6", "T8", "TP8", "CP6", "CP4", "CP2", "P2", "P4", "P6", "P8", "P10", "PO8", "PO4", "O2",
]


@dataclass
class RawTrial:
    """One trial as stored in a subject file; ``eeg`` is ``(samples, 64)``."""

    eeg: np.ndarray                      # (samples, 64)
    fs: float                            # EEG sampling rate (128 in the dataset)
    trial_id: int
    attended_ear: str                    # 'L' or 'R'
    attended_track: int                  # 1 or 2
    stimuli: tuple[str, str]             # (left-ear wav, right-ear wav)
    condition: str                       # 'HRTF' or 'dry'
    experiment: int
    part: int
    repetition: int                      # 0 or 1
    subject: str                         # 'S1'
    channels: list[str] = field(default_factory=lambda: list(BIOSEMI64))


# ---------------------------------------------------------------------------
# Reading
def _unwrap(value):
    """Strip MATLAB 1-element object/cell wrappers: array([[x]], dtype=object) -> x."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.reshape(-1)[0]
    return value


def _record(value):
    """A struct as one record (np.void) or dict, whatever the wrapping."""
    value = _unwrap(value)
    if isinstance(value, np.ndarray) and value.dtype.names is not None:
        if value.size != 1:
            raise ValueError(f"expected a single struct, found a struct array of shape {value.shape}")
        value = value.reshape(-1)[0]
    if isinstance(value, dict) or (isinstance(value, np.void) and value.dtype.names is not None):
        return value
    raise ValueError(f"expected a struct, found {type(value).__name__}")


def _field(record, name: str):
    names = record.keys() if isinstance(record, dict) else record.dtype.names
    if name not in names:
        raise KeyError(name)
    return record[name]


def _string(value) -> str:
    value = _unwrap(value)
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.size == 0:
        return ""
    if array.dtype.kind in "US":
        return "".join(str(x) for x in array.reshape(-1))
    raise ValueError(f"expected text, found {array.dtype} array")


def _number(value) -> float:
    array = np.asarray(_unwrap(value))
    if array.size == 1 and array.dtype.kind == "b":
        raise ValueError(f"expected a number, found a logical ({bool(array.reshape(-1)[0])})")
    if array.size != 1 or array.dtype.kind not in "iuf":
        raise ValueError(f"expected a number, found {array.dtype} array of shape {array.shape}")
    return float(array.reshape(-1)[0])


def _whole(record, name: str) -> int:
    """Field ``name`` as a whole number; ``1.5`` (or NaN, or a logical) is refused instead of truncated."""
    try:
        value = _number(_field(record, name))
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    if not np.isfinite(value) or value != int(value):
        raise ValueError(f"{name} must be a whole number, found {value:g}")
    return int(value)


def _strings(value) -> list[str]:
    array = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
    if array.dtype == object:
        return [_string(item) for item in array.reshape(-1)]
    if array.dtype.kind in "US":
        return [str(item) for item in array.reshape(-1)]
    return [_string(array)]


def _parse_trial(cell, path: Path, position: int) -> RawTrial:
    where = f"{path}: trial {position + 1}"
    try:
        record = _record(cell)
        raw = _record(_field(record, "RawData"))
        eeg = np.asarray(_unwrap(_field(raw, "EegData")))
        header = _record(_field(record, "FileHeader"))
        fs = _number(_field(header, "SampleRate"))
        try:
            channels = _strings(_field(raw, "Channels"))
        except (KeyError, ValueError):
            channels = []
        stimuli = _strings(_field(record, "stimuli"))
        values = dict(
            trial_id=_whole(record, "TrialID") if "TrialID" in _names(record) else position + 1,
            attended_ear=_string(_field(record, "attended_ear")).strip().upper(),
            attended_track=_whole(record, "attended_track"),
            condition=_string(_field(record, "condition")).strip(),
            experiment=_whole(record, "experiment") if "experiment" in _names(record) else 0,
            part=_whole(record, "part"),
            repetition=_whole(record, "repetition") if "repetition" in _names(record) else 0,
            subject=_string(_field(record, "subject")) if "subject" in _names(record) else path.stem,
        )
    except KeyError as missing:
        raise EEGKitError(f"{where}: missing field {missing}") from None
    except ValueError as error:
        raise EEGKitError(f"{where}: malformed trial struct ({error})") from None
    if eeg.ndim == 2 and eeg.dtype.kind in "iuf" and eeg.shape[1] != N_CHANNELS:
        raise EEGKitError(f"{where}: expected {N_CHANNELS} channels, found {eeg.shape[1]}")
    # numeric, samples x 64, finite (first bad sample named), not flat (an all-zero recording)
    check_array(eeg, f"{where}: EegData", ndim=2, columns=N_CHANNELS, min_rows=2, refuse_constant=True,
                what="EEG", shape_hint=f"a samples x {N_CHANNELS} matrix")
    if values["attended_track"] not in (1, 2):
        raise EEGKitError(f"{where}: attended_track must be 1 or 2, found {values['attended_track']}")
    if values["attended_ear"] not in ("L", "R"):
        raise EEGKitError(f"{where}: attended_ear must be 'L' or 'R', found {values['attended_ear']!r}")
    if len(stimuli) != 2:
        raise EEGKitError(f"{where}: stimuli must list 2 files (left, right), found {len(stimuli)}")
    if not fs > 0:
        raise EEGKitError(f"{where}: FileHeader.SampleRate must be positive, found {fs}")
    if len(channels) != N_CHANNELS:
        channels = list(BIOSEMI64)
    return RawTrial(eeg=eeg, fs=fs, stimuli=(stimuli[0], stimuli[1]), channels=channels, **values)


def _names(record) -> tuple:
    return tuple(record.keys()) if isinstance(record, dict) else record.dtype.names


_MI_COMPRESSED = 15
_SCAN_CHUNK = 1 << 20


def _inflated_sizes(handle, path: Path, cap: int) -> int:
    """Bytes of every top-level variable of a MAT v5 file, compressed ones counted inflated; refused past ``cap``.

    A counting pass: each ``miCOMPRESSED`` element is inflated in 1 MiB pieces and thrown away, so
    memory stays small and the pass stops as soon as the total passes the cap. Files that are not
    MAT v5 (v4; v7.3 is HDF5) are left to scipy, which refuses or reads them (their size is capped).
    """
    header = handle.read(128)
    if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
        return 0
    order = "<" if header[126:128] == b"IM" else ">"
    version = struct.unpack(order + "H", header[124:126])[0]
    if version != 0x0100:
        return 0
    total = 0
    while True:
        tag = handle.read(8)
        if len(tag) < 8:
            return total  # end of file (a truncated tag is scipy's to report)
        mdtype, nbytes = struct.unpack(order + "II", tag)
        if mdtype >> 16:  # small data element: 4 bytes of data in the tag itself
            continue
        if mdtype != _MI_COMPRESSED:
            total += nbytes
            handle.seek(nbytes, 1)
        else:
            inflater = zlib.decompressobj()
            remaining = nbytes
            while remaining:
                chunk = handle.read(min(_SCAN_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                data = inflater.decompress(chunk, _SCAN_CHUNK)
                while True:
                    total += len(data)
                    if total > cap:
                        raise EEGKitError(f"{path}: its variables inflate beyond the {inputs.cap_text(cap)} cap "
                                          f"for a MATLAB file")
                    if not inflater.unconsumed_tail:
                        break
                    data = inflater.decompress(inflater.unconsumed_tail, _SCAN_CHUNK)
        if total > cap:
            raise EEGKitError(f"{path}: its variables hold more than the {inputs.cap_text(cap)} cap for a MATLAB file")


def load_mat(path: str | Path, what: str = "MATLAB file") -> dict:
    """``scipy.io.loadmat`` of a regular file under `util.inputs.MAX_MAT_BYTES`, compressed variables counted
    inflated (see the module docstring); one line naming the file for anything unreadable."""
    path = Path(path)
    cap = inputs.MAX_MAT_BYTES
    with inputs.open_regular(path, cap, what) as handle:
        try:
            _inflated_sizes(handle, path, cap)
            handle.seek(0)
            return scipy.io.loadmat(handle)
        except EEGKitError:
            raise
        except MemoryError:
            raise inputs.out_of_memory(str(path)) from None
        except zlib.error as error:
            raise EEGKitError(f"{path}: cannot read MATLAB file (a damaged compressed variable: {error})") from None
        except NotImplementedError:
            raise EEGKitError(f"{path}: MATLAB v7.3 (HDF5) files are not supported; "
                              f"re-save with save(..., '-v7')") from None
        except Exception as error:  # scipy raises ValueError/TypeError/OSError/... for corrupt files
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise EEGKitError(f"{path}: cannot read MATLAB file ({first})") from None


def read_subject_mat(path: str | Path) -> list[RawTrial]:
    """All trials of one subject file, EEG as stored (not filtered, dtype kept)."""
    path = Path(path)
    content = load_mat(path, "subject file")
    if "trials" not in content:
        found = sorted(key for key in content if not key.startswith("__"))
        raise EEGKitError(f"{path}: no variable 'trials' (found: {', '.join(found) or 'nothing'})")
    container = content["trials"]
    if not isinstance(container, np.ndarray) or container.size == 0:
        raise EEGKitError(f"{path}: 'trials' is empty or not a cell/struct array")
    return [_parse_trial(cell, path, k) for k, cell in enumerate(container.reshape(-1))]


# ---------------------------------------------------------------------------
# Writing (mirrors the layout above so loadmat gives the same field access)
def _cell(items) -> np.ndarray:
    cell = np.empty((len(items), 1), dtype=object)
    for k, item in enumerate(items):
        cell[k, 0] = item
    return cell


def write_subject_mat(path: str | Path, trials: list[RawTrial]) -> Path:
    """Write ``trials`` as ``S*.mat`` with a 1 x n cell array ``trials`` of structs (atomic)."""
    path = Path(path)
    cells = np.empty((1, len(trials)), dtype=object)
    for k, trial in enumerate(trials):
        eeg = np.asarray(trial.eeg)
        if eeg.ndim != 2 or eeg.shape[1] != N_CHANNELS:
            raise EEGKitError(f"{path}: trial {k + 1}: expected {N_CHANNELS} channels, found shape {eeg.shape}")
        cells[0, k] = {
            "RawData": {"Channels": _cell(trial.channels), "EegData": eeg},
            "FileHeader": {"SampleRate": float(trial.fs)},
            "TrialID": float(trial.trial_id),
            "attended_ear": trial.attended_ear,
            "stimuli": _cell(list(trial.stimuli)),
            "condition": trial.condition,
            "experiment": float(trial.experiment),
            "part": float(trial.part),
            "attended_track": float(trial.attended_track),
            "repetition": float(trial.repetition),
            "subject": trial.subject,
        }
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            scipy.io.savemat(handle, {"trials": cells}, do_compression=False, oned_as="column")
    return path
