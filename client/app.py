"""The ClientApp: train the global model on local data, and evaluate it.

Everything a client needs arrives in the server's message (see
:mod:`fedpriv.messages`); its data comes from its node config (see
:func:`client.data.local_data`).

In a deployment Flower starts a fresh ClientApp process for every message, so this
module imports only what the secure-aggregation stages need (numpy, ``cryptography``,
the protocol); training and evaluation load torch, the data and the accountant from
:mod:`client.train` when a ``train`` or ``evaluate`` message arrives.
"""

from __future__ import annotations

import logging

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from client.secagg import advertise, consistency, maybe_vanish, share, unmask
from fedpriv.messages import CONFIG, config_from_record

__all__ = ["app"]


class _DropActorShutdown(logging.Filter):
    """Hide Flower's notice that a simulation actor was stopped at the end of a run.

    Every Ray actor that hosts ClientApps logs "Manually terminating ClientAppActor" at
    WARNING when the run ends normally; Ray forwards it to the user's terminal.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Manually terminating")


logging.getLogger("flwr").addFilter(_DropActorShutdown())

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train on local data and reply (see :func:`client.train.train_reply`)."""
    from client.train import train_reply

    return train_reply(msg, context)


@app.train("secagg_advertise")
def secagg_advertise(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 1: the round's public keys."""
    return Message(advertise(msg, context), reply_to=msg)


@app.train("secagg_share")
def secagg_share(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 2: encrypted secret shares for the neighbours."""
    cfg, server_round = config_from_record(msg.content[CONFIG])
    maybe_vanish(cfg, server_round, dict(context.node_config), stage=2)
    return Message(share(msg, context), reply_to=msg)


@app.train("secagg_consistency")
def secagg_consistency(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 4: sign the survivor set (ConsistencyCheck)."""
    return Message(consistency(msg, context), reply_to=msg)


@app.train("secagg_unmask")
def secagg_unmask(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 5: shares that let the server remove the masks."""
    cfg, server_round = config_from_record(msg.content[CONFIG])
    maybe_vanish(cfg, server_round, dict(context.node_config), stage=4)
    return Message(unmask(msg, context), reply_to=msg)


@app.evaluate()
def evaluate_local(msg: Message, context: Context) -> Message:
    """Evaluate the global model on local data (see :func:`client.train.evaluate_reply`)."""
    from client.train import evaluate_reply

    return evaluate_reply(msg, context)
