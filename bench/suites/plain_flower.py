"""The peer: a minimal Flower app (FedAvg, plain PyTorch MLP on digits), no fedpriv code.

Run as ``python -m bench.suites.plain_flower APP ROUNDS LOCAL_EPOCHS OUT.json`` in its own
process (APP: ``plain``, or ``secaggplus-dp`` for Flower's own SecAgg+ with its DP wrapper,
:mod:`bench.suites.flower_secaggplus`); it writes each round's end time (seconds since
the ServerApp started) and the final accuracy. :data:`deployed` is the same ServerApp for
a real deployment (the deploy suite). Data loading reuses scikit-learn's digits exactly
as fedpriv splits it, cached per process as fedpriv caches it, so the comparison times
the same work.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

CLIENTS = 10


@functools.lru_cache(maxsize=1)
def _data() -> tuple[np.ndarray, ...]:
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return tuple(train_test_split(x, y.astype(np.int64), test_size=0.2, stratify=y,
                                  random_state=0))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def local_sgd(state: dict[str, torch.Tensor], pid: int, parts: int,
              epochs: int) -> tuple[nn.Module, int]:
    """``epochs`` of SGD from ``state`` on share ``pid`` of ``parts`` (IID); (model, n)."""
    x_tr, _, y_tr, _ = _data()
    idx = np.array_split(np.random.default_rng(0).permutation(len(x_tr)), parts)[pid]
    model = _model()
    model.load_state_dict(state)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x_tr[idx]),
                                        torch.from_numpy(y_tr[idx]))
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model, len(idx)


def accuracy(model: nn.Module) -> float:
    """Test accuracy of ``model`` on the held-out digits."""
    _, x_te, _, y_te = _data()
    with torch.no_grad():
        return float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    """Local SGD on this node's IID share (``num-partitions`` of them when deployed)."""
    pid = int(context.node_config["partition-id"])
    parts = int(context.node_config.get("num-partitions", CLIENTS))
    model, n = local_sgd(msg.content["arrays"].to_torch_state_dict(), pid, parts,
                         int(msg.content["config"]["local-epochs"]))
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                               "metrics": MetricRecord({"num-examples": n})}),
                   reply_to=msg)


class Rounds:
    """When each round's central evaluation happened (seconds since the ServerApp
    started), and the accuracy; written as JSON to ``out`` at the end of the run."""

    def __init__(self, out: str) -> None:
        self.out, self.t0 = out, time.monotonic()
        self.ends: list[float] = []
        self.initial = self.final = 0.0

    def record(self, rnd: int, acc: float) -> None:
        """Round ``rnd`` (0: the initial model) ended with test accuracy ``acc``."""
        if rnd > 0:
            self.ends.append(time.monotonic() - self.t0)
            self.final = acc
        else:
            self.initial = acc

    def write(self) -> None:
        """Write the round ends and accuracies to ``out``."""
        with open(self.out, "w") as fh:
            json.dump({"round_ends": self.ends, "final_accuracy": self.final,
                       "initial_accuracy": self.initial}, fh)


def serve(grid: Grid, rounds: int, epochs: int, nodes: int, out: str) -> None:
    """FedAvg over ``nodes`` nodes for ``rounds`` rounds, timed into ``out``."""
    from flwr.app import ConfigRecord

    log = Rounds(out)

    def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
        model = _model()
        model.load_state_dict(arrays.to_torch_state_dict())
        log.record(rnd, acc := accuracy(model))
        return MetricRecord({"accuracy": acc})

    FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=nodes).start(
        grid=grid, initial_arrays=ArrayRecord(_model().state_dict()), num_rounds=rounds,
        train_config=ConfigRecord({"local-epochs": epochs}), evaluate_fn=evaluate)
    log.write()


def make_server(rounds: int, epochs: int, out: str) -> ServerApp:
    """A ServerApp (simulation, :data:`CLIENTS` nodes) that records each round's end."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, rounds, epochs, CLIENTS, out)

    return server


#: The same ServerApp for a deployment (``flwr run``): its run config names ``rounds``,
#: ``local-epochs``, ``nodes`` and the absolute path ``out``.
deployed = ServerApp()


@deployed.main()
def _deployed_main(grid: Grid, context: Context) -> None:
    c = context.run_config
    serve(grid, int(c["rounds"]), int(c["local-epochs"]), int(c["nodes"]), str(c["out"]))


APPS = ("plain", "secaggplus-dp")


def simulate(app: str, rounds: int, epochs: int, out: str) -> None:
    """Run ``app`` (one of :data:`APPS`) on Flower's simulation engine, 1 CPU a node."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    if app == "plain":
        # The module under its import name: Ray pickles the ClientApp, and functions of
        # ``__main__`` cannot be found again in its workers.
        from bench.suites import plain_flower as peer

        server_app, client_app = peer.make_server(rounds, epochs, out), peer.client
    elif app == "secaggplus-dp":
        from bench.suites import flower_secaggplus as peer2

        server_app, client_app = peer2.make_server(rounds, epochs, out), peer2.client
    else:
        raise ValueError(f"app must be one of {APPS}, got {app!r}")
    run_simulation(
        server_app=server_app, client_app=client_app, num_supernodes=CLIENTS,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": os.cpu_count(), "include_dashboard": False,
                                      "_node_ip_address": "127.0.0.1",
                                      "logging_level": logging.ERROR}},
    )


if __name__ == "__main__":
    simulate(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
