"""Row-index layouts (test splits, client partitions) computed once and kept on disk.

Every simulated client process rebuilds the same layout from the same seed: the held-out
split (scikit-learn's ``train_test_split``) and its share of the partition (flwr-datasets'
partitioners on a ``datasets.Dataset``). The result is a handful of integer arrays, but
getting it imports scikit-learn, ``datasets``, pandas, pyarrow, matplotlib and seaborn
(about 7 CPU-seconds per process on two cores, more than torch itself). This module
keeps each layout in a small ``.npz`` file keyed by everything that determines it, so the
first process computes it and the others read it.

The key is a SHA-256 over: the kind of layout, the parameters, a fingerprint of the labels
it was computed from (their count and bytes), the versions of the libraries that computed
it, and this module's format version. A changed seed, data set, partitioner or library
version is a different file; nothing is ever reused across them. A file that does not
read back as a valid layout (truncated, edited, wrong shape) is recomputed and replaced.
Writers take an exclusive ``flock`` on a sidecar lock file and write through a temporary
file and ``os.replace``, so concurrent processes (Ray actors starting together) compute a
layout once and never see a half-written file.

Where: ``$FEDPRIV_CACHE_DIR/indices`` when the variable is set (set it empty to turn the
cache off), else ``$XDG_CACHE_HOME/fedpriv/indices`` (``~/.cache/fedpriv/indices``).
A directory that cannot be written is skipped silently: the layout is then computed in
every process, as without a cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CACHE_ENV", "cache_dir", "cached_layout"]

CACHE_ENV = "FEDPRIV_CACHE_DIR"
#: Bump when the file format or the meaning of a key changes.
_FORMAT = 1

_log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    """The directory layouts are kept in, or ``None`` when the cache is off."""
    configured = os.environ.get(CACHE_ENV)
    if configured is not None:
        return Path(configured) / "indices" if configured.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "fedpriv" / "indices"


def _versions(packages: Sequence[str]) -> dict[str, str]:
    out = {}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def _key(kind: str, labels: np.ndarray, params: dict[str, Any],
         packages: Sequence[str]) -> str:
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    head = json.dumps({"kind": kind, "format": _FORMAT, "params": params,
                       "n": int(labels.size), "versions": _versions(packages)},
                      sort_keys=True, default=str)
    digest = hashlib.sha256(head.encode())
    digest.update(labels.tobytes())
    return digest.hexdigest()[:32]


def _valid(arrays: list[np.ndarray], n: int, count: int, cover: bool) -> bool:
    if len(arrays) != count or any(a.ndim != 1 or a.dtype != np.int64 for a in arrays):
        return False
    joined = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    if joined.size and (joined.min() < 0 or joined.max() >= n):
        return False
    if np.unique(joined).size != joined.size:  # layouts are disjoint
        return False
    return joined.size == n if cover else joined.size <= n


def _read(path: Path, n: int, count: int, cover: bool) -> list[np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = [f[f"arr_{i}"] for i in range(len(f.files))]
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - any unreadable file is recomputed
        _log.debug("index cache %s unreadable (%s); recomputing", path, err)
        return None
    if not _valid(arrays, n, count, cover):
        _log.debug("index cache %s is not a valid layout; recomputing", path)
        return None
    return arrays


def _write(path: Path, arrays: list[np.ndarray]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, *arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; os.replace still keeps files whole
        yield
        return
    with open(lock, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_layout(kind: str, labels: np.ndarray, params: dict[str, Any], *,
                  compute: Callable[[], list[np.ndarray]], count: int, cover: bool,
                  packages: Sequence[str]) -> list[np.ndarray]:
    """``compute()``'s index arrays, read from the cache when an identical layout is there.

    Parameters
    ----------
    kind : str
        What the layout is (``"split"``, ``"partition"``): part of the key.
    labels : numpy.ndarray
        The labels the layout is computed from (fingerprinted into the key; their count
        bounds the indices).
    params : dict
        Everything else that determines the layout (seed, scheme, fractions); JSON-able.
    compute : callable
        Computes the layout: ``count`` disjoint int64 index arrays into ``labels``.
    count : int
        Number of arrays in the layout.
    cover : bool
        Whether the arrays together cover every index (a split) or may leave some out.
    packages : sequence of str
        Distributions whose versions can change the result (part of the key).
    """
    n = int(np.asarray(labels).size)
    root = cache_dir()
    if root is None:
        return compute()
    path = root / f"{kind}-{_key(kind, labels, params, packages)}.npz"
    found = _read(path, n, count, cover)
    if found is not None:
        return found
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_suffix(".lock")):
            found = _read(path, n, count, cover)  # another process may have written it
            if found is not None:
                return found
            arrays = [np.asarray(a, dtype=np.int64) for a in compute()]
            _write(path, arrays)
            return arrays
    except OSError as err:
        _log.debug("index cache %s not writable (%s); computing without it", root, err)
        return compute()
