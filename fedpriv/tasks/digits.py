"""scikit-learn's handwritten digits: 1,797 8x8 images, 10 classes, shipped offline."""

from __future__ import annotations

import numpy as np

from fedpriv.tasks.data import TaskData, stratified_split

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
    from sklearn.datasets import load_digits as _sk_load_digits  # ~1 s: only when used

    bunch = _sk_load_digits()
    x = (bunch.data / 16.0).astype(np.float32)  # (1797, 64)
    y = bunch.target.astype(np.int64)  # (1797,)
    return stratified_split(x, y, test_fraction=test_fraction, seed=seed, num_classes=10)
