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

- `MAX_TEXT_BYTES` = 1 GiB: one CSV/text file (``evaluation.aad --correlations``).
- `MAX_ARRAY_BYTES` = 2 GiB: one ``.npy`` or ``.wav`` file read whole (``speaker_extraction.predict
  --eeg``/``--mixture``, stimulus wavs).
- `MAX_MAT_BYTES` = 2 GiB: one MATLAB file, its variables counted inflated (a KU Leuven subject file
  is about 0.1-0.2 GB).

Bounded reading. Every input file is opened by `open_regular(path, max_bytes)`: ``os.open`` with
``O_NONBLOCK`` (opening a FIFO never blocks), then ``fstat``: anything but a regular file (a FIFO,
a character device such as ``/dev/zero`` behind a symlink, a socket, a folder) is refused with one
line naming the path and what it is, and so is a file beyond ``max_bytes``. `read_regular` reads a
whole file that way and never takes more than the cap, even from a file that grows while it is read.
`open_zip` opens a zip or ``.npz`` the same way and refuses duplicate member names; `NpzReader`
refuses encrypted members, compression methods other than stored/deflated, and ``.npy`` headers
whose shape is negative or overflows (``2**70``, ``2**63 x 64``) before anything is allocated.

Strict JSON (`parse_json`, `read_json`): a key twice in one object is refused naming the key
(which value would count?), and so is an integer beyond the 64-bit range (a 401-digit integer is
one line, not a traceback or a silent float). Memory in fact: parsing builds one Python object per
value, about 12 times the size of dense text like ``[0.0,0.0,...]``, so the memory a text would
take is estimated from its separators first and refused beyond `MAX_JSON_PARSE_BYTES` = 4 GiB (a
real subject's 2024 submission JSON, ~50 MB, needs about 0.5 GB).

The caps are module attributes so that a test can lower them (``monkeypatch.setattr``).
"""
from __future__ import annotations

import gzip
import io
import json
import math
import os
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import numpy as np

from util.errors import EEGKitError

GiB = 1 << 30
MAX_INFLATED_BYTES = 2 * GiB
MAX_JSON_BYTES = 1 * GiB
MAX_ZIP_TOTAL_BYTES = 4 * GiB
MAX_TEXT_BYTES = 1 * GiB
MAX_ARRAY_BYTES = 2 * GiB
MAX_MAT_BYTES = 2 * GiB
MAX_JSON_INT_DIGITS = 19  # |n| < 2**63: the 64-bit range
MAX_JSON_PARSE_BYTES = 4 * GiB  # memory the Python objects of one parsed JSON text may take (estimated first)
# upper estimates per value (a float object + its list slot), per key (its string, the (key, value) pair
# the strict hook sees, the dict slot) and per list/object; measured on dense numbers and on many keys
_JSON_ITEM_BYTES, _JSON_KEY_BYTES, _JSON_CONTAINER_BYTES = 40, 200, 100
_CHUNK = 1 << 20
_SPOOL_BYTES = 64 << 20  # a decompressed .gz stays in memory up to this size, then goes to a temporary file

__all__ = ["MAX_INFLATED_BYTES", "MAX_JSON_BYTES", "MAX_ZIP_TOTAL_BYTES", "MAX_TEXT_BYTES", "MAX_ARRAY_BYTES",
           "MAX_MAT_BYTES", "check_array", "first_nonfinite", "check_finite", "describe_index", "cap_text",
           "read_json", "parse_json", "json_numbers", "gunzip_file", "open_gunzipped", "read_zip_member",
           "NpzReader", "finite_number", "check_number_flags", "open_regular", "read_regular", "open_zip",
           "parse_header", "array_nbytes", "read_array_into", "out_of_memory", "json_parse_bytes",
           "MAX_JSON_PARSE_BYTES"]


# --------------------------------------------------------------------------- bounded reading
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind_of(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _target_note(path: Path) -> str:
    """`` (a link to /dev/zero)`` when ``path`` is a symbolic link somewhere along the way; else empty."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        return ""
    return f" (a link to {real})" if real != os.path.abspath(path) else ""


def open_regular(path: str | os.PathLike, max_bytes: int | None = None, what: str = "file") -> BinaryIO:
    """Open ``path`` for binary reading if, and only if, it is a regular file of at most ``max_bytes``.

    ``os.open`` with ``O_NONBLOCK`` so that opening a FIFO returns at once instead of waiting for a
    writer; ``fstat`` on the open descriptor (no race with a swapped path) then refuses FIFOs,
    devices (``/dev/zero`` behind a symlink), sockets and folders, and a size beyond ``max_bytes``
    (None: no size cap, e.g. a file read by row ranges). One `EEGKitError` line naming the path;
    ``what`` names the content in messages ("JSON file", "subject file"). Returns a buffered file
    object (the caller closes it; use ``with``).
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise EEGKitError(f"{path}: {what} not found") from None
    except PermissionError:
        raise EEGKitError(f"{path}: permission denied (cannot read the {what})") from None
    except OSError as error:  # a socket (ENXIO), a symlink loop (ELOOP), a name too long ...
        raise EEGKitError(f"{path}: cannot open the {what} ({error.strerror or type(error).__name__})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _kind_of(info.st_mode)
            expected = "expected a file" if kind == "a folder" else f"expected a regular {what}"
            raise EEGKitError(f"{path}: is {kind}{_target_note(path)}, {expected}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise EEGKitError(f"{path}: {info.st_size} bytes, beyond the {cap_text(max_bytes)} cap for a {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def out_of_memory(where: str, nbytes: int | None = None) -> EEGKitError:
    """The one line for a `MemoryError` while reading ``where`` (the input is named, and its size when known)."""
    size = f" ({nbytes} bytes)" if nbytes is not None else ""
    return EEGKitError(f"{where}: out of memory while reading this input{size}; is it far larger than expected?")


def read_regular(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path`` (`open_regular`), never more than ``max_bytes``.

    The size is checked before reading and the read itself stops at ``max_bytes + 1`` bytes, so a
    file that grows while it is read is refused too.
    """
    path = Path(path)
    with open_regular(path, max_bytes, what) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except MemoryError:
            raise out_of_memory(str(path), max_bytes) from None
    if len(data) > max_bytes:
        raise EEGKitError(f"{path}: grew beyond the {cap_text(max_bytes)} cap for a {what} while it was read")
    return data


class _OwnedZip(zipfile.ZipFile):
    """A ZipFile that closes the file `open_zip` opened for it."""

    _owned: BinaryIO | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._owned is not None:
                self._owned.close()
                self._owned = None


def open_zip(source: str | os.PathLike | bytes | BinaryIO, where: str, max_bytes: int | None = None,
             what: str = "zip file", invalid: str | None = None) -> zipfile.ZipFile:
    """A `zipfile.ZipFile` over a regular file (`open_regular`), bytes or an open binary file.

    Refused with one line naming ``where``: not a zip (``invalid`` words it, default "not a readable
    <what>"), and a member name that appears twice (which copy would count?). A file opened here is
    closed with the archive.
    """
    owned = isinstance(source, (str, os.PathLike))
    handle = open_regular(source, max_bytes, what) if owned else (
        io.BytesIO(source) if isinstance(source, bytes) else source)
    try:
        archive = _OwnedZip(handle)
    except MemoryError:
        if owned:
            handle.close()
        raise out_of_memory(where) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as error:
        if owned:
            handle.close()
        raise EEGKitError(f"{where}: {invalid or f'not a readable {what}'} ({type(error).__name__}: {error})") from None
    if owned:
        archive._owned = handle
    seen: set[str] = set()
    for name in archive.namelist():
        if name in seen:
            archive.close()
            raise EEGKitError(f"{where}: member {name!r} appears twice in this {what} (which copy counts?)")
        seen.add(name)
    return archive


def check_zip_member(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse an encrypted member and a compression method other than stored or deflated (one line)."""
    if info.flag_bits & 0x1:
        raise EEGKitError(f"{where}: encrypted zip member (a password-protected member is not read)")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        names = {9: "deflate64", zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
        method = names.get(info.compress_type, f"method {info.compress_type}")
        raise EEGKitError(f"{where}: compressed with {method}; only stored and deflated members are read")


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
    try:
        while True:
            block = capped.read(_CHUNK)
            if not block:
                return b"".join(parts)
            parts.append(block)
    except MemoryError:
        raise out_of_memory(where, capped.count) from None


def _gz_declared(handle, path: Path, cap: int) -> None:
    """Refuse a .gz whose trailer declares more than ``cap`` bytes (the size mod 2**32: a first check only)."""
    handle.seek(0, 2)
    if handle.tell() >= 4:
        handle.seek(-4, 2)
        declared = int.from_bytes(handle.read(4), "little")
        if declared > cap:
            raise EEGKitError(f"{path}: declares {declared} bytes, beyond the {cap_text(cap)} cap "
                              f"for a decompressed .gz file")
    handle.seek(0)


def _gunzip_into(path: Path, cap: int, sink) -> None:
    with open_regular(path, None, ".gz file") as handle:
        _gz_declared(handle, path, cap)
        with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
            capped = _CappedStream(stream, cap, str(path), ".gz content")
            while True:
                block = capped.read(_CHUNK)
                if not block:
                    return
                sink.write(block)


def gunzip_file(path: str | Path, cap: int | None = None) -> bytes:
    """The decompressed bytes of a ``.gz`` file, refused beyond ``cap`` (default `MAX_INFLATED_BYTES`)."""
    path = Path(path)
    cap = MAX_INFLATED_BYTES if cap is None else cap
    buffer = io.BytesIO()
    try:
        _gunzip_into(path, cap, buffer)
    except EEGKitError:
        raise
    except MemoryError:
        raise out_of_memory(str(path)) from None
    except (OSError, EOFError, zlib.error) as error:
        raise EEGKitError(f"{path}: not a readable .gz file ({type(error).__name__}: {error})") from None
    return buffer.getvalue()


def open_gunzipped(path: str | Path, cap: int | None = None) -> BinaryIO:
    """The decompressed content of a ``.gz`` file as a seekable binary file (capped like `gunzip_file`).

    Held in memory up to 64 MiB, then in an anonymous temporary file, so that a caller that parses it
    (an ``.npz.gz`` stimulus: `NpzReader`) holds only what it parses in memory. Close it when done.
    """
    path = Path(path)
    cap = MAX_INFLATED_BYTES if cap is None else cap
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)
    try:
        _gunzip_into(path, cap, spool)
        spool.seek(0)
        return spool
    except BaseException as error:
        spool.close()
        if isinstance(error, EEGKitError):
            raise
        if isinstance(error, MemoryError):
            raise out_of_memory(str(path)) from None
        if isinstance(error, (OSError, EOFError, zlib.error)):
            raise EEGKitError(f"{path}: not a readable .gz file ({type(error).__name__}: {error})") from None
        raise


def read_zip_member(archive: zipfile.ZipFile, name: str, where: str, cap: int | None = None) -> bytes:
    """One member's bytes; refused when its declared or actual size passes ``cap`` (default JSON cap),
    and when it is encrypted or compressed with another method than stored or deflated."""
    cap = MAX_JSON_BYTES if cap is None else cap
    info = archive.getinfo(name)
    check_zip_member(info, where)
    if info.file_size > cap:
        raise EEGKitError(f"{where}: declares {info.file_size} bytes, beyond the {cap_text(cap)} cap for a zip member")
    try:
        with archive.open(info) as stream:
            return _read_all(stream, cap, where, "zip member")
    except EEGKitError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError) as error:
        raise EEGKitError(f"{where}: unreadable zip member ({type(error).__name__}: {error})") from None


# --------------------------------------------------------------------------- .npy headers (also used by util.npy)
def parse_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at the stream's position (ValueError if bad).

    The kit's one ``.npy`` header parser (`util.npy.read_npy_header` and `NpzReader` use it); the
    shape is as written: check it with `array_nbytes` before allocating anything.
    """
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy version {version}")


def array_nbytes(shape: tuple, dtype: np.dtype, where: str, cap: int | None = None, what: str = "array") -> int:
    """Bytes of a ``shape`` x ``dtype`` array as its header declares it, in exact integers.

    Refused with one line naming ``where``: a negative or non-integer dimension, and (``cap`` given)
    a size beyond ``cap``; so ``(2**70,)`` or ``(2**63, 64)`` is refused before anything is allocated
    or any int64 product can wrap around.
    """
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise EEGKitError(f"{where}: invalid shape {shape!r} in the .npy header")
    if any(n < 0 for n in shape):
        raise EEGKitError(f"{where}: negative dimension in the .npy header (shape {shape})")
    nbytes = math.prod(shape) * dtype.itemsize
    if cap is not None and nbytes > cap:
        raise EEGKitError(f"{where}: declares a {_shape_text(shape)} {dtype} {what} ({nbytes} bytes), beyond the "
                          f"{cap_text(cap)} cap")
    return nbytes


def _shape_text(shape: tuple) -> str:
    text = str(shape)
    return text if len(text) <= 80 else text[:77] + "..."


def read_array_into(stream, shape: tuple, dtype: np.dtype, fortran: bool, nbytes: int, where: str) -> np.ndarray:
    """Read ``nbytes`` of ``stream`` straight into a new array (no second copy); refused when truncated."""
    try:
        array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    except MemoryError:
        raise out_of_memory(where, nbytes) from None
    if nbytes == 0:
        return array
    view = memoryview(array.reshape(-1, order="A").view(np.uint8))  # the array's own bytes, in memory order
    got = 0
    while got < nbytes:
        n = stream.readinto(view[got:min(nbytes, got + _CHUNK)])
        if not n:
            break
        got += n
    if got != nbytes:
        raise EEGKitError(f"{where}: truncated (has {got} of {nbytes} bytes)")
    return array


class NpzReader:
    """An ``.npz`` read member by member without pickle, each member capped (declared and streamed).

    ``NpzReader(path_or_bytes_or_file, where)``; ``.files`` lists the keys (without ``.npy``);
    ``reader[key]`` returns the array (refusing object arrays with one line). Use as a context manager.
    A path is opened by `open_regular` (no FIFO, no device); a member name given twice (also ``x``
    beside ``x.npy``), an encrypted member, a compression method other than stored/deflated and a
    header whose shape is negative or too large are refused; so is reading more than
    `MAX_ZIP_TOTAL_BYTES` from one archive in all.
    """

    def __init__(self, source: str | Path | bytes | BinaryIO, where: str | None = None, cap: int | None = None):
        self.where = str(where if where is not None else source)
        self.cap = MAX_INFLATED_BYTES if cap is None else cap
        self._total = 0
        self._zip = open_zip(source, self.where, what=".npz file")
        self._members: dict[str, str] = {}
        for name in self._zip.namelist():
            key = name[:-4] if name.endswith(".npy") else name
            if key in self._members:
                self._zip.close()
                raise EEGKitError(f"{self.where}: entry {key!r} appears twice ({self._members[key]!r} and {name!r}); "
                                  f"which one counts?")
            self._members[key] = name
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
        check_zip_member(info, where)
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
                nbytes = array_nbytes(shape, dtype, where, self.cap, "array for an .npz member")
                if self._total + nbytes > MAX_ZIP_TOTAL_BYTES:
                    raise EEGKitError(f"{self.where}: its members hold more than {cap_text(MAX_ZIP_TOTAL_BYTES)} "
                                      f"together, beyond the cap for one .npz")
                array = read_array_into(stream, shape, dtype, fortran, nbytes, where)
        except EEGKitError:
            raise
        except MemoryError:
            raise out_of_memory(where) from None
        except (ValueError, TypeError, OSError, EOFError, SyntaxError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, RuntimeError) as error:
            raise EEGKitError(f"{where}: unreadable array ({type(error).__name__}: {error})") from None
        self._total += nbytes
        return array


# --------------------------------------------------------------------------- JSON
def _strict_object(where: str):
    def build(pairs: list) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            seen = set()
            for key, _ in pairs:
                if key in seen:
                    raise EEGKitError(f"{where}: key {_short(key)!r} appears twice in one JSON object "
                                      f"(which value counts?)")
                seen.add(key)
        return obj
    return build


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _bounded_int(where: str):
    def parse(text: str) -> int:
        digits = len(text) - (text[0] == "-")
        if digits > MAX_JSON_INT_DIGITS or not -(1 << 63) <= int(text) < (1 << 63):
            raise EEGKitError(f"{where}: integer {_short(text, 24)} ({digits} digits) is beyond the 64-bit range")
        return int(text)
    return parse


def json_parse_bytes(data: bytes | str) -> int:
    """An upper estimate of the memory that parsing ``data`` takes: Python builds one object per value
    (a float is 24 bytes plus 8 for its list slot), per key and per list or object, so dense text such as
    ``[0.0,0.0,...]`` takes about 12 times its own size and ``{"k1":0,"k2":0,...}`` about 15 times.
    Counted from the separators (a ``:`` or ``,`` inside a string only makes the estimate larger)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    items, keys = data.count(b",") + 1, data.count(b":")
    containers = data.count(b"[") + data.count(b"{")
    return len(data) + items * _JSON_ITEM_BYTES + keys * _JSON_KEY_BYTES + containers * _JSON_CONTAINER_BYTES


def parse_json(data: bytes | str, where: str) -> Any:
    """Parse JSON text strictly; one line naming ``where`` for malformed text, bad UTF-8, too deep
    nesting, a key given twice in one object, an integer beyond the 64-bit range, and text whose
    parsed objects would take more than `MAX_JSON_PARSE_BYTES` (estimated before parsing)."""
    need = json_parse_bytes(data)
    if need > MAX_JSON_PARSE_BYTES:
        amount = f"{need / GiB:.1f} GiB" if need >= GiB // 10 else f"{need / (1 << 20):.1f} MiB"
        raise EEGKitError(f"{where}: parsing it would take about {amount} of memory (one Python object "
                          f"per value), beyond the {cap_text(MAX_JSON_PARSE_BYTES)} cap for one JSON text")
    try:
        return json.loads(data, object_pairs_hook=_strict_object(where), parse_int=_bounded_int(where))
    except RecursionError:
        raise EEGKitError(f"{where}: JSON nested too deeply to read") from None
    except MemoryError:
        raise out_of_memory(where, len(data)) from None
    except UnicodeDecodeError as error:
        raise EEGKitError(f"{where}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise EEGKitError(f"{where}: invalid JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    except ValueError as error:  # e.g. an integer too long to convert
        raise EEGKitError(f"{where}: invalid JSON ({str(error).splitlines()[0]})") from None


def read_json(path: str | Path, cap: int | None = None) -> Any:
    """Read and parse a JSON file strictly (`parse_json`): a regular file (`open_regular`: no FIFO, no
    device), refused beyond ``cap`` (default `MAX_JSON_BYTES`) before and while it is read."""
    path = Path(path)
    cap = MAX_JSON_BYTES if cap is None else cap
    data = read_regular(path, cap, "JSON file")
    if not data:
        raise EEGKitError(f"{path}: empty file (expected JSON)")
    return parse_json(data, str(path))


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
