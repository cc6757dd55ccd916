"""The run configuration: one schema for the CLI, the ServerApp and the ClientApp.

A :class:`RunConfig` composes one frozen section per concern
(:mod:`fedpriv.config.sections`): ``data``, ``model``, ``training``, ``privacy``,
``secagg`` and ``deployment``. Every key of ``[tool.flwr.app.config]`` in
``pyproject.toml`` is a field of one section; ``fedpriv simulate --set KEY=VALUE``,
scenario files, Flower's run config and the run directory's ``config.json`` use the same
flat kebab-case names (:meth:`RunConfig.from_mapping`, :meth:`RunConfig.to_flat`).
Values are checked once, up front, so that bad input never reaches Ray: each section
checks its own keys, and this class the rules that span sections; every error names the
key, the allowed values and the value given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedpriv.config.choices import (
    MODELS_FOR,
    NEEDS_INDIVIDUAL_UPDATES,
    DpMode,
    Model,
)
from fedpriv.config.sections import (
    DataConfig,
    DeploymentConfig,
    ModelConfig,
    PrivacyConfig,
    SecAggConfig,
    TrainingConfig,
)
from fedpriv.config.values import ConfigError, allowed, coerce, plain, section_keys

__all__ = ["SECTIONS", "RunConfig", "default_count_stddev"]

#: The sections of a :class:`RunConfig`, by attribute, in the order keys are listed.
SECTIONS: dict[str, type[Any]] = {
    "data": DataConfig,
    "model": ModelConfig,
    "training": TrainingConfig,
    "privacy": PrivacyConfig,
    "secagg": SecAggConfig,
    "deployment": DeploymentConfig,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunConfig:
    """A validated run configuration: one section per concern.

    Construct from flat kebab-case keys with :meth:`from_mapping` (or change keys of an
    existing one with :meth:`with_values`); read a key through its section,
    ``cfg.privacy.dp_mode`` for ``dp-mode``. :meth:`keys` says which section holds which
    key.
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    privacy: PrivacyConfig = dataclasses.field(default_factory=PrivacyConfig)
    secagg: SecAggConfig = dataclasses.field(default_factory=SecAggConfig)
    deployment: DeploymentConfig = dataclasses.field(default_factory=DeploymentConfig)

    # ------------------------------------------------------------------ schema
    @classmethod
    def keys(cls) -> dict[str, tuple[str, dataclasses.Field[Any]]]:
        """Map each run-config key (kebab-case) to its section's name and its field."""
        return {key: (name, f) for name, section in SECTIONS.items()
                for key, f in section_keys(section).items()}

    @classmethod
    def describe(cls) -> list[tuple[str, str, str, str]]:
        """Rows of (key, type or allowed values, default, help) for docs and --help."""
        rows = []
        for key, (_, f) in cls.keys().items():
            typ = f.type if isinstance(f.type, str) else f.type.__name__
            rows.append((key, allowed(f) or typ, str(plain(f.default)), f.metadata["help"]))
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
        changes: dict[str, dict[str, Any]] = {}
        for key, raw in values.items():
            hit = known.get(key)
            if hit is None:
                if ignore_unknown:
                    continue
                raise ConfigError(
                    key, f"unknown key; valid keys are: {', '.join(sorted(known))}"
                )
            section, f = hit
            changes.setdefault(section, {})[f.name] = coerce(key, f, raw)
        start = base if base is not None else cls()
        return dataclasses.replace(start, **{
            name: dataclasses.replace(getattr(start, name), **kwargs)
            for name, kwargs in changes.items()})

    def with_values(self, **values: Any) -> RunConfig:
        """A copy with keys changed, named in snake case (``run_dir`` for ``run-dir``).

        Checked like :meth:`from_mapping`; ``cfg.with_values(rounds=1, secagg=True)``.
        """
        return self.from_mapping({k.replace("_", "-"): v for k, v in values.items()},
                                 base=self)

    def __post_init__(self) -> None:
        for name, section in SECTIONS.items():
            if not isinstance(getattr(self, name), section):
                raise TypeError(f"RunConfig.{name} must be a {section.__name__}, got "
                                f"{type(getattr(self, name)).__name__}")
        data, model, training = self.data, self.model, self.training
        privacy, secagg = self.privacy, self.secagg
        if model.family is not Model.AUTO and model.family not in MODELS_FOR[data.dataset]:
            choices = ", ".join(m.value for m in MODELS_FOR[data.dataset])
            raise ConfigError(
                "model",
                f"must be one of {{{choices}}} for dataset={data.dataset.value}, "
                f"got {model.family.value!r}",
            )
        if self.deployment.min_replies > training.cohort_size:
            raise ConfigError(
                "min-replies",
                f"must be at most clients-per-round ({training.cohort_size}), got "
                f"{self.deployment.min_replies}",
            )
        if privacy.dp_mode is DpMode.DISTRIBUTED:
            _check_distributed(self)
        if privacy.canaries > 0 and secagg.enabled:
            raise ConfigError(
                "canaries",
                f"canaries estimate the central DP mechanism and run without secure "
                f"aggregation; set secagg=false or canaries=0 (canaries={privacy.canaries})",
            )
        if privacy.dp_mode is DpMode.RECORD_CENTRAL and self.resolved_model in (
                Model.LM_LORA, Model.ASVD):
            raise ConfigError(
                "dp-mode",
                f"record-central sums clipped per-example gradients of a classifier (mlp, "
                f"cnn, logreg, scatternet); model={self.resolved_model.value} trains "
                f"otherwise: use dp-mode=record or user")
        if privacy.dp_mode is DpMode.RECORD_CENTRAL and secagg.enabled:
            raise ConfigError(
                "secagg",
                "dp-mode=record-central runs without secure aggregation for now: its "
                "fixed-point rounding would move one example's contribution by more than "
                "clip-norm, which the server's noise is not yet sized for; use "
                "dp-mode=record (noise on each client) or distributed (user level) with "
                "secagg=true")
        if training.strategy in NEEDS_INDIVIDUAL_UPDATES and (
                secagg.enabled or privacy.dp_mode in (DpMode.USER, DpMode.DISTRIBUTED,
                                                      DpMode.RECORD_CENTRAL)):
            if privacy.dp_mode is DpMode.RECORD_CENTRAL:
                why, fix = ("record-central DP gives the strategy only the noised sum",
                            "dp-mode=record-central")
            elif privacy.dp_mode is DpMode.DISTRIBUTED:
                why, fix = ("distributed DP gives the server only the noised sum",
                            "dp-mode=distributed")
            elif secagg.enabled:
                why, fix = ("secure aggregation shows the server only the cohort's sum",
                            "secagg=true")
            else:
                why, fix = "user-level DP gives the strategy only the noised sum", "dp-mode=user"
            raise ConfigError(
                "strategy",
                f"{training.strategy.value} needs each client's own update, but {why}; use "
                f"fedavg, fedprox or fedadam with {fix}",
            )
        if secagg.enabled:
            _check_secagg(self)

    # ------------------------------------------------------------------- derived
    @property
    def resolved_model(self) -> Model:
        """The model family after resolving ``auto`` (the data set's default)."""
        family = self.model.family
        return MODELS_FOR[self.data.dataset][0] if family is Model.AUTO else family

    def resolved(self) -> RunConfig:
        """A copy with ``auto`` values resolved (what the run directory records)."""
        return dataclasses.replace(
            self,
            data=dataclasses.replace(self.data, partition=self.data.resolved_partition),
            model=dataclasses.replace(self.model, family=self.resolved_model),
            training=dataclasses.replace(self.training,
                                         clients_per_round=self.training.cohort_size),
        )

    def to_flat(self) -> dict[str, bool | int | float | str]:
        """Kebab-case keys to plain values (TOML, JSON and Flower ConfigRecord safe)."""
        return {key: plain(getattr(getattr(self, section), f.name))
                for key, (section, f) in self.keys().items()}


def _check_distributed(cfg: RunConfig) -> None:
    """``dp-mode = distributed``: secure aggregation on and feasible ``ddp-*`` keys."""
    if not cfg.secagg.enabled:
        raise ConfigError(
            "secagg",
            "dp-mode=distributed needs secagg=true: the clients' noise shares protect an "
            "update only inside the secure sum (alone, each share is far too small), got "
            "secagg=false")
    clients, bits = cfg.training.clients, cfg.privacy.ddp_bits
    if bits == 1 or 0 < bits <= clients.bit_length():
        raise ConfigError(
            "ddp-bits",
            f"must be 0 (auto) or in [{clients.bit_length() + 1}, 64] (the sum of "
            f"{clients} clients' count slots must fit), got {bits}")
    cohort = cfg.training.cohort_size
    if cfg.privacy.ddp_min_survivors > cohort:
        raise ConfigError(
            "ddp-min-survivors",
            f"must be in [0, cohort = {cohort}] (0: secure aggregation's minimum), "
            f"got {cfg.privacy.ddp_min_survivors}")


def _check_secagg(cfg: RunConfig) -> None:
    """Refuse, before the run starts, a secure-aggregation config that cannot work.

    Checks the degree, the cohort against the survivors it needs
    (:meth:`fedpriv.secagg.params.SecurityParams.cohort_problem`), and that the sum fits
    the modulus (:meth:`fedpriv.secagg.layout.SumLayout.modulus_bits`), naming the
    numbers and the key to change.
    """
    from fedpriv.secagg.layout import layout_for  # lazy: the crypto stack is not cheap
    from fedpriv.secagg.params import params_for

    sec, training = cfg.secagg, cfg.training
    n = training.cohort_size
    if n < 2:
        raise ConfigError("clients", "secure aggregation needs >= 2 clients per round (the "
                          f"sum of one client is its update), got {n}")
    params = params_for(sec)
    c = params.corrupt(max(n, training.clients))  # every enrolled client may collude
    if sec.degree >= n:
        raise ConfigError("secagg-degree", f"must be in [0, cohort - 1 = {n - 1}] (0: "
                          f"derived), got {sec.degree}")
    problem = params.cohort_problem(n, c)
    if problem:
        raise ConfigError("clients", f"{problem} (c = floor(corruption rate "
                          f"{params.corruption_rate:g} x {training.clients} clients))")
    if cfg.privacy.dp_mode is DpMode.DISTRIBUTED:
        # The update slots hold the distributed-DP encoding, whose modulus (ddp-bits) is
        # sized with its wrap-around bound (fedpriv.ddp_plan), not this layout's.
        least = params.min_survivors(n, c)
        if cfg.privacy.ddp_min_survivors > least:
            raise ConfigError(
                "ddp-min-survivors",
                f"must be at most the {least} survivors secure aggregation guarantees for a "
                f"cohort of {n} (the noise would be sized for sums the protocol does not "
                f"promise), got {cfg.privacy.ddp_min_survivors}")
        return
    layout = layout_for(sec)
    n_max = training.clients  # a Poisson cohort (user-level DP) may hold every client
    need = layout.modulus_bits(n_max, check=False)
    if need > 64:
        fit = max((q for q in range(2, layout.quantizer.bits)
                   if layout.with_bits(q).modulus_bits(n_max, check=False) <= 64),
                  default=None)
        hint = (f"use secagg-bits <= {fit}" if fit else "use fewer clients per round")
        raise ConfigError("secagg-bits", f"the exact sum of {n_max} clients needs {need} "
                          f"bits ({layout.explain(n_max)}) but masked sums are held in 64-bit "
                          f"words; {hint}")


def default_count_stddev(cfg: RunConfig) -> float:
    """sigma_b for adaptive clipping when ``clip-count-stddev = 0``.

    Andrew et al. 2021 use m / 20 for cohorts of hundreds; small cohorts need at least
    2z so that the update noise grows by no more than ~3% (their Theorem 1).
    """
    return max(cfg.training.cohort_size / 20, 2 * cfg.privacy.noise_multiplier)
