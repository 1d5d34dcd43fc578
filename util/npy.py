"""The one place that reads the ``.npy`` format by hand: header parsing and row ranges by ``os.pread``.

`read_npy_header(path) -> NpyFile` reads only the header; `NpyFile.read_rows` reads a row range
without loading (or memory-mapping) the file, so RAM use does not grow with the dataset.
`load_npy(path)` reads a whole array (no pickle) under `util.inputs.MAX_ARRAY_BYTES`.

Every open goes through `util.inputs.open_regular` (a FIFO or a device such as ``/dev/zero`` is
refused with one line, never read), the header's shape is checked in exact integers before
anything is allocated (negative or overflowing dimensions are refused), and the data the header
promises must be in the file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from util.errors import EEGKitError
from util.inputs import array_nbytes, open_regular, out_of_memory, parse_header, read_array_into

__all__ = ["NpyFile", "read_npy_header", "load_npy", "parse_header"]

_CHUNK_BYTES = 8 * 1024 * 1024  # bytes read per chunk for statistics


@dataclass(frozen=True)
class NpyFile:
    """Header of one ``.npy`` file: enough to read row ranges without loading it."""

    path: Path
    shape: tuple
    dtype: np.dtype
    fortran_order: bool
    offset: int  # byte offset of the data

    @property
    def n_rows(self) -> int:
        return int(self.shape[0])

    @property
    def n_cols(self) -> int:
        return 1 if len(self.shape) == 1 else int(self.shape[1])

    @property
    def row_bytes(self) -> int:
        return self.n_cols * self.dtype.itemsize

    def read_rows(self, start: int, length: int) -> np.ndarray:
        """Rows ``[start, start+length)`` as float32 ``(length, n_cols)``; nothing stays resident."""
        if start < 0 or length < 0 or start + length > self.n_rows:
            raise EEGKitError(f"{self.path}: rows {start}..{start + length} out of range (file has {self.n_rows})")
        try:
            with open_regular(self.path, None, ".npy file") as handle:
                if self.fortran_order:  # columns are contiguous: map the file, copy the rows out
                    mapped = np.memmap(handle, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape,
                                       order="F")
                    out = np.array(mapped[start:start + length], dtype=np.float32).reshape(length, self.n_cols)
                    del mapped
                    return out
                nbytes = length * self.row_bytes
                buf = os.pread(handle.fileno(), nbytes, self.offset + start * self.row_bytes)
        except MemoryError:
            raise out_of_memory(str(self.path), length * self.row_bytes) from None
        if len(buf) != nbytes:
            raise EEGKitError(f"{self.path}: truncated .npy (expected {nbytes} bytes at row {start}, got {len(buf)})")
        return np.frombuffer(buf, dtype=self.dtype).reshape(length, self.n_cols).astype(np.float32)

    def iter_chunks(self, start: int, stop: int):
        """Yield float64 chunks ``(rows, n_cols)`` covering rows ``[start, stop)``."""
        rows_per_chunk = max(1, _CHUNK_BYTES // max(1, self.row_bytes))
        for chunk_start in range(start, stop, rows_per_chunk):
            n = min(rows_per_chunk, stop - chunk_start)
            yield self.read_rows(chunk_start, n).astype(np.float64)


def _open_npy(path: Path, max_bytes: int | None, handle_fn, unreadable: str = "unreadable .npy file"):
    """Open ``path`` (`open_regular`), parse its header and call ``handle_fn(handle, shape, fortran, dtype,
    offset, size)`` while it is open; one line naming the file for a corrupt header (``unreadable (why)``)."""
    with open_regular(path, max_bytes, ".npy file") as handle:
        try:
            shape, fortran_order, dtype = parse_header(handle)
            dtype = np.dtype(dtype)
        except (ValueError, OSError, SyntaxError, EOFError, TypeError) as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise EEGKitError(f"{path}: {unreadable} ({why})") from None
        offset = handle.tell()
        size = os.fstat(handle.fileno()).st_size
        return handle_fn(handle, shape, bool(fortran_order), dtype, offset, size)


def _check_complete(path: Path, shape: tuple, dtype: np.dtype, offset: int, size: int, cap: int | None,
                    truncated: str = "truncated .npy file ({size} bytes, header promises {need})") -> int:
    nbytes = array_nbytes(shape, dtype, str(path), cap)
    if size < offset + nbytes:
        raise EEGKitError(f"{path}: " + truncated.format(size=size, need=offset + nbytes))
    return nbytes


def read_npy_header(path: Path) -> NpyFile:
    """Parse the header of ``path``; EEGKitError if it is missing, not a regular file, corrupt or truncated."""
    path = Path(path)

    def header(handle, shape, fortran_order, dtype, offset, size):
        if dtype.kind == "c":
            raise EEGKitError(f"{path}: holds complex numbers (dtype {dtype}), expected real values")
        if dtype.hasobject or dtype.kind not in "fiu":
            raise EEGKitError(f"{path}: unsupported dtype {dtype} (expected a numeric array)")
        if len(shape) not in (1, 2):
            raise EEGKitError(f"{path}: expected a 1-D or 2-D array, found shape {shape}")
        _check_complete(path, shape, dtype, offset, size, None)
        return NpyFile(path, tuple(int(s) for s in shape), dtype, fortran_order, int(offset))

    return _open_npy(path, None, header)


def load_npy(path: str | Path, cap: int | None = None) -> np.ndarray:
    """The whole array of an ``.npy`` file, without pickle (object arrays refused), read into one buffer.

    Refused with one line naming the file: not a regular file, more than ``cap`` bytes (default
    `util.inputs.MAX_ARRAY_BYTES`) on disk or declared by the header, a negative or overflowing shape,
    and a file shorter than its header promises. Content checks (dtype, shape, finite) are the
    caller's (`util.inputs.check_array`).
    """
    from util import inputs

    path = Path(path)
    cap = inputs.MAX_ARRAY_BYTES if cap is None else cap

    def load(handle, shape, fortran_order, dtype, offset, size):
        if dtype.hasobject:
            raise EEGKitError(f"{path}: not a readable .npy array (an object array; pickle is never used)")
        nbytes = _check_complete(path, shape, dtype, offset, size, cap, 
                                 "not a readable .npy array (truncated: {size} bytes, the header promises {need})")
        return read_array_into(handle, shape, dtype, fortran_order, nbytes, str(path))

    return _open_npy(path, cap + (1 << 20), load, "not a readable .npy array")
