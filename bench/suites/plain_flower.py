"""The peer: a minimal Flower app (FedAvg, plain PyTorch MLP on digits), no fedpriv code.

Run as ``python -m bench.suites.plain_flower ROUNDS LOCAL_EPOCHS OUT.json`` in its own
process; it writes each round's end time (seconds since the ServerApp started) and the
final accuracy. Data loading reuses scikit-learn's digits exactly as fedpriv splits it,
cached per process as fedpriv caches it, so the comparison times the same work.
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


client = ClientApp()


@client.train()
def train(msg: Message, context: Context) -> Message:
    """Local SGD on this node's IID share."""
    x_tr, _, y_tr, _ = _data()
    pid = int(context.node_config["partition-id"])
    idx = np.array_split(np.random.default_rng(0).permutation(len(x_tr)), CLIENTS)[pid]
    model = _model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ds = torch.utils.data.TensorDataset(torch.from_numpy(x_tr[idx]),
                                        torch.from_numpy(y_tr[idx]))
    loader = torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True)
    for _ in range(int(msg.content["config"]["local-epochs"])):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                               "metrics": MetricRecord({"num-examples": len(idx)})}),
                   reply_to=msg)


def make_server(rounds: int, epochs: int, out: str) -> ServerApp:
    """A ServerApp that records when each round's evaluation happens."""
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        from flwr.app import ConfigRecord

        _, x_te, _, y_te = _data()
        t0, ends, acc, initial = time.monotonic(), [], [0.0], [0.0]

        def evaluate(rnd: int, arrays: ArrayRecord) -> MetricRecord:
            model = _model()
            model.load_state_dict(arrays.to_torch_state_dict())
            with torch.no_grad():
                a = float((model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
            if rnd > 0:
                ends.append(time.monotonic() - t0)
                acc[0] = a
            else:
                initial[0] = a
            return MetricRecord({"accuracy": a})

        FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_available_nodes=CLIENTS).start(
            grid=grid, initial_arrays=ArrayRecord(_model().state_dict()), num_rounds=rounds,
            train_config=ConfigRecord({"local-epochs": epochs}), evaluate_fn=evaluate)
        with open(out, "w") as fh:
            json.dump({"round_ends": ends, "final_accuracy": acc[0],
                       "initial_accuracy": initial[0]}, fh)

    return server


if __name__ == "__main__":
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    # Use the module under its import name: Ray pickles the ClientApp, and functions of
    # ``__main__`` cannot be found again in its workers.
    from bench.suites import plain_flower as peer

    n_rounds, n_epochs, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    run_simulation(
        server_app=peer.make_server(n_rounds, n_epochs, path), client_app=peer.client,
        num_supernodes=CLIENTS,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": os.cpu_count(), "include_dashboard": False,
                                      "_node_ip_address": "127.0.0.1",
                                      "logging_level": logging.ERROR}},
    )
