"""L2 clipping of a client's update (McMahan et al. 2018, Algorithm 1, ``ClipFn``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["clip_by_l2", "l2_norm"]


def l2_norm(arrays: Sequence[np.ndarray]) -> float:
    """The L2 norm of all ``arrays`` taken together as one flat vector."""
    return float(np.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays)))


def clip_by_l2(arrays: Sequence[np.ndarray], clip: float
               ) -> tuple[list[np.ndarray], float, bool]:
    """Scale ``arrays`` by ``min(1, C / ||Delta||)``.

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        The update Delta, one array per parameter.
    clip : float
        C (> 0).

    Returns
    -------
    clipped : list of numpy.ndarray
        Delta * min(1, C / ||Delta||); a zero update is returned unchanged (no division).
    norm : float
        ||Delta|| before clipping.
    unclipped : bool
        ``||Delta|| <= C``: Andrew et al. 2021's indicator b.
    """
    if not clip > 0 or not np.isfinite(clip):
        raise ValueError(f"clip must be in (0, inf), got {clip!r}")
    norm = l2_norm(arrays)
    if not np.isfinite(norm):
        raise ValueError("update has a non-finite norm (NaN or inf values)")
    if norm <= clip:
        return [np.array(a, copy=True) for a in arrays], norm, True
    scale = clip / norm
    return [(np.asarray(a) * scale).astype(np.asarray(a).dtype) for a in arrays], norm, False
