"""The on-disk cache of data layouts: same arrays as computing them, computed once, never
trusted when damaged, and the digits read without scikit-learn equal scikit-learn's."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fedpriv.config import Partition
from fedpriv.tasks.data import ArrayDataset
from fedpriv.tasks.digits import load_digits
from fedpriv.tasks.index_cache import CACHE_ENV, cache_dir, cached_layout
from fedpriv.tasks.partition import partition_indices


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path / "indices"


class Counting:
    def __init__(self, arrays: list[np.ndarray], delay: float = 0.0) -> None:
        self.arrays, self.delay, self.calls = arrays, delay, 0

    def __call__(self) -> list[np.ndarray]:
        self.calls += 1
        time.sleep(self.delay)
        return [a.copy() for a in self.arrays]


LABELS = np.arange(10) % 3
LAYOUT = [np.array([3, 1, 4], np.int64), np.array([0, 9], np.int64)]


def layout(compute: Counting, *, labels: np.ndarray = LABELS, seed: int = 0) -> list[np.ndarray]:
    return cached_layout("partition", labels, {"seed": seed}, compute=compute, count=2,
                         cover=False, packages=("numpy",))


def test_computed_once_then_read(cache: Path) -> None:
    compute = Counting(LAYOUT)
    first, second = layout(compute), layout(compute)
    assert compute.calls == 1
    for got in (first, second):
        assert [a.tolist() for a in got] == [a.tolist() for a in LAYOUT]
    assert len(list(cache.glob("*.npz"))) == 1


def test_key_covers_params_and_labels(cache: Path) -> None:
    compute = Counting(LAYOUT)
    layout(compute)
    layout(compute, seed=1)
    layout(compute, labels=LABELS[::-1].copy())
    assert compute.calls == 3
    assert len(list(cache.glob("*.npz"))) == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "overlap", "out-of-range",
                                    "wrong-count", "float"])
def test_damaged_file_is_recomputed(cache: Path, damage: str) -> None:
    compute = Counting(LAYOUT)
    layout(compute)
    (path,) = cache.glob("*.npz")
    if damage == "garbage":
        path.write_bytes(b"not a zip file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    else:
        bad = {"overlap": [np.array([3, 1], np.int64), np.array([1], np.int64)],
               "out-of-range": [np.array([3, 10], np.int64), np.array([0], np.int64)],
               "wrong-count": [np.array([3], np.int64)],
               "float": [np.array([3.0]), np.array([0.0])]}[damage]
        with open(path, "wb") as f:
            np.savez(f, *bad)
    got = layout(compute)
    assert compute.calls == 2
    assert [a.tolist() for a in got] == [a.tolist() for a in LAYOUT]
    assert [a.tolist() for a in layout(compute)] == [a.tolist() for a in LAYOUT]
    assert compute.calls == 2  # the replaced file is good


def test_concurrent_processes_compute_once(cache: Path) -> None:
    # flock conflicts between separate open file descriptions, threads included.
    compute = Counting(LAYOUT, delay=0.2)
    results: list[list[np.ndarray]] = []
    threads = [threading.Thread(target=lambda: results.append(layout(compute)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert compute.calls == 1
    assert all([a.tolist() for a in r] == [a.tolist() for a in LAYOUT] for r in results)


def test_off_and_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, "")
    assert cache_dir() is None
    compute = Counting(LAYOUT)
    layout(compute)
    layout(compute)
    assert compute.calls == 2
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    assert [a.tolist() for a in layout(compute)] == [a.tolist() for a in LAYOUT]
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "fedpriv" / "indices"


@pytest.mark.parametrize("scheme", [Partition.IID, Partition.DIRICHLET, Partition.PATHOLOGICAL])
def test_partition_from_cache_equals_computed(cache: Path, monkeypatch: pytest.MonkeyPatch,
                                              scheme: Partition) -> None:
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.random((200, 3)), rng.integers(0, 5, 200))
    kwargs = dict(scheme=scheme, num_partitions=6, seed=3, alpha=0.5, classes_per_client=2)
    monkeypatch.setenv(CACHE_ENV, "")
    plain = partition_indices(data, **kwargs)
    monkeypatch.setenv(CACHE_ENV, str(cache.parent))
    cold, warm = partition_indices(data, **kwargs), partition_indices(data, **kwargs)
    for got in (cold, warm):
        assert [a.tolist() for a in got] == [a.tolist() for a in plain]


def test_digits_equal_scikit_learns(cache: Path) -> None:
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    want = train_test_split((bunch.data / 16.0).astype(np.float32),
                            bunch.target.astype(np.int64), test_size=0.25, random_state=7,
                            stratify=bunch.target)
    for _ in range(2):  # computed, then read from the cache
        got = load_digits(test_fraction=0.25, seed=7)
        for a, b in zip((got.train.x, got.test.x, got.train.y, got.test.y), want, strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b)
