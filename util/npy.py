"""The one place that reads the ``.npy`` format by hand: header parsing and row ranges by ``os.pread``.

`read_npy_header(path) -> NpyFile` reads only the header; `NpyFile.read_rows` reads a row range
without loading (or memory-mapping) the file, so RAM use does not grow with the dataset.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from util.errors import EEGKitError

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
        if self.fortran_order:
            mapped = np.load(self.path, mmap_mode="r")
            out = np.array(mapped[start:start + length], dtype=np.float32).reshape(length, self.n_cols)
            del mapped
            return out
        nbytes = length * self.row_bytes
        fd = os.open(self.path, os.O_RDONLY)
        try:
            buf = os.pread(fd, nbytes, self.offset + start * self.row_bytes)
        finally:
            os.close(fd)
        if len(buf) != nbytes:
            raise EEGKitError(f"{self.path}: truncated .npy (expected {nbytes} bytes at row {start}, got {len(buf)})")
        return np.frombuffer(buf, dtype=self.dtype).reshape(length, self.n_cols).astype(np.float32)

    def iter_chunks(self, start: int, stop: int):
        """Yield float64 chunks ``(rows, n_cols)`` covering rows ``[start, stop)``."""
        rows_per_chunk = max(1, _CHUNK_BYTES // max(1, self.row_bytes))
        for chunk_start in range(start, stop, rows_per_chunk):
            n = min(rows_per_chunk, stop - chunk_start)
            yield self.read_rows(chunk_start, n).astype(np.float64)


def parse_header(stream) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the ``.npy`` header at the stream's position (ValueError if bad)."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(stream)
    if version in ((2, 0), (3, 0)):
        return np.lib.format.read_array_header_2_0(stream)
    raise ValueError(f"unsupported .npy version {version}")


def read_npy_header(path: Path) -> NpyFile:
    """Parse the header of ``path``; EEGKitError if it is missing, corrupt or truncated."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            shape, fortran_order, dtype = parse_header(f)
            offset = f.tell()
    except FileNotFoundError:
        raise EEGKitError(f"{path}: file not found") from None
    except (ValueError, OSError, SyntaxError, EOFError) as exc:
        raise EEGKitError(f"{path}: unreadable .npy file ({exc})") from None
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise EEGKitError(f"{path}: holds complex numbers (dtype {dtype}), expected real values")
    if dtype.hasobject or dtype.kind not in "fiu":
        raise EEGKitError(f"{path}: unsupported dtype {dtype} (expected a numeric array)")
    if len(shape) not in (1, 2):
        raise EEGKitError(f"{path}: expected a 1-D or 2-D array, found shape {shape}")
    npy = NpyFile(path, tuple(int(s) for s in shape), dtype, bool(fortran_order), int(offset))
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual < expected:
        raise EEGKitError(f"{path}: truncated .npy file ({actual} bytes, header promises {expected})")
    return npy
