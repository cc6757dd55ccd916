"""The ClientApp: train the global model on local data, and evaluate it.

Everything a client needs arrives in the server's message (see
:mod:`fedpriv.messages`); its data comes from its node config (see
:func:`client.data.local_data`).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.data import local_data
from fedpriv.config import StrategyName
from fedpriv.messages import (
    ARRAYS,
    CONFIG,
    EVAL_ACCURACY,
    EVAL_LOSS,
    METRICS,
    NODE_PARTITION_ID,
    NUM_EXAMPLES,
    TRAIN_LOSS,
    config_from_record,
)
from fedpriv.tasks import (
    build_task_model,
    evaluate,
    load_task_data,
    resolve_device,
    to_loader,
    train_epochs,
)

__all__ = ["app"]

app = ClientApp()


def _generator(seed: int, server_round: int, node_config: dict) -> torch.Generator:
    """A per-client, per-round shuffling stream derived from the run's seed."""
    part = int(node_config.get(NODE_PARTITION_ID, 0))
    state = np.random.SeedSequence([seed, server_round, part]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model for ``local-epochs`` on local data."""
    cfg, server_round = config_from_record(msg.content[CONFIG])
    data = local_data(cfg, context.node_config)
    device = resolve_device(cfg.device)
    model = build_task_model(cfg, load_task_data(cfg))
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    model.to(device)

    loader = to_loader(
        data, cfg.batch_size, shuffle=True,
        generator=_generator(cfg.seed, server_round, dict(context.node_config)),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    mu = cfg.proximal_mu if cfg.strategy is StrategyName.FEDPROX else 0.0
    global_params = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
    loss = train_epochs(
        model, loader, optimizer, epochs=cfg.local_epochs, device=device,
        proximal_mu=mu, global_params=global_params,
    )
    reply = RecordDict({
        ARRAYS: ArrayRecord(model.to("cpu").state_dict()),
        METRICS: MetricRecord({NUM_EXAMPLES: len(data), TRAIN_LOSS: loss}),
    })
    return Message(reply, reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the received global model on the client's local data."""
    cfg, _ = config_from_record(msg.content[CONFIG])
    data = local_data(cfg, context.node_config)
    device = resolve_device(cfg.device)
    model = build_task_model(cfg, load_task_data(cfg))
    model.load_state_dict(msg.content[ARRAYS].to_torch_state_dict())
    model.to(device)
    loss, acc = evaluate(model, data, device=device)
    reply = RecordDict({
        METRICS: MetricRecord({NUM_EXAMPLES: len(data), EVAL_LOSS: loss, EVAL_ACCURACY: acc}),
    })
    return Message(reply, reply_to=msg)
