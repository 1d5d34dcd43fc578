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

Bounded reading (`load_mat`): the file is opened by `util.inputs.open_regular`
(a FIFO or a device is refused, never read) under `util.inputs.MAX_MAT_BYTES`,
and before scipy parses it one pass in bounded memory inflates every compressed
variable (MAT v5 ``miCOMPRESSED``) in pieces, stopping as soon as the variables
together pass the same cap, and checks that no cell or struct array declares
more elements than its bytes hold; so a small file that inflates to many GB, or
a header that claims 60000 x 60000 cells, is refused before scipy allocates.
Whole-number fields (``attended_track``, ``TrialID``, ``part``, ...) must hold
whole numbers: ``1.5`` is refused, not truncated, and so is a MATLAB logical
``true`` (found by the same pass: scipy returns logicals as uint8).

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


def _parse_trial(cell, path: Path, position: int, logical: set = frozenset()) -> RawTrial:
    where = f"{path}: trial {position + 1}"
    refused = sorted(logical & {"TrialID", "attended_track", "experiment", "part", "repetition", "SampleRate"})
    if refused:
        raise EEGKitError(f"{where}: malformed trial struct ({refused[0]}: expected a number, found a MATLAB "
                          f"logical (true/false))")
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


# MAT v5 element types and array classes (MATLAB's "MAT-File Format", level 5)
_MI_INT32, _MI_MATRIX, _MI_COMPRESSED = 5, 14, 15
_MX_CELL, _MX_STRUCT, _MX_OBJECT = 1, 2, 3
_SCAN_CHUNK = 1 << 20
_MAX_DEPTH = 64


class _Truncated(Exception):
    """The file ends inside an element: left to scipy, which names it."""


class _MatBytes:
    """Bytes of one top-level variable, read or inflated in pieces, counted against the file's cap."""

    def __init__(self, handle, nbytes: int, compressed: bool, budget: list, path: Path, cap: int):
        self.handle, self.left, self.compressed = handle, nbytes, compressed
        self.budget, self.path, self.cap = budget, path, cap
        self.inflater = zlib.decompressobj() if compressed else None
        self.buffer, self.pos = b"", 0

    def _count(self, n: int) -> None:
        self.budget[0] += n
        if self.budget[0] > self.cap:
            raise EEGKitError(f"{self.path}: its variables inflate beyond the {inputs.cap_text(self.cap)} cap "
                              f"for a MATLAB file")

    def _more(self, want: int) -> bytes:
        """Up to ``want`` (>= 1) further bytes of the variable; b'' at its end."""
        if not self.compressed:
            data = self.handle.read(min(want, self.left, _SCAN_CHUNK))
            self.left -= len(data)
            return data
        while True:
            if self.inflater.unconsumed_tail:
                data = self.inflater.decompress(self.inflater.unconsumed_tail, min(want, _SCAN_CHUNK))
            elif self.left:
                chunk = self.handle.read(min(_SCAN_CHUNK, self.left))
                if not chunk:
                    return b""
                self.left -= len(chunk)
                data = self.inflater.decompress(chunk, min(want, _SCAN_CHUNK))
            else:
                return b""
            if data:
                self._count(len(data))
                return data

    def read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            data = self._more(n - len(self.buffer))
            if not data:
                raise _Truncated()
            self.buffer += data
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if not self.compressed and not self.buffer:
            if n > self.left:
                raise _Truncated()
            self.handle.seek(n, 1)
            self.left -= n
            self.pos += n
            return
        while n:
            piece = self.read(min(n, _SCAN_CHUNK))
            n -= len(piece)

    def drain(self) -> None:
        """Read the variable to its end (a compressed one is inflated in full: its size is what counts)."""
        if not self.compressed:
            self.handle.seek(self.left, 1)
            self.left = 0
            return
        while self._more(_SCAN_CHUNK):
            pass


def _tag(src: _MatBytes, order: str) -> tuple[int, int, bytes | None]:
    """``(type, byte count, inline data or None)`` of the next element (the 4-byte small format inlined)."""
    raw = src.read(8)
    first, second = struct.unpack(order + "II", raw)
    if first >> 16:  # small data element: type and size in the first word, data in the second
        return first & 0xFFFF, first >> 16, raw[4:4 + (first >> 16)]
    return first, second, None


def _element(src: _MatBytes, order: str, keep: bool = True) -> tuple[int, bytes]:
    """``(type, data)`` of a sub-element, padding to 8 bytes skipped; data not kept (b'') when ``keep`` is False."""
    kind, nbytes, inline = _tag(src, order)
    if inline is not None:
        return kind, inline
    if keep and nbytes > (1 << 20):
        raise EEGKitError(f"{src.path}: a MATLAB header element of {nbytes} bytes (a damaged or crafted file)")
    data = src.read(nbytes) if keep else (src.skip(nbytes) or b"")
    src.skip((-nbytes) % 8)
    return kind, data


def _int32s(data: bytes, order: str) -> list[int]:
    return list(struct.unpack(f"{order}{len(data) // 4}i", data[:len(data) // 4 * 4]))


def _check_matrix(src: _MatBytes, order: str, nbytes: int, depth: int, where: tuple, logicals: set) -> None:
    """Walk one miMATRIX body of ``nbytes``: a cell or struct array may not declare more elements than its
    bytes can hold (each child needs an 8-byte tag), so scipy never allocates beyond what the file holds.

    ``where`` is the path to this array (variable name, then cell indices and (element, field) steps);
    the path of every MATLAB logical array goes into ``logicals`` (scipy returns them as uint8)."""
    if depth > _MAX_DEPTH:
        raise EEGKitError(f"{src.path}: MATLAB variables nested more than {_MAX_DEPTH} deep (a crafted file?)")
    if nbytes == 0:
        return
    end = src.pos + nbytes
    _, flags = _element(src, order)
    flag_word = struct.unpack(order + "I", flags[:4])[0] if len(flags) >= 4 else 0
    mx_class = flag_word & 0xFF
    _, dims_data = _element(src, order)
    dims = _int32s(dims_data, order)
    if any(d < 0 for d in dims):
        raise EEGKitError(f"{src.path}: a MATLAB array with a negative dimension {tuple(dims)}")
    count = 1
    for d in dims:
        count *= d
    _, name = _element(src, order)  # the array's name (a top-level variable's name; empty inside)
    if depth == 0:
        where = (name.decode("latin-1"),)
    if flag_word & 0x0200:  # the logical bit of the array flags
        logicals.add(where)
    if mx_class in (_MX_CELL, _MX_STRUCT, _MX_OBJECT):
        fields = 1
        if mx_class == _MX_OBJECT:
            _element(src, order, keep=False)  # class name
        if mx_class != _MX_CELL:
            _, length = _element(src, order)
            name_length = _int32s(length, order)[0] if len(length) >= 4 else 0
            _, names = _element(src, order)
            fields = len(names) // name_length if name_length > 0 else 0
            field_names = [names[i * name_length:(i + 1) * name_length].split(b"\0")[0].decode("latin-1")
                           for i in range(fields)]
        children = count * fields
        if children * 8 > end - src.pos:
            raise EEGKitError(f"{src.path}: a MATLAB {'cell' if mx_class == _MX_CELL else 'struct'} array declares "
                              f"{children} elements (dims {tuple(dims)}) in {end - src.pos} bytes (a crafted file?)")
        for index in range(children):
            kind, child_bytes, inline = _tag(src, order)
            if kind != _MI_MATRIX or inline is not None or child_bytes > end - src.pos:
                raise _Truncated()  # not what scipy expects either: let it word the error
            step = (index,) if mx_class == _MX_CELL else (index // fields, field_names[index % fields])
            _check_matrix(src, order, child_bytes, depth + 1, where + step, logicals)
            src.skip((-child_bytes) % 8)
    if src.pos > end:
        raise _Truncated()
    src.skip(end - src.pos)  # numeric, char, sparse data: read by scipy by its byte count (bounded by the file)


def _check_mat(handle, path: Path, cap: int, logicals: set) -> None:
    """One pass over a MAT v5 file before scipy reads it, in bounded memory.

    Compressed variables are inflated in 1 MiB pieces and thrown away, counted with the plain ones
    against ``cap`` (the pass stops as soon as the total passes it); cell and struct arrays are
    checked to hold no more elements than their bytes can (a header claiming 60000 x 60000 cells
    would make scipy allocate 27 GiB). Files that are not MAT v5 (v4; v7.3 is HDF5) are left to
    scipy, which refuses or reads them (their size is capped by `open_regular`).
    """
    header = handle.read(128)
    if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
        return
    order = "<" if header[126:128] == b"IM" else ">"
    if struct.unpack(order + "H", header[124:126])[0] != 0x0100:
        return
    budget = [0]
    while True:
        tag = handle.read(8)
        if len(tag) < 8:
            return
        kind, nbytes = struct.unpack(order + "II", tag)
        if kind >> 16:  # a small element at the top level: nothing to walk
            continue
        src = _MatBytes(handle, nbytes, kind == _MI_COMPRESSED, budget, path, cap)
        try:
            if kind == _MI_COMPRESSED:
                inner, inner_bytes, inline = _tag(src, order)
                if inner == _MI_MATRIX and inline is None:
                    _check_matrix(src, order, inner_bytes, 0, (), logicals)
            elif kind == _MI_MATRIX:
                src._count(nbytes)  # plain bytes count once, up front (only inflated pieces are counted as read)
                _check_matrix(src, order, nbytes, 0, (), logicals)
        except _Truncated:
            pass
        src.drain()


def load_mat(path: str | Path, what: str = "MATLAB file", logicals: set | None = None) -> dict:
    """``scipy.io.loadmat`` of a regular file under `util.inputs.MAX_MAT_BYTES`, compressed variables counted
    inflated (see the module docstring); one line naming the file for anything unreadable.

    ``logicals`` (a set, optional) receives the path of every MATLAB logical array: ``(variable, then
    cell indices and (element, field) steps)``, e.g. ``('trials', 3, 0, 'attended_track')``; scipy
    itself returns a logical as uint8 (and its ``mat_dtype=True``, which would keep them, drops the
    imaginary part of complex arrays)."""
    path = Path(path)
    cap = inputs.MAX_MAT_BYTES
    with inputs.open_regular(path, cap, what) as handle:
        try:
            _check_mat(handle, path, cap, set() if logicals is None else logicals)
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
    logicals: set = set()
    content = load_mat(path, "subject file", logicals)
    if "trials" not in content:
        found = sorted(key for key in content if not key.startswith("__"))
        raise EEGKitError(f"{path}: no variable 'trials' (found: {', '.join(found) or 'nothing'})")
    container = content["trials"]
    if not isinstance(container, np.ndarray) or container.size == 0:
        raise EEGKitError(f"{path}: 'trials' is empty or not a cell/struct array")
    logical_fields = {(p[1], p[-1]) for p in logicals if len(p) >= 3 and p[0] == "trials" and isinstance(p[1], int)
                      and isinstance(p[-1], str)}  # (trial position, field) of every MATLAB logical
    return [_parse_trial(cell, path, k, {field for index, field in logical_fields if index == k})
            for k, cell in enumerate(container.reshape(-1))]


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
