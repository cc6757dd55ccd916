"""Build the Flower strategy a run config names.

fedpriv wraps these (see ``server/strategy.py``) for cohort sampling, privacy and
secure aggregation; the aggregation rule itself is Flower's.
"""

from __future__ import annotations

from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from fedpriv.config import RunConfig, StrategyName
from fedpriv.messages import ARRAYS, CONFIG, NUM_EXAMPLES

__all__ = ["build_strategy"]


def build_strategy(cfg: RunConfig) -> Strategy:
    """The Flower strategy for ``cfg.training.strategy``.

    Sampling is done by fedpriv's wrapper, which hands the strategy a grid that shows
    only the round's cohort; so the strategy is built to take every node it sees.
    """
    common = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": 1,
        "min_evaluate_nodes": 1,
        "min_available_nodes": 1,
        "weighted_by_key": NUM_EXAMPLES,
        "arrayrecord_key": ARRAYS,
        "configrecord_key": CONFIG,
    }
    if cfg.training.strategy is StrategyName.FEDAVG:
        return FedAvg(**common)
    if cfg.training.strategy is StrategyName.FEDPROX:
        return FedProx(**common, proximal_mu=cfg.training.proximal_mu)
    if cfg.training.strategy is StrategyName.FEDADAM:
        # Reddi et al. 2021 (Adaptive Federated Optimization), Algorithm 2.
        return FedAdam(**common, eta=cfg.training.server_lr, eta_l=cfg.training.lr)
    if cfg.training.strategy is StrategyName.FEDMEDIAN:
        # Yin et al. 2018, coordinate-wise median.
        return FedMedian(**common)
    if cfg.training.strategy is StrategyName.FEDTRIMMEDAVG:
        # Yin et al. 2018, coordinate-wise trimmed mean (beta cut from each end).
        return FedTrimmedAvg(**common, beta=0.2)
    if cfg.training.strategy is StrategyName.KRUM:
        # Blanchard et al. 2017; tolerates up to the given number of Byzantine clients.
        return Krum(**common, num_malicious_nodes=max(0, (cfg.training.cohort_size - 3) // 2))
    allowed = ", ".join(m.value for m in StrategyName)
    raise ValueError(f"strategy must be one of {{{allowed}}}, got {cfg.training.strategy!r}")
