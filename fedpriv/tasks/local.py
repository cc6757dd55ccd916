"""A deployed client's own data: a directory of ``.npz`` files with ``x`` and ``y``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedpriv.tasks.data import ArrayDataset

__all__ = ["LocalDataError", "load_npz_dir"]


class LocalDataError(ValueError):
    """The local data directory is missing, empty or malformed."""


def _first_bad(mask: np.ndarray) -> str:
    index = tuple(int(i) for i in np.argwhere(mask)[0])
    return f"index {index}" if len(index) > 1 else f"index {index[0]}"


def load_npz_dir(
    path: str | Path, *, feature_shape: tuple[int, ...], num_classes: int,
    feature_range: tuple[float, float] | None = None,
) -> ArrayDataset:
    """Load and concatenate every ``*.npz`` in ``path`` (sorted by name).

    Each file holds ``x`` (``(n, *feature_shape)`` numbers) and ``y`` (``(n,)``
    integer labels in ``[0, num_classes)``). Files are opened with
    ``allow_pickle=False``: a data file can never execute code. Features must be finite
    and, when the task fixes ``feature_range``, inside it (raw 0..16 digit pixels are
    refused, not silently trained on); an empty file is refused.

    Raises
    ------
    LocalDataError
        Naming the file and what is wrong with it.
    """
    root = Path(path)
    if not root.is_dir():
        raise LocalDataError(f"data-dir {str(root)!r} is not a directory")
    files = sorted(root.glob("*.npz"))
    if not files:
        raise LocalDataError(f"data-dir {str(root)!r} holds no .npz files")
    xs, ys = [], []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as npz:
                missing = {"x", "y"} - set(npz.files)
                if missing:
                    raise LocalDataError(
                        f"{f}: missing array(s) {sorted(missing)}; found {sorted(npz.files)}"
                    )
                x, y = npz["x"], npz["y"]
        except (OSError, ValueError) as err:
            if isinstance(err, LocalDataError):
                raise
            raise LocalDataError(f"{f}: not a readable .npz file ({err})") from err
        if tuple(x.shape[1:]) != feature_shape or x.shape[0] != y.shape[0] or y.ndim != 1:
            raise LocalDataError(
                f"{f}: expected x of shape (n, {', '.join(map(str, feature_shape))}) and y "
                f"of shape (n,), got x {x.shape} and y {y.shape}"
            )
        if not np.issubdtype(x.dtype, np.number):
            raise LocalDataError(f"{f}: x must be numeric, got dtype {x.dtype}")
        if x.shape[0] == 0:
            raise LocalDataError(f"{f}: holds no examples (x has 0 rows)")
        finite = np.isfinite(x)
        if not finite.all():
            bad = ~finite
            raise LocalDataError(
                f"{f}: array x has {int(bad.sum())} non-finite value(s) (NaN or inf), "
                f"the first at {_first_bad(bad)}")
        if feature_range is not None:
            lo, hi = feature_range
            out = (x < lo) | (x > hi)
            if out.any():
                raise LocalDataError(
                    f"{f}: array x must lie in [{lo:g}, {hi:g}] for this task, got "
                    f"{float(x[out].flat[0]):g} at {_first_bad(out)} (range [{float(x.min()):g}, "
                    f"{float(x.max()):g}]; scale raw pixels first)")
        if not np.issubdtype(y.dtype, np.integer):
            raise LocalDataError(f"{f}: y must be integer labels, got dtype {y.dtype}")
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise LocalDataError(
                f"{f}: labels must be in [0, {num_classes}), got range "
                f"[{int(y.min())}, {int(y.max())}]"
            )
        xs.append(x.astype(np.float32))
        ys.append(y.astype(np.int64))
    return ArrayDataset(np.concatenate(xs), np.concatenate(ys))
