"""A reader and writer for the IDX format of MNIST and Fashion-MNIST (numpy only).

An IDX file (LeCun et al., http://yann.lecun.com/exdb/mnist/, "FILE FORMATS") is a
4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32
dimensions, then the values, big-endian, in C order. The files may be gzipped (as
Fashion-MNIST and Debian ship them); the reader tells by the gzip signature, not the
file name.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fedpriv.tasks.data import DataFileError

__all__ = ["IDX_TYPES", "read_idx", "write_idx"]

#: IDX type byte -> numpy dtype (big-endian, as stored).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_SIGNATURE = b"\x1f\x8b"


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (plain or gzipped) into a native-endian array.

    Parameters
    ----------
    path : str or Path
        The file.
    ndim : int, optional
        The number of dimensions the caller expects (3 for images, 1 for labels).

    Returns
    -------
    numpy.ndarray
        Shape ``(d_1, ..., d_ndim)`` from the header; dtype from its type byte.

    Raises
    ------
    DataFileError
        Naming the file: unreadable or corrupt gzip, a bad magic number, an unknown type
        byte, an unexpected number of dimensions, or a size that is not exactly the
        header plus ``prod(dims)`` values.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataFileError(f"{path}: {len(raw)} bytes, too short for an IDX header (4)")
    if raw[0] != 0 or raw[1] != 0:
        raise DataFileError(
            f"{path}: bad IDX magic number 0x{raw[:4].hex()} (must start with 0x0000)"
        )
    type_code, n_dims = raw[2], raw[3]
    dtype = IDX_TYPES.get(type_code)
    if dtype is None:
        known = ", ".join(f"0x{c:02x}" for c in IDX_TYPES)
        raise DataFileError(
            f"{path}: IDX type byte must be one of {{{known}}}, got 0x{type_code:02x}"
        )
    if n_dims == 0 or (ndim is not None and n_dims != ndim):
        want = f"{ndim}" if ndim is not None else "at least 1"
        raise DataFileError(f"{path}: IDX header has {n_dims} dimensions, expected {want}")
    header = 4 + 4 * n_dims
    if len(raw) < header:
        raise DataFileError(
            f"{path}: {len(raw)} bytes, too short for an IDX header with {n_dims} "
            f"dimensions ({header})"
        )
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=n_dims, offset=4))
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataFileError(
            f"{path}: {len(raw)} bytes (decompressed), but its header "
            f"{'x'.join(map(str, dims))} of {dtype.name} needs exactly {expected}"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return values.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzipped when ``compress`` or the name ends ``.gz``).

    The inverse of :func:`read_idx`, for tests and for users converting their own data.

    Raises
    ------
    ValueError
        When the dtype has no IDX type byte or the array is 0-dimensional.
    """
    path = Path(path)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        allowed = ", ".join(sorted(dt.name for dt in codes))
        raise ValueError(f"array dtype must be one of {{{allowed}}}, got {array.dtype}")
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"array must have 1 to 255 dimensions, got {array.ndim}")
    body = (bytes([0, 0, code, array.ndim])
            + np.asarray(array.shape, dtype=">u4").tobytes()
            + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes())
    if compress if compress is not None else path.name.endswith(".gz"):
        body = gzip.compress(body, mtime=0)
    path.write_bytes(body)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataFileError(f"{path}: cannot read ({err.strerror or err})") from err
    if raw[:2] != _GZIP_SIGNATURE:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DataFileError(f"{path}: corrupt gzip data ({err})") from err
