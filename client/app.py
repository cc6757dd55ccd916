"""The ClientApp: train the global model on local data, and evaluate it.

Everything a client needs arrives in the server's message (see
:mod:`fedpriv.messages`); its data comes from its node config (see
:func:`client.data.local_data`).
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.data import client_identity, local_data
from client.privacy import (
    budget_refusal,
    client_ledger,
    dp_sgd_train,
    event_json,
    planned_event,
    user_update,
)
from fedpriv.config import DpMode, StrategyName
from fedpriv.messages import (
    ARRAYS,
    CLIENT_EPSILON,
    CLIENT_ID,
    CONFIG,
    DP_EVENT,
    EVAL_ACCURACY,
    EVAL_LOSS,
    LEDGER_HEAD,
    METRICS,
    NODE_PARTITION_ID,
    NUM_EXAMPLES,
    PRIVACY,
    REFUSED,
    REFUSED_REASON,
    ROUND_CLIP_NORM,
    TRAIN_LOSS,
    UNCLIPPED,
    UPDATE,
    UPDATE_WEIGHT,
    config_from_record,
)
from fedpriv.privacy import DpSgdEvent, epsilon
from fedpriv.tasks import (
    build_task_model,
    evaluate,
    load_task_data,
    resolve_device,
    to_loader,
    train_epochs,
)
from strategies.updates import numpy_record

__all__ = ["app"]

app = ClientApp()


def _generator(seed: int, server_round: int, node_config: dict) -> torch.Generator:
    """A per-client, per-round shuffling stream derived from the run's seed."""
    part = int(node_config.get(NODE_PARTITION_ID, 0))
    state = np.random.SeedSequence([seed, server_round, part]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received global model on local data and reply with the model or update.

    With ``dp-mode = record`` training is DP-SGD; with ``dp-mode = user`` the reply is
    the clipped update. With any DP mode the client first checks its own budget in its
    own ledger, refuses the round if it would be exceeded, and records the round's DP
    event before replying.
    """
    cfg, server_round = config_from_record(msg.content[CONFIG])
    node_config = dict(context.node_config)
    data = local_data(cfg, node_config)
    device = resolve_device(cfg.device)
    model = build_task_model(cfg, load_task_data(cfg))
    global_state = msg.content[ARRAYS].to_torch_state_dict()
    model.load_state_dict(global_state)
    model.to(device)
    client_id = client_identity(node_config, context.node_id)
    round_clip = float(msg.content[CONFIG].get(ROUND_CLIP_NORM, cfg.clip_norm))

    ledger = event = None
    privacy: dict[str, bool | float | str] = {CLIENT_ID: client_id}
    if cfg.dp_mode is not DpMode.NONE:
        ledger = client_ledger(cfg, node_config, client_id, context.run_id)
        event = planned_event(cfg, len(data), round_clip)
        reason = budget_refusal(ledger, event)
        if reason:
            ledger.close()
            privacy.update({REFUSED: True, REFUSED_REASON: reason})
            return Message(RecordDict({
                METRICS: MetricRecord({NUM_EXAMPLES: 0}),
                PRIVACY: ConfigRecord(privacy),
            }), reply_to=msg)

    generator = _generator(cfg.seed, server_round, node_config)
    mu = cfg.proximal_mu if cfg.strategy is StrategyName.FEDPROX else 0.0
    if isinstance(event, DpSgdEvent):
        loss = dp_sgd_train(model, data, cfg, event=event, device=device,
                            generator=generator, proximal_mu=mu)
    else:
        loader = to_loader(data, cfg.batch_size, shuffle=True, generator=generator)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        global_params = [p.detach().clone() for p in model.parameters()] if mu > 0 else None
        loss = train_epochs(model, loader, optimizer, epochs=cfg.local_epochs, device=device,
                            proximal_mu=mu, global_params=global_params)

    local_state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    metrics: dict[str, float] = {NUM_EXAMPLES: len(data), TRAIN_LOSS: loss}
    if cfg.dp_mode is DpMode.USER:
        update, unclipped = user_update(local_state, global_state, round_clip)
        content = {UPDATE: numpy_record(update)}
        metrics.update({UPDATE_WEIGHT: 1.0, UNCLIPPED: float(unclipped)})
    elif cfg.secagg:
        # Weighted updates, so the secure sum carries sum_i n_i * Delta_i and sum_i n_i.
        n = float(len(data))
        content = {UPDATE: numpy_record({
            k: (local_state[k].numpy().astype(np.float32)
                - global_state[k].numpy().astype(np.float32)) * n
            for k in global_state})}
        metrics[UPDATE_WEIGHT] = n
    else:
        content = {ARRAYS: ArrayRecord(local_state)}

    if ledger is not None and event is not None:
        ledger.append(server_round, event)  # recorded before anything leaves the device
        spent = epsilon([ev for _, ev in ledger.events()], ledger.delta)
        seq, digest = ledger.head()
        ledger.close()
        privacy.update({REFUSED: False, CLIENT_EPSILON: spent, DP_EVENT: event_json(event),
                        LEDGER_HEAD: f"{seq}:{digest}"})
    return Message(RecordDict({
        **content, METRICS: MetricRecord(metrics), PRIVACY: ConfigRecord(privacy),
    }), reply_to=msg)


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
