"""Fashion-MNIST: 60,000 + 10,000 28x28 grey images of clothing, 10 classes, from IDX files.

Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for Benchmarking
Machine Learning Algorithms" (arXiv:1708.07747); Zalando SE, MIT licence. Nothing is
downloaded: the four IDX files are read from a directory, by default where Debian's
``dataset-fashion-mnist`` installs them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpriv.config import ConfigError
from fedpriv.tasks.data import ArrayDataset, DataFileError, TaskData
from fedpriv.tasks.idx import read_idx

__all__ = ["DEFAULT_DIR", "FILES", "HOW_TO_GET", "find_idx_files", "load_fashion_mnist"]

#: Where Debian's ``dataset-fashion-mnist`` puts the files (``dpkg -L``).
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The four files, by role, as the Fashion-MNIST repository names them (``.gz`` optional).
FILES: dict[str, str] = {
    "train-images": "train-images-idx3-ubyte",
    "train-labels": "train-labels-idx1-ubyte",
    "test-images": "t10k-images-idx3-ubyte",
    "test-labels": "t10k-labels-idx1-ubyte",
}
HOW_TO_GET = (
    "get Fashion-MNIST with `make data`, or `apt-get install dataset-fashion-mnist` "
    f"(Debian; installs to {DEFAULT_DIR}/), or download the four files from "
    "https://github.com/zalandoresearch/fashion-mnist (data/fashion/) into a directory "
    "and set dataset-dir to it"
)
_SIDE = 28
_NUM_CLASSES = 10


def find_idx_files(directory: str | Path) -> dict[str, Path]:
    """The path of each of the four files in ``directory`` (plain name first, then ``.gz``).

    Raises
    ------
    ConfigError
        On key ``dataset-dir``, naming the directory, every missing file and how to get
        them.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError("dataset-dir", f"{str(root)!r} is not a directory; {HOW_TO_GET}")
    found: dict[str, Path] = {}
    missing: list[str] = []
    for role, name in FILES.items():
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                found[role] = candidate
                break
        else:
            missing.append(f"{name}(.gz)")
    if missing:
        raise ConfigError(
            "dataset-dir", f"{str(root)!r} lacks {', '.join(missing)}; {HOW_TO_GET}"
        )
    return found


def load_fashion_mnist(directory: str | Path = "") -> TaskData:
    """Load Fashion-MNIST's official split: the server evaluates on the 10,000 test images.

    Pixels (0..255) are scaled to [0, 1] as float32; features are flat ``(784,)`` rows
    (the CNN reshapes them to ``(1, 28, 28)``), like digits'. ``test-fraction`` does not
    apply: the split is the published one.

    Parameters
    ----------
    directory : str or Path
        The directory holding the four IDX files; empty: :data:`DEFAULT_DIR`.

    Raises
    ------
    ConfigError
        On key ``dataset-dir``: a missing directory or file (with how to get them), or a
        malformed file (named, with what is wrong).
    """
    files = find_idx_files(directory or DEFAULT_DIR)
    try:
        train = _read_pair(files["train-images"], files["train-labels"])
        test = _read_pair(files["test-images"], files["test-labels"])
    except DataFileError as err:
        raise ConfigError("dataset-dir", f"{err}; {HOW_TO_GET}") from err
    return TaskData(train=train, test=test, num_classes=_NUM_CLASSES,
                    feature_range=(0.0, 1.0))


def _read_pair(images_path: Path, labels_path: Path) -> ArrayDataset:
    images = read_idx(images_path, ndim=3)  # (n, 28, 28)
    labels = read_idx(labels_path, ndim=1)  # (n,)
    if images.dtype != np.uint8 or images.shape[1:] != (_SIDE, _SIDE):
        raise DataFileError(
            f"{images_path}: expected uint8 images of n x {_SIDE} x {_SIDE}, got "
            f"{images.dtype} of {'x'.join(map(str, images.shape))}"
        )
    if labels.dtype != np.uint8:
        raise DataFileError(f"{labels_path}: expected uint8 labels, got {labels.dtype}")
    if len(labels) != len(images):
        raise DataFileError(
            f"{labels_path}: {len(labels)} labels, but {images_path.name} holds "
            f"{len(images)} images"
        )
    if len(labels) == 0:
        raise DataFileError(f"{images_path}: holds no images")
    if int(labels.max()) >= _NUM_CLASSES:
        raise DataFileError(
            f"{labels_path}: labels must be in [0, {_NUM_CLASSES}), got {int(labels.max())}"
        )
    x = images.reshape(len(images), _SIDE * _SIDE).astype(np.float32)  # (n, 784)
    x /= 255.0
    return ArrayDataset(x, labels.astype(np.int64))
