"""L2 clipping of a client's update (McMahan et al. 2018, Algorithm 1, ``ClipFn``).

Updates travel as lists of numpy arrays (one per parameter tensor), so clipping works on
numpy arrays; a torch tensor is clipped after ``.numpy()``. The norm is the L2 norm of
all arrays taken together as one flat vector, accumulated in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["clip_by_l2", "l2_norm"]


def l2_norm(arrays: Sequence[np.ndarray]) -> float:
    """``||Delta||_2`` of all ``arrays`` taken together as one flat vector (float64)."""
    total = sum(float(np.sum(np.square(np.asarray(a), dtype=np.float64))) for a in arrays)
    return float(np.sqrt(total))


def _scaled(arrays: Sequence[np.ndarray], scale: float) -> list[np.ndarray]:
    out = []
    for a in arrays:
        a = np.asarray(a)
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float64)
        out.append((a.astype(np.float64) * scale).astype(dtype))
    return out


def clip_by_l2(arrays: Sequence[np.ndarray], clip: float
               ) -> tuple[list[np.ndarray], float, bool]:
    """Scale the update by ``min(1, C / ||Delta||)``.

    McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models"
    (ICLR), Algorithm 1, ``ClipFn``: ``Delta * min(1, C / ||Delta||)``, which bounds each
    client's contribution to the sum (its L2 sensitivity) by ``C``.

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        The update Delta, one array per parameter. Floating arrays keep their dtype;
        others come back as float64.
    clip : float
        C, in (0, inf).

    Returns
    -------
    clipped : list of numpy.ndarray
        New arrays, ``Delta * min(1, C / ||Delta||)``, with ``||clipped|| <= C`` even after
        rounding to a narrow dtype; a zero update comes back as zeros (no division).
    norm : float
        ``||Delta||`` before clipping.
    unclipped : bool
        ``||Delta|| <= C``: the indicator ``b`` of Andrew et al. 2021, Algorithm 1, that
        adaptive clipping counts (True when the update was *not* clipped).

    Raises
    ------
    ValueError
        For C outside (0, inf) or an update with NaN or infinite values.
    """
    if not clip > 0 or not np.isfinite(clip):
        raise ValueError(f"clip must be in (0, inf), got {clip!r}")
    norm = l2_norm(arrays)
    if not np.isfinite(norm):
        raise ValueError("update must have a finite norm, got NaN or inf values")
    if norm <= clip:
        return _scaled(arrays, 1.0), norm, True
    scale = clip / norm
    clipped = _scaled(arrays, scale)
    # Rounding to float32/float16 can land a hair above C: shrink until it does not.
    for _ in range(8):
        after = l2_norm(clipped)
        if after <= clip:
            break
        scale *= (clip / after) * (1 - 1e-3)
        clipped = _scaled(arrays, scale)
    return clipped, norm, False
