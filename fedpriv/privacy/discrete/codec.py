"""Client-side encoding and server-side decoding of a distributed-DP secure sum.

KLS21 (arXiv:2102.06387), Algorithm 1 and Algorithm 2, and AKL21 (arXiv:2110.04995),
Algorithm 1, with fedpriv's symbols (:mod:`fedpriv.privacy.discrete.params`):

client u:  x = clip_C(Delta_u) -> U x (rotate, pad to d') -> gamma U x (scale)
           -> round, conditionally on ||.||_2 <= Delta_2 -> + z_u (its noise share)
           -> mod 2^b  (uint64 in [0, 2^b): what secure aggregation masks and sums)
server:    sum mod 2^b -> centre into [-2^(b-1), 2^(b-1)) -> / gamma -> U^-1
           -> first d coordinates -> / n  (the estimate of the mean of the clipped updates)

Error statement (n summed clients, no wrap-around): the decoded mean equals
``mean_u clip_C(Delta_u) + U^-1 (sum_u r_u + sum_u z_u) / (n gamma)`` restricted to the
first d coordinates, where ``r_u`` is client u's rounding error. So

- without noise, ``||decoded - mean|| < sqrt(d') / gamma`` always
  (:meth:`DistributedDpParams.mean_error_bound`), with RMS about ``sqrt(d' / (4 n)) /
  gamma``, and the decoded sum is unbiased up to the conditional-rounding bias (at most
  ``p / (1 - p) sqrt(d') / gamma`` per client, p the rejection probability <= beta);
- the noise adds, per coordinate, zero-mean error of standard deviation
  ``sqrt(n V) / (n gamma)`` (:meth:`DistributedDpParams.mean_noise_std`);
- with probability at most :meth:`DistributedDpParams.wrap_probability` some coordinate
  wraps and the decoded value there is off by a multiple of ``2^b / (n gamma)``.
"""

from __future__ import annotations

import numpy as np

from fedpriv.privacy.discrete.discrete_gaussian import discrete_gaussian
from fedpriv.privacy.discrete.params import DistributedDpParams
from fedpriv.privacy.discrete.rotation import rotate, unrotate
from fedpriv.privacy.discrete.rounding import conditional_round
from fedpriv.privacy.discrete.skellam import skellam
from fedpriv.privacy.discrete.uniform import SecureUniforms, UniformSource
from fedpriv.privacy.events import Mechanism

__all__ = ["add_mod", "centre_mod", "decode", "encode", "noise_share"]


def _mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def noise_share(params: DistributedDpParams, source: UniformSource) -> np.ndarray:
    """One client's noise share: d' draws of Sk(V/2, V/2) or N_Z(0, V), int64."""
    shape = (params.padded_dimension,)
    if params.local_variance == 0:
        return np.zeros(shape, dtype=np.int64)
    if params.mechanism is Mechanism.SKELLAM_SUM:
        return skellam(shape, params.local_variance / 2, source)
    return discrete_gaussian(shape, float(np.sqrt(params.local_variance)), source)


def encode(flat_update: np.ndarray, params: DistributedDpParams, rotation_seed: bytes,
           rng: np.random.Generator, *, source: UniformSource | None = None,
           max_tries: int = 100) -> np.ndarray:
    """Clip, rotate, scale, round, add the noise share, reduce mod 2^b.

    Parameters
    ----------
    flat_update : numpy.ndarray
        The client's update, 1-D of length ``params.dimension``, finite.
    params : DistributedDpParams
        The round's parameters (the same for every client).
    rotation_seed : bytes
        The round's public rotation seed (the same for every client).
    rng : numpy.random.Generator
        Coins of the randomised rounding (need not be secret).
    source : UniformSource, optional
        Uniforms for the noise share; default a fresh
        :class:`~fedpriv.privacy.discrete.uniform.SecureUniforms` (OS entropy). Pass a
        ``SeededUniforms`` only for reproducible research runs.
    max_tries : int
        Cap on conditional-rounding retries.

    Returns
    -------
    numpy.ndarray
        uint64 array of length d', every value in [0, 2^b).

    Raises
    ------
    ValueError
        For a wrong shape or non-finite values, or (practically never) a rounding that
        keeps exceeding Delta_2.
    """
    x = np.asarray(flat_update, dtype=np.float64)
    if x.shape != (params.dimension,):
        raise ValueError(f"flat_update must have shape ({params.dimension},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("flat_update must be finite, got NaN or inf")
    norm = float(np.linalg.norm(x))
    if norm > params.clip:  # a zero or short update is left as it is
        x = x * (params.clip / norm)
    y = params.scale * rotate(x, rotation_seed)  # (d',)
    rounded, _ = conditional_round(y, params.l2_sensitivity, rng, max_tries=max_tries)
    z = noise_share(params, SecureUniforms() if source is None else source)  # (d',)
    total = rounded + z  # int64: |values| < 2^62 + 37 sigma
    return total.astype(np.uint64) & _mask(params.bits)  # two's complement, then mod 2^b


def add_mod(encodings: np.ndarray, bits: int) -> np.ndarray:
    """The sum mod 2^b of encodings stacked along axis 0 (what secure aggregation yields)."""
    arr = np.asarray(encodings, dtype=np.uint64)
    if arr.ndim != 2:
        raise ValueError(f"encodings must be 2-D (clients, d'), got shape {arr.shape}")
    if not 2 <= bits <= 64:
        raise ValueError(f"bits must be in [2, 64], got {bits!r}")
    return np.bitwise_and(arr.sum(axis=0, dtype=np.uint64), _mask(bits))  # mod 2^64, 2^b


def centre_mod(values: np.ndarray, bits: int) -> np.ndarray:
    """Read values mod 2^b as int64 in [-2^(b-1), 2^(b-1)) (sign extension of b bits)."""
    if not 2 <= bits <= 64:
        raise ValueError(f"bits must be in [2, 64], got {bits!r}")
    v = np.asarray(values, dtype=np.uint64) & _mask(bits)
    shift = np.uint64(64 - bits)
    return (v << shift).view(np.int64) >> np.int64(64 - bits)  # arithmetic shift


def decode(sum_mod: np.ndarray, params: DistributedDpParams, n: int,
           rotation_seed: bytes) -> np.ndarray:
    """The estimate of the mean clipped update from the sum mod 2^b of n encodings.

    Parameters
    ----------
    sum_mod : numpy.ndarray
        The unmasked sum, length d', values mod 2^b.
    params : DistributedDpParams
        The round's parameters.
    n : int
        The number of clients whose encodings are in the sum (>= 1).
    rotation_seed : bytes
        The round's public rotation seed.

    Returns
    -------
    numpy.ndarray
        float64 of length d; see the module docstring for its error.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    s = np.asarray(sum_mod)
    if s.shape != (params.padded_dimension,) or s.dtype.kind not in "iu":
        raise ValueError(f"sum_mod must be integers of shape ({params.padded_dimension},), "
                         f"got {s.dtype} {s.shape}")
    centred = centre_mod(s.astype(np.uint64), params.bits).astype(np.float64)  # (d',)
    return unrotate(centred / params.scale, rotation_seed, params.dimension) / n
