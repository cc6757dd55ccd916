"""The peer of the edge client: a minimal Flower ClientApp, written from Flower's quickstart.

What a user would write for the same job with nothing but Flower and torch: the same MLP
(64-128-64-10) as fedpriv's digits task, the device's own ``.npz`` files (node config
``data-dir``), plain SGD for the rounds' local epochs, the model back as an ArrayRecord.
No privacy, no ledger, no secure aggregation: the floor a privacy-preserving client is
measured against (``bench.edge``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

__all__ = ["app"]

app = ClientApp()


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                         nn.Linear(64, 10))


def _data(data_dir: str) -> torch.utils.data.TensorDataset:
    files = sorted(Path(data_dir).glob("*.npz"))
    parts = [np.load(f, allow_pickle=False) for f in files]
    x = np.concatenate([p["x"] for p in parts]).astype(np.float32)
    y = np.concatenate([p["y"] for p in parts]).astype(np.int64)
    return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model on local data with SGD and send it back."""
    model = _model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    config = msg.content["config"]
    loader = torch.utils.data.DataLoader(_data(str(context.node_config["data-dir"])),
                                         batch_size=int(config["batch-size"]), shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=float(config["lr"]),
                          momentum=float(config["momentum"]))
    model.train()
    for _ in range(int(config["local-epochs"])):
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()),
                               "metrics": MetricRecord({"num-examples": len(loader.dataset)})}),
                   reply_to=msg)
