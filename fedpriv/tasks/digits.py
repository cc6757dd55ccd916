"""scikit-learn's handwritten digits: 1,797 8x8 images, 10 classes, shipped offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpriv.tasks.data import TaskData, package_dir, stratified_split

__all__ = ["load_digits"]


def load_digits(*, test_fraction: float, seed: int) -> TaskData:
    """Load the digits and split off a stratified held-out test set.

    Pixels (0..16) are scaled to [0, 1]; features are flat ``(64,)`` vectors
    (the CNN reshapes them to ``(1, 8, 8)``).

    Parameters
    ----------
    test_fraction : float
        Fraction held out for the server's evaluation, in (0, 1).
    seed : int
        Seed of the split.
    """
    table = np.loadtxt(_digits_file(), delimiter=",")  # (1797, 65): pixels, then label
    x = (table[:, :-1] / 16.0).astype(np.float32)  # (1797, 64)
    y = table[:, -1].astype(np.int64)  # (1797,)
    return stratified_split(x, y, test_fraction=test_fraction, seed=seed, num_classes=10)


def _digits_file() -> Path:
    """scikit-learn's own ``datasets/data/digits.csv.gz``, found without importing it.

    ``sklearn.datasets.load_digits`` reads this file with ``np.loadtxt`` (pixels, then the
    label, per row); importing scikit-learn to do the same costs ~3 CPU-seconds in every
    client process. A test checks the two agree.
    """
    root = package_dir("sklearn")
    if root is None:
        raise ModuleNotFoundError("digits ships with scikit-learn: pip install scikit-learn")
    return root / "datasets" / "data" / "digits.csv.gz"
