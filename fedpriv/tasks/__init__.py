"""Tasks: a model factory, offline data loading and partitioning, train/eval loops."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch

from fedpriv.config import Dataset, LmBase, Model, Partition, RunConfig
from fedpriv.tasks.data import ArrayDataset, DataFileError, TaskData, to_loader
from fedpriv.tasks.digits import load_digits
from fedpriv.tasks.fashion_mnist import load_fashion_mnist
from fedpriv.tasks.features import clear_feature_cache, model_inputs, scatternet_features
from fedpriv.tasks.fine_foods import load_fine_foods
from fedpriv.tasks.idx import read_idx, write_idx
from fedpriv.tasks.lm import LoraLanguageModel, LoraSpec, SequenceNll, build_lora_model
from fedpriv.tasks.local import LocalDataError, load_npz_dir
from fedpriv.tasks.mnist import load_mnist
from fedpriv.tasks.models import ScatterNetLinear, build_model
from fedpriv.tasks.movielens import load_movielens
from fedpriv.tasks.partition import PartitionError, partition_indices
from fedpriv.tasks.ratings import AsymmetricSvd, RatingLoss, build_asvd, evaluate_ratings
from fedpriv.tasks.scattering import Scattering2D
from fedpriv.tasks.synthetic import generate_synthetic
from fedpriv.tasks.training import evaluate, resolve_device, task_criterion, train_epochs

__all__ = [
    "ArrayDataset",
    "AsymmetricSvd",
    "DataFileError",
    "LocalDataError",
    "LoraLanguageModel",
    "LoraSpec",
    "PartitionError",
    "RatingLoss",
    "Scattering2D",
    "ScatterNetLinear",
    "SequenceNll",
    "TaskData",
    "TaskSpec",
    "build_lora_model",
    "build_asvd",
    "build_model",
    "build_task_model",
    "clear_feature_cache",
    "client_dataset",
    "evaluate",
    "evaluate_ratings",
    "generate_synthetic",
    "load_digits",
    "load_fashion_mnist",
    "load_fine_foods",
    "load_mnist",
    "load_movielens",
    "load_npz_dir",
    "load_task_data",
    "lora_spec",
    "model_inputs",
    "partition_indices",
    "read_idx",
    "resolve_device",
    "scatternet_features",
    "task_criterion",
    "task_spec",
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
    if dataset is Dataset.MOVIELENS:
        return load_movielens(test_fraction=test_fraction, seed=seed, directory=dataset_dir)
    return generate_synthetic(
        alpha=syn_alpha, beta=syn_beta, num_users=clients,
        test_fraction=test_fraction, seed=seed,
    )


@functools.lru_cache(maxsize=2)
def _text_cached(base: LmBase, seq_len: int, train_samples: int, eval_samples: int,
                 seed: int) -> TaskData:
    return load_fine_foods(base=base, seq_len=seq_len, train_samples=train_samples,
                           eval_samples=eval_samples, seed=seed)


def load_task_data(cfg: RunConfig) -> TaskData:
    """The task's training pool and held-out test split (cached per process)."""
    data, training = cfg.data, cfg.training
    if data.dataset is Dataset.FINE_FOODS:
        return _text_cached(cfg.model.lm_base, data.seq_len, data.text_samples, data.eval_samples,
                            training.seed)
    return _load_cached(data.dataset, data.test_fraction, training.seed, training.clients,
                        data.synthetic_alpha, data.synthetic_beta, data.dataset_dir)


@functools.lru_cache(maxsize=8)
def _partition_cached(cfg: RunConfig, num_partitions: int) -> tuple[np.ndarray, ...]:
    data = load_task_data(cfg)
    scheme = cfg.data.resolved_partition
    if scheme is Partition.NATURAL:
        assert data.natural_partition is not None
        if num_partitions != len(data.natural_partition):
            raise PartitionError(
                f"the natural partition has {len(data.natural_partition)} users, "
                f"but the federation has {num_partitions} clients"
            )
        return tuple(data.natural_partition)
    return tuple(partition_indices(
        data.train, scheme=scheme, num_partitions=num_partitions, seed=cfg.training.seed,
        alpha=cfg.data.alpha, classes_per_client=cfg.data.classes_per_client,
    ))


def client_dataset(cfg: RunConfig, partition_id: int, num_partitions: int) -> ArrayDataset:
    """Client ``partition_id``'s share of the training pool (simulation)."""
    if not 0 <= partition_id < num_partitions:
        raise ValueError(
            f"partition-id must be in [0, {num_partitions}), got {partition_id}"
        )
    idx = _partition_cached(cfg, num_partitions)[partition_id]
    return load_task_data(cfg).train.subset(idx)


@dataclasses.dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a task's examples look like: enough to build its model and check a device's data.

    Attributes
    ----------
    feature_shape : tuple[int, ...]
        Shape of one example's features.
    num_classes : int
        Number of labels.
    feature_range : tuple[float, float] | None
        The closed interval every feature lies in; ``None`` when unbounded.
    """

    feature_shape: tuple[int, ...]
    num_classes: int
    feature_range: tuple[float, float] | None


#: Fixed by the data sets themselves: a deployed device (which trains on its own .npz
#: files) and every ClientApp process build the model without loading the data set.
_SPECS = {
    Dataset.DIGITS: TaskSpec((64,), 10, (0.0, 1.0)),
    Dataset.FASHION_MNIST: TaskSpec((784,), 10, (0.0, 1.0)),
    Dataset.MNIST: TaskSpec((784,), 10, (0.0, 1.0)),
}


#: Vocabulary sizes of the language-model bases (their tokenizers').
_VOCAB = {LmBase.SMOLLM2_135M: 49152, LmBase.TINY_RANDOM: 260}


def task_spec(cfg: RunConfig) -> TaskSpec:
    """The task's :class:`TaskSpec`, loading nothing except for generated data.

    Text: ``seq-len`` token ids per example, labels the token counts, the base's
    vocabulary as ``num_classes``.
    """
    if cfg.data.dataset is Dataset.FINE_FOODS:
        return TaskSpec((cfg.data.seq_len,), _VOCAB[cfg.model.lm_base], None)
    spec = _SPECS.get(cfg.data.dataset)
    if spec is not None:
        return spec
    # Synthetic: generated from the config, no files. MovieLens: the widest person's
    # rating count and the catalogue come from the table (read once per process).
    data = load_task_data(cfg)
    return TaskSpec(data.feature_shape, data.num_classes, data.feature_range)


def lora_spec(cfg: RunConfig) -> LoraSpec:
    """The adapters ``model = lm-lora`` asks for."""
    model = cfg.model
    return LoraSpec(rank=model.lora_rank, alpha=model.lora_alpha, targets=model.lora_target_names,
                    layers=model.lora_layers)


def build_task_model(cfg: RunConfig, data: TaskData | TaskSpec | None = None, *,
                     device: torch.device | str = "cpu") -> torch.nn.Module:
    """The configured model for this task, initialised from the run's seed, on ``device``.

    ``model = lm-lora``: the frozen base with LoRA adapters (bf16 base on CUDA), whose
    state is the adapters only (:class:`LoraLanguageModel`).
    """
    if cfg.resolved_model is Model.LM_LORA:
        return build_lora_model(cfg.model.lm_base, lora_spec(cfg), seed=cfg.training.seed,
                                device=device)
    spec = task_spec(cfg) if data is None else data
    if cfg.resolved_model is Model.ASVD:  # item-side parameters only; num_classes: items
        return build_asvd(spec.num_classes, cfg.model.rating_factors,
                          seed=cfg.training.seed).to(device)
    return build_model(
        cfg.resolved_model,
        num_features=int(np.prod(spec.feature_shape)),
        num_classes=spec.num_classes,
        seed=cfg.training.seed,
        scatternet_groups=cfg.model.scatternet_norm_groups,
    ).to(device)
