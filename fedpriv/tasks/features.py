"""What a model's trained layers take as input: fixed public features, computed once.

``model = scatternet`` (:class:`fedpriv.tasks.models.ScatterNetLinear`) starts with the
scattering transform, a fixed function of an image that depends on no data and no
parameter (Tramèr & Boneh 2021, Section 3). Recomputing it at every DP-SGD step would
dominate a client's time (about 0.5 ms an image on one core, against microseconds for
the linear layer), so a client maps its examples once and trains on the coefficients;
the model accepts either. Computing a public function of one's own data spends no
privacy: the DP-SGD that follows sees the same examples, one coefficient tensor each.

The cache is per process (a simulated client's Ray actor keeps it across rounds; the
server keeps its test split's), keyed by the bytes of the images and by the group norm's
groups (``scatternet-norm-groups``: the stored coefficients are normalised), so a different
data set, partition, device file or normalisation is never served stale coefficients.
With the environment variable ``FEDPRIV_FEATURE_CACHE`` set to a directory, coefficients
are also kept there as ``.npy`` files under the same key and reused by later processes
(benchmarks run many simulations on the same data; a device may keep its own). The
files hold a function of the data they came from: put them where that data may be.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from fedpriv.config import Model, RunConfig
from fedpriv.tasks.data import ArrayDataset

__all__ = [
    "CACHE_ENV",
    "clear_feature_cache",
    "model_inputs",
    "remember_features",
    "scatternet_features",
]

#: A directory where coefficients are also kept across processes (unset: memory only).
CACHE_ENV = "FEDPRIV_FEATURE_CACHE"

#: Data sets whose coefficients a process keeps (least recently used dropped first): ten
#: clients' shares of Fashion-MNIST plus the test split are ~1.1 GB of float32.
_MAX_ENTRIES = 16
_CHUNK = 64  # images at once: small tensors stay in cache (3x faster than 256)
_cache: OrderedDict[str, np.ndarray] = OrderedDict()
_lock = threading.Lock()


def scatternet_features(x: np.ndarray, *, groups: int = 27, chunk: int = _CHUNK
                        ) -> np.ndarray:
    """The fixed part of ``model = scatternet`` applied to flat 28 x 28 images.

    Order-2 scattering (J = 2, L = 8), then group norm without parameters
    (:meth:`fedpriv.tasks.models.ScatterNetLinear.scatter`).

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, 784)`` or ``(n, 28, 28)`` pixels.
    groups : int
        The group norm's groups (``scatternet-norm-groups``; 0: no normalisation).
    chunk : int
        Images transformed at once (bounds the complex intermediate tensors).

    Returns
    -------
    numpy.ndarray
        ``(n, 81, 7, 7)`` float32.
    """
    from fedpriv.tasks.models import ScatterNetLinear

    images = np.asarray(x, dtype=np.float32).reshape(-1, 28, 28)
    model = ScatterNetLinear(10, groups=groups)  # the fixed part does not use the head
    out = np.empty((len(images), *model.scattering.out_shape), np.float32)
    for start in range(0, len(images), chunk):
        batch = torch.from_numpy(images[start:start + chunk])
        out[start:start + chunk] = model.scatter(batch).numpy()  # (b, 81, 7, 7)
    return out


def model_inputs(cfg: RunConfig, data: ArrayDataset) -> ArrayDataset:
    """``data`` as the configured model's trained layers take it (cached per process).

    ``model = scatternet``: the images' scattering coefficients ``(n, 81, 7, 7)`` (same
    labels, same order, same count); every other model: ``data`` itself.
    """
    if cfg.resolved_model is not Model.SCATTERNET:
        return data
    x = np.ascontiguousarray(data.x)
    groups = cfg.model.scatternet_norm_groups
    key = _key(x, groups)
    with _lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return ArrayDataset(cached, data.y)
    features = _from_disk(key, len(x))
    if features is None:
        features = scatternet_features(x, groups=groups)
        _to_disk(key, features)
    _keep(key, features)
    return ArrayDataset(features, data.y)


def remember_features(x: np.ndarray, features: np.ndarray, *, groups: int) -> None:
    """Cache ``features`` as the coefficients of images ``x`` (in memory and on disk).

    The transform maps each image on its own, so the coefficients of a data set that
    only reorders or regroups images already mapped are those images' rows: a benchmark
    that runs the same images under another partition (one client holding all of them)
    gathers them instead of recomputing. The caller vouches that ``features`` are
    :func:`scatternet_features` of ``x`` with these ``groups``; the shapes are checked.
    """
    x = np.ascontiguousarray(x)
    if features.dtype != np.float32 or features.shape[0] != len(x) or features.ndim != 4:
        raise ValueError(f"features must be float32 (n={len(x)}, 81, 7, 7), got "
                         f"{features.dtype}{list(features.shape)}")
    key = _key(x, groups)
    _to_disk(key, features)
    _keep(key, features)


def _key(x: np.ndarray, groups: int) -> str:
    """The cache key of images ``x`` (dtype, shape, contiguous bytes) normed by ``groups``."""
    digest = hashlib.blake2b(f"{x.dtype}:{x.shape}:".encode(), digest_size=20)
    digest.update(x.data)  # the contiguous buffer itself: no copy of the images
    return f"scatternet-g{groups}-{digest.hexdigest()}"


def _keep(key: str, features: np.ndarray) -> None:
    with _lock:
        _cache[key] = features
        _cache.move_to_end(key)
        while len(_cache) > _MAX_ENTRIES:
            _cache.popitem(last=False)


def _disk_path(key: str) -> Path | None:
    root = os.environ.get(CACHE_ENV, "")
    return Path(root) / f"{key}.npy" if root else None


def _from_disk(key: str, n: int) -> np.ndarray | None:
    path = _disk_path(key)
    if path is None or not path.is_file():
        return None
    try:
        features = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # unreadable or torn: recomputed and rewritten
    ok = features.dtype == np.float32 and features.shape[0] == n
    return features if ok else None


def _to_disk(key: str, features: np.ndarray) -> None:
    path = _disk_path(key)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, features, allow_pickle=False)
    os.replace(tmp, path)  # atomic: a reader sees the old state or the whole file


def clear_feature_cache() -> None:
    """Forget every cached coefficient tensor (tests; memory)."""
    with _lock:
        _cache.clear()
