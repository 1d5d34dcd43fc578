"""The one place every data reader checks what it read: arrays, JSON and compressed files.

Arrays (EEG, targets, audio, predictions) go through `check_array(array, where, ...)`: numeric
dtype (no object, string, boolean or complex arrays), the expected number of dimensions and
columns, enough rows, every value finite, and optionally not constant. A problem is one
`EEGKitError` line naming ``where`` (the file, and the entry or key inside it) and the first bad
index, e.g. ``.../sub-101_eeg.npz: entry 'eeg_0001': contains NaN or Inf (first: NaN at index (12, 3) (row 12, column 3))``.

JSON (`read_json`) is refused with one line for a file beyond the size cap, malformed text, bad
UTF-8 and nesting too deep for the parser (``RecursionError``). `json_numbers` turns a parsed
value into a float64 array and refuses booleans, strings (also numeric ones like ``"1.5"``) and
``null`` instead of letting numpy convert them.

Decompression caps (declared sizes are read first, and every stream is also limited while it is
read, because declared sizes can lie):

- `MAX_INFLATED_BYTES` = 2 GiB: a ``.gz`` file (``.npz.gz`` stimuli) and one ``.npz`` member
  (stimulus audio, test-set EEG). A SparrKULee stimulus (about 15 min of 48-kHz float32) is
  about 0.2 GB; a test subject's EEG npz about 0.05 GB.
- `MAX_JSON_BYTES` = 1 GiB: one JSON file or one JSON member of a submission zip (a subject's
  2024 submission JSON is about 0.4 MB per 30-s segment, some 50 MB for 120 segments).
- `MAX_ZIP_TOTAL_BYTES` = 4 GiB: all JSON members of one zip together (20 test subjects: about 1 GB).

The caps are module attributes so that a test can lower them (``monkeypatch.setattr``).
"""
from __future__ import annotations

import gzip
import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from util.errors import EEGKitError
from util.npy import parse_header

GiB = 1 << 30
MAX_INFLATED_BYTES = 2 * GiB
MAX_JSON_BYTES = 1 * GiB
MAX_ZIP_TOTAL_BYTES = 4 * GiB
_CHUNK = 1 << 20

__all__ = ["MAX_INFLATED_BYTES", "MAX_JSON_BYTES", "MAX_ZIP_TOTAL_BYTES", "check_array", "first_nonfinite",
           "check_finite", "describe_index", "cap_text", "read_json", "parse_json", "json_numbers", "gunzip_file",
           "read_zip_member", "NpzReader", "finite_number", "check_number_flags"]


# --------------------------------------------------------------------------- arrays
def cap_text(nbytes: int) -> str:
    """``2 GiB`` / ``512 MiB`` / ``4096 bytes``: how a cap is named in messages."""
    for unit, size in (("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= size and nbytes % size == 0:
            return f"{nbytes // size} {unit}"
    return f"{nbytes} bytes"


def describe_index(index: tuple, row_offset: int = 0) -> str:
    """``(12, 3)`` -> ``index (12, 3) (row 12, column 3)``; a 1-D index -> ``index 12``."""
    index = tuple(int(i) for i in index)
    if row_offset:
        index = (index[0] + row_offset,) + index[1:]
    if len(index) == 1:
        return f"index {index[0]}"
    if len(index) == 2:
        return f"index {index} (row {index[0]}, column {index[1]})"
    return f"index {index}"


def first_nonfinite(array: np.ndarray) -> tuple | None:
    """Index of the first NaN/Inf of a numeric array (C order), or None when all are finite."""
    bad = ~np.isfinite(array)
    if not bad.any():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.reshape(-1))), array.shape))


def check_finite(array: np.ndarray, where: str, row_offset: int = 0) -> None:
    """EEGKitError naming ``where`` and the first NaN/Inf (rows counted from ``row_offset``)."""
    index = first_nonfinite(array)
    if index is not None:
        value = array[index]
        raise EEGKitError(f"{where}: contains NaN or Inf (first: {'NaN' if np.isnan(value) else 'Inf'} at "
                          f"{describe_index(index, row_offset)})")


def check_array(array: Any, where: str, *, ndim: int | Iterable[int] = (1, 2), columns: int | None = None,
                min_rows: int = 1, finite: bool = True, refuse_constant: bool = False,
                what: str = "array", shape_hint: str = "") -> np.ndarray:
    """Check one array read from a file and return it (unchanged); EEGKitError naming ``where`` otherwise.

    ``ndim``: allowed numbers of dimensions; ``columns``: required size of axis 1 (2-D arrays; a 1-D
    array counts as one column); ``min_rows``: minimum size of axis 0; ``finite``: refuse NaN/Inf;
    ``refuse_constant``: refuse an array whose values are all equal (all-zero EEG, a constant
    target, a silent signal). ``what`` names the content in messages ("EEG", "mel", "audio").
    """
    array = np.asarray(array)
    kind = array.dtype.kind
    if array.dtype.hasobject or kind == "O":
        raise EEGKitError(f"{where}: {what} is an object array (expected numbers)")
    if kind in "USV":
        raise EEGKitError(f"{where}: {what} holds {'text' if kind in 'US' else 'raw bytes'} "
                          f"(dtype {array.dtype}), expected numbers")
    if kind == "c":
        raise EEGKitError(f"{where}: {what} holds complex numbers (dtype {array.dtype}), expected real values")
    if kind == "b":
        raise EEGKitError(f"{where}: {what} holds booleans, expected numbers")
    if kind not in "iuf":
        raise EEGKitError(f"{where}: {what} has unsupported dtype {array.dtype}")
    allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    expected = shape_hint or (f"(time, {columns})" if columns is not None else f"{' or '.join(map(str, allowed))}-D")
    if array.ndim not in allowed:
        raise EEGKitError(f"{where}: {what} must be {expected}, found shape {array.shape}")
    if columns is not None:
        n_columns = 1 if array.ndim == 1 else array.shape[1]
        if n_columns != columns:
            hint = ""
            if array.ndim == 2 and array.shape[0] == columns and array.shape[1] != columns:
                hint = " (looks transposed: time must come first)"
            unit = "channels" if what == "EEG" else "columns"
            raise EEGKitError(f"{where}: {what} must be {expected}, found {n_columns} {unit} "
                              f"(shape {array.shape}){hint}")
    if array.size == 0 or array.shape[0] < min_rows:
        rows = array.shape[0] if array.ndim else 0
        need = f"at least {min_rows}" if min_rows > 1 else "at least 1"
        raise EEGKitError(f"{where}: {what} has {rows} samples, need {need}" if array.size
                          else f"{where}: {what} is empty (shape {array.shape})")
    if finite and kind == "f":
        check_finite(array, where)
    if refuse_constant and np.all(array == array.reshape(-1)[0]):
        raise EEGKitError(f"{where}: {what} is constant (every value is {array.reshape(-1)[0]:g}); "
                          f"nothing can be learned or scored from it")
    return array


def finite_number(value: Any, flag: str, minimum: float | None = None, integer: bool = False,
                  strict_minimum: bool = False) -> float | int:
    """A flag's value as a finite number (>= or > ``minimum``); one line naming ``flag`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EEGKitError(f"{flag} {value}: not a number") from None
    if not np.isfinite(number):
        raise EEGKitError(f"{flag} {value}: must be a finite number")
    if integer and number != int(number):
        raise EEGKitError(f"{flag} {value}: must be a whole number")
    if minimum is not None and (number <= minimum if strict_minimum else number < minimum):
        relation = ">" if strict_minimum else ">="
        raise EEGKitError(f"{flag} {value}: must be {relation} {minimum:g}")
    return int(number) if integer else number


def check_number_flags(args: Any, rules: dict) -> None:
    """Check parsed argparse flags: ``rules = {"--flag": (minimum, integer, strict_minimum), ...}``.

    ``minimum`` may be None (only finiteness is checked); list values (``nargs='+'``) are checked item by
    item; a flag left at None is skipped. One EEGKitError line naming the flag otherwise.
    """
    for flag, (minimum, integer, strict) in rules.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                finite_number(item, flag, minimum=minimum, integer=integer, strict_minimum=strict)


def check_known_flag_values(flag: str, values, known) -> None:
    """Refuse any of ``values`` (a list flag, None = not given) that is not one of ``known``: one EEGKitError
    line naming the flag, the value and the choices."""
    known = list(known)
    for value in values or []:
        if value not in known:
            raise EEGKitError(f"{flag} {value!r}: unknown; choose from {', '.join(repr(k) for k in known)}")


# --------------------------------------------------------------------------- capped streams
class _CappedStream(io.RawIOBase):
    """A read-only stream that refuses to deliver more than ``cap`` bytes (decompression bombs)."""

    def __init__(self, raw, cap: int, where: str, kind: str):
        super().__init__()
        self.raw, self.cap, self.where, self.kind, self.count = raw, int(cap), where, kind, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.cap + 1 - self.count
        data = self.raw.read(min(size, self.cap + 1 - self.count)) if size else b""
        self.count += len(data)
        if self.count > self.cap:
            raise EEGKitError(f"{self.where}: {self.kind} inflates beyond the {cap_text(self.cap)} cap")
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _read_all(stream, cap: int, where: str, kind: str) -> bytes:
    capped = _CappedStream(stream, cap, where, kind)
    parts = []
    while True:
        block = capped.read(_CHUNK)
        if not block:
            return b"".join(parts)
        parts.append(block)


def gunzip_file(path: str | Path, cap: int | None = None) -> bytes:
    """The decompressed bytes of a ``.gz`` file, refused beyond ``cap`` (default `MAX_INFLATED_BYTES`)."""
    path = Path(path)
    cap = MAX_INFLATED_BYTES if cap is None else cap
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            if handle.tell() >= 4:  # the gzip trailer declares the size (mod 2**32)
                handle.seek(-4, 2)
                declared = int.from_bytes(handle.read(4), "little")
                if declared > cap:
                    raise EEGKitError(f"{path}: declares {declared} bytes, beyond the {cap_text(cap)} cap "
                                      f"for a decompressed .gz file")
        with gzip.open(path, "rb") as stream:
            return _read_all(stream, cap, str(path), ".gz content")
    except EEGKitError:
        raise
    except (OSError, EOFError, zlib.error) as error:
        raise EEGKitError(f"{path}: not a readable .gz file ({type(error).__name__}: {error})") from None


def read_zip_member(archive: zipfile.ZipFile, name: str, where: str, cap: int | None = None) -> bytes:
    """One member's bytes; refused when its declared or actual size passes ``cap`` (default JSON cap)."""
    cap = MAX_JSON_BYTES if cap is None else cap
    info = archive.getinfo(name)
    if info.file_size > cap:
        raise EEGKitError(f"{where}: declares {info.file_size} bytes, beyond the {cap_text(cap)} cap for a zip member")
    try:
        with archive.open(info) as stream:
            return _read_all(stream, cap, where, "zip member")
    except EEGKitError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as error:
        raise EEGKitError(f"{where}: unreadable zip member ({type(error).__name__}: {error})") from None


class NpzReader:
    """An ``.npz`` read member by member without pickle, each member capped (declared and streamed).

    ``NpzReader(path_or_bytes, where)``; ``.files`` lists the keys (without ``.npy``);
    ``reader[key]`` returns the array (refusing object arrays with one line). Use as a context manager.
    """

    def __init__(self, source: str | Path | bytes, where: str | None = None, cap: int | None = None):
        self.where = str(where if where is not None else source)
        self.cap = MAX_INFLATED_BYTES if cap is None else cap
        try:
            self._zip = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise EEGKitError(f"{self.where}: not a readable .npz file ({type(error).__name__}: {error})") from None
        self._members = {name[:-4] if name.endswith(".npy") else name: name for name in self._zip.namelist()}
        self.files = list(self._members)

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def __getitem__(self, key: str) -> np.ndarray:
        where = f"{self.where}: entry {key!r}"
        if key not in self._members:
            raise EEGKitError(f"{self.where}: no entry {key!r} (has {', '.join(self.files[:8]) or 'none'})")
        info = self._zip.getinfo(self._members[key])
        if info.file_size > self.cap:
            raise EEGKitError(f"{where}: declares {info.file_size} bytes, beyond the {cap_text(self.cap)} cap "
                              f"for an .npz member")
        try:
            with self._zip.open(info) as raw:
                stream = _CappedStream(raw, self.cap, where, ".npz member")
                shape, fortran, dtype = parse_header(stream)
                dtype = np.dtype(dtype)
                if dtype.hasobject:
                    raise EEGKitError(f"{where}: is an object array (not loadable without pickle; expected numbers)")
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                if nbytes > self.cap:
                    raise EEGKitError(f"{where}: declares a {shape} {dtype} array ({nbytes} bytes), beyond the "
                                      f"{cap_text(self.cap)} cap for an .npz member")
                data = _read_exact(stream, nbytes)
        except EEGKitError:
            raise
        except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile, zlib.error) as error:
            raise EEGKitError(f"{where}: unreadable array ({type(error).__name__}: {error})") from None
        if len(data) != nbytes:
            raise EEGKitError(f"{where}: truncated (has {len(data)} of {nbytes} bytes)")
        return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")


def _read_exact(stream, nbytes: int) -> bytes:
    parts, got = [], 0
    while got < nbytes:
        block = stream.read(min(_CHUNK, nbytes - got))
        if not block:
            break
        parts.append(block)
        got += len(block)
    return b"".join(parts)


# --------------------------------------------------------------------------- JSON
def parse_json(data: bytes | str, where: str) -> Any:
    """Parse JSON text; one line naming ``where`` for malformed text, bad UTF-8 or too deep nesting."""
    try:
        return json.loads(data)
    except RecursionError:
        raise EEGKitError(f"{where}: JSON nested too deeply to read") from None
    except UnicodeDecodeError as error:
        raise EEGKitError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise EEGKitError(f"{where}: invalid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except ValueError as error:  # e.g. an integer too long to convert
        raise EEGKitError(f"{where}: invalid JSON ({str(error).splitlines()[0]})") from None


def read_json(path: str | Path, cap: int | None = None) -> Any:
    """Read and parse a JSON file (refused beyond ``cap``, default `MAX_JSON_BYTES`)."""
    path = Path(path)
    cap = MAX_JSON_BYTES if cap is None else cap
    if not path.is_file():
        raise EEGKitError(f"{path}: file not found")
    size = path.stat().st_size
    if size > cap:
        raise EEGKitError(f"{path}: {size} bytes, beyond the {cap_text(cap)} cap for a JSON file")
    if size == 0:
        raise EEGKitError(f"{path}: empty file (expected JSON)")
    return parse_json(path.read_bytes(), str(path))


_NUMBER_TYPES = {int, float}


def json_numbers(value: Any, where: str, ndim: int = 2) -> np.ndarray:
    """A parsed JSON value as a float64 array with ``ndim`` levels of lists of numbers.

    Booleans, strings (numeric ones too), null and objects are refused naming ``where``; so are
    ragged lists. (Plain ``np.asarray(value, float)`` would turn ``true`` into 1.0 and "1.5" into 1.5.)
    """
    level = [value]
    for depth in range(ndim):
        types = set(map(type, level))
        if types != {list}:
            found = ", ".join(sorted(_json_type_name(t) for t in types - {list}))
            if depth == 0:
                raise EEGKitError(f"{where}: not a numeric array (found {found}, expected lists of numbers)")
            raise EEGKitError(f"{where}: not a numeric {ndim}-D array (found {found} where lists belong)")
        level = [item for sub in level for item in sub]
    types = set(map(type, level))
    if types - _NUMBER_TYPES:
        found = ", ".join(sorted(_json_type_name(t) for t in types - _NUMBER_TYPES))
        raise EEGKitError(f"{where}: values must be JSON numbers, found {found}")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise EEGKitError(f"{where}: ragged lists (rows of different lengths)") from None
    if array.ndim != ndim:
        raise EEGKitError(f"{where}: ragged lists (rows of different lengths)")
    return array


def _json_type_name(kind: type) -> str:
    return {bool: "booleans", str: "strings", type(None): "null", dict: "objects", list: "lists",
            int: "numbers", float: "numbers"}.get(kind, kind.__name__)
