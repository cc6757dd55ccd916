"""Tasks: a model factory, offline data loading and partitioning, train/eval loops."""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedpriv.config import Dataset, Partition, RunConfig
from fedpriv.tasks.data import ArrayDataset, DataFileError, TaskData, to_loader
from fedpriv.tasks.digits import load_digits
from fedpriv.tasks.fashion_mnist import load_fashion_mnist
from fedpriv.tasks.idx import read_idx, write_idx
from fedpriv.tasks.local import LocalDataError, load_npz_dir
from fedpriv.tasks.mnist import load_mnist
from fedpriv.tasks.models import build_model
from fedpriv.tasks.partition import PartitionError, partition_indices
from fedpriv.tasks.synthetic import generate_synthetic
from fedpriv.tasks.training import evaluate, resolve_device, train_epochs

__all__ = [
    "ArrayDataset",
    "DataFileError",
    "LocalDataError",
    "PartitionError",
    "TaskData",
    "build_model",
    "build_task_model",
    "client_dataset",
    "evaluate",
    "generate_synthetic",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_npz_dir",
    "load_task_data",
    "partition_indices",
    "read_idx",
    "resolve_device",
    "to_loader",
    "train_epochs",
    "write_idx",
]


@functools.lru_cache(maxsize=1)
def _fashion_mnist_cached(directory: str) -> TaskData:
    # 70,000 images (~220 MB as float32): one copy per process, whatever the seed.
    return load_fashion_mnist(directory)


@functools.lru_cache(maxsize=4)
def _load_cached(dataset: Dataset, test_fraction: float, seed: int, clients: int,
                 syn_alpha: float, syn_beta: float, dataset_dir: str) -> TaskData:
    if dataset is Dataset.DIGITS:
        return load_digits(test_fraction=test_fraction, seed=seed)
    if dataset is Dataset.FASHION_MNIST:
        return _fashion_mnist_cached(dataset_dir)
    if dataset is Dataset.MNIST:
        return load_mnist(test_fraction=test_fraction, seed=seed)
    return generate_synthetic(
        alpha=syn_alpha, beta=syn_beta, num_users=clients,
        test_fraction=test_fraction, seed=seed,
    )


def load_task_data(cfg: RunConfig) -> TaskData:
    """The task's training pool and held-out test split (cached per process)."""
    return _load_cached(cfg.dataset, cfg.test_fraction, cfg.seed, cfg.clients,
                        cfg.synthetic_alpha, cfg.synthetic_beta, cfg.dataset_dir)


@functools.lru_cache(maxsize=8)
def _partition_cached(cfg: RunConfig, num_partitions: int) -> tuple[np.ndarray, ...]:
    data = load_task_data(cfg)
    scheme = cfg.resolved_partition
    if scheme is Partition.NATURAL:
        assert data.natural_partition is not None
        if num_partitions != len(data.natural_partition):
            raise PartitionError(
                f"the natural partition has {len(data.natural_partition)} users, "
                f"but the federation has {num_partitions} clients"
            )
        return tuple(data.natural_partition)
    return tuple(partition_indices(
        data.train, scheme=scheme, num_partitions=num_partitions, seed=cfg.seed,
        alpha=cfg.alpha, classes_per_client=cfg.classes_per_client,
    ))


def client_dataset(cfg: RunConfig, partition_id: int, num_partitions: int) -> ArrayDataset:
    """Client ``partition_id``'s share of the training pool (simulation)."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition-id must be in [0, {num_partitions}), got {partition_id}"
        )
    idx = _partition_cached(cfg, num_partitions)[partition_id]
    return load_task_data(cfg).train.subset(idx)


def build_task_model(cfg: RunConfig, data: TaskData) -> torch.nn.Module:
    """The configured model for this task, initialised from the run's seed."""
    return build_model(
        cfg.resolved_model,
        num_features=int(np.prod(data.feature_shape)),
        num_classes=data.num_classes,
        seed=cfg.seed,
    )
