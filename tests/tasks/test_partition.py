import numpy as np
import pytest

from fedpriv.config import Partition
from fedpriv.tasks import PartitionError, load_digits, partition_indices

TRAIN = load_digits(test_fraction=0.2, seed=0).train


def parts(scheme, n=10, seed=0, **kw):
    return partition_indices(TRAIN, scheme=scheme, num_partitions=n, seed=seed, **kw)


def label_skew(partitions) -> float:
    """Mean total-variation distance between each client's labels and the pool's."""
    pool = np.bincount(TRAIN.y, minlength=10) / len(TRAIN)
    tvs = []
    for idx in partitions:
        local = np.bincount(TRAIN.y[idx], minlength=10) / max(len(idx), 1)
        tvs.append(0.5 * np.abs(local - pool).sum())
    return float(np.mean(tvs))


@pytest.mark.parametrize("scheme", [Partition.IID, Partition.DIRICHLET,
                                    Partition.PATHOLOGICAL])
def test_partitions_are_disjoint_and_sized(scheme):
    p = parts(scheme)
    assert len(p) == 10
    flat = np.concatenate(p)
    assert len(flat) == len(set(flat.tolist()))  # disjoint
    assert all(len(i) >= 2 for i in p)
    if scheme is not Partition.PATHOLOGICAL:
        assert len(flat) == len(TRAIN)  # everything handed out
    if scheme is Partition.IID:
        sizes = [len(i) for i in p]
        assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("scheme", [Partition.IID, Partition.DIRICHLET,
                                    Partition.PATHOLOGICAL])
def test_partitions_are_deterministic_under_a_seed(scheme):
    a, b, c = parts(scheme, seed=1), parts(scheme, seed=1), parts(scheme, seed=2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_label_skew_grows_as_alpha_falls():
    skews = [label_skew(parts(Partition.DIRICHLET, alpha=a)) for a in (100.0, 1.0, 0.1)]
    assert skews[0] < skews[1] < skews[2]
    assert skews[0] < 0.1 < 0.5 < skews[2]
    assert label_skew(parts(Partition.IID)) < 0.1


def test_pathological_gives_k_labels_per_client():
    for k in (1, 2, 3):
        for idx in parts(Partition.PATHOLOGICAL, classes_per_client=k):
            assert len(np.unique(TRAIN.y[idx])) == k


def test_more_clients_than_examples_is_refused():
    with pytest.raises(PartitionError, match="clients must be at most"):
        parts(Partition.IID, n=len(TRAIN) + 1)


@pytest.mark.parametrize("scheme", [Partition.DIRICHLET, Partition.PATHOLOGICAL])
def test_all_partitions_at_once_equal_the_public_path(scheme, monkeypatch):
    """The fast read of the partitioner's drawn map gives what load_partition gives."""
    import fedpriv.tasks.partition as partition

    fast = parts(scheme, n=40)
    monkeypatch.setattr(partition, "_determined_rows", lambda *_: None)
    public = parts(scheme, n=40)
    assert len(fast) == len(public) == 40
    for x, y in zip(fast, public, strict=True):
        np.testing.assert_array_equal(x, y)
