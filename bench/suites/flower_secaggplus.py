"""The peer with Flower's own protections: SecAgg+ and its DP wrapper, no fedpriv code.

The combination Flower documents for differential privacy under secure aggregation
("Differential Privacy" how-to, client-side fixed clipping; examples/fl-dp-sa):

- server: ``DifferentialPrivacyClientSideFixedClipping(FedAvg, noise_multiplier,
  clipping_norm, num_sampled_clients)`` run by ``DefaultWorkflow(fit_workflow=
  SecAggPlusWorkflow(num_shares, reconstruction_threshold))`` on the legacy
  ``LegacyContext`` path (Flower's SecAgg+ exists only there);
- client: a ``NumPyClient`` under ``mods=[secaggplus_mod, fixedclipping_mod]``, so each
  update is clipped before it is masked.

Each client clips its update to ``C`` (McMahan et al. 2018, DP-FedAvg, Algorithm 1's
``ClipFn``); the server adds ``N(0, (z C / n)^2)`` to the unmasked mean (Flower's
``add_gaussian_noise_to_params`` with ``std = z C / num_sampled_clients``). SecAgg+ is
Bell et al. 2020 (semi-honest variant, no consistency check) with Flower's quantisation.

The settings mirror fedpriv's row "all" of the round suite: the same MLP, data split,
local epochs and optimiser as :mod:`bench.suites.plain_flower`; ``z = 1``, ``C = 1``
(fedpriv's defaults; fedpriv's clip is adaptive, Flower's fixed), every one of the 10
clients a neighbour of every other (fedpriv's degree for n = 10 is 9) with a Shamir
threshold of half of them (fedpriv's ``secagg-threshold = 0.5``), and updates clipped to
[-8, 8] for quantisation (fedpriv's ``secagg-clip-range``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.client.mod import fixedclipping_mod, secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Context, NDArrays, Scalar, ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping, FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid, ServerApp

from bench.suites.plain_flower import CLIENTS, Rounds, _model, accuracy, local_sgd

NOISE_MULTIPLIER = 1.0
CLIP_NORM = 1.0
NUM_SHARES = CLIENTS  # each client and its 9 neighbours: the complete graph
RECONSTRUCTION_THRESHOLD = CLIENTS // 2
CLIPPING_RANGE = 8.0


def _arrays(model: torch.nn.Module) -> NDArrays:
    return [v.detach().numpy().copy() for v in model.state_dict().values()]


def _state(arrays: NDArrays) -> dict[str, torch.Tensor]:
    keys = _model().state_dict().keys()
    return {k: torch.from_numpy(np.asarray(a)) for k, a in zip(keys, arrays, strict=True)}


class _Client(NumPyClient):
    def __init__(self, pid: int, parts: int) -> None:
        self.pid, self.parts = pid, parts

    def fit(self, parameters: NDArrays,
            config: dict[str, Scalar]) -> tuple[NDArrays, int, dict[str, Scalar]]:
        model, n = local_sgd(_state(parameters), self.pid, self.parts,
                             int(config["local-epochs"]))
        return _arrays(model), n, {}


def _client_fn(context: Context) -> Any:
    return _Client(int(context.node_config["partition-id"]),
                   int(context.node_config.get("num-partitions", CLIENTS))).to_client()


#: Masking wraps clipping: the reply is clipped first, then masked (Flower's order).
client = ClientApp(client_fn=_client_fn, mods=[secaggplus_mod, fixedclipping_mod])


def make_server(rounds: int, epochs: int, out: str) -> ServerApp:
    """A ServerApp with SecAgg+ and client-side fixed clipping DP, timed into ``out``."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        log = Rounds(out)

        def evaluate(rnd: int, arrays: NDArrays,
                     _config: dict[str, Scalar]) -> tuple[float, dict[str, Scalar]]:
            model = _model()
            model.load_state_dict(_state(arrays))
            log.record(rnd, acc := accuracy(model))
            return 1.0 - acc, {"accuracy": acc}

        fedavg = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=CLIENTS,
                        min_available_clients=CLIENTS, evaluate_fn=evaluate,
                        initial_parameters=ndarrays_to_parameters(_arrays(_model())),
                        on_fit_config_fn=lambda _rnd: {"local-epochs": epochs})
        strategy = DifferentialPrivacyClientSideFixedClipping(
            fedavg, noise_multiplier=NOISE_MULTIPLIER, clipping_norm=CLIP_NORM,
            num_sampled_clients=CLIENTS)
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds),
                               strategy=strategy)
        workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
            num_shares=NUM_SHARES, reconstruction_threshold=RECONSTRUCTION_THRESHOLD,
            clipping_range=CLIPPING_RANGE))
        workflow(grid, legacy)
        log.write()

    return server
