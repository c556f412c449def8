"""A Flower `Grid` that delivers each message straight to a real ClientApp in this process.

Unit tests drive the real ServerApp/strategy code and the real ClientApp through it, without
a SuperLink or Ray. Every message crosses a protobuf round trip, as it would on the wire, so
nothing can leak between server and client by reference. Every reply a client sends is kept
in `replies_sent` for inspection. Nodes in `silent_partitions` answer queries but their
replies to `train.*` messages are lost, like a client that stops answering mid-run.
"""

from __future__ import annotations

import itertools
import traceback
from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.common.serde import message_from_proto, message_to_proto
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from mpsl_flower import wire

_run_ids = itertools.count(1)


def _over_the_wire(message: Message) -> Message:
    return message_from_proto(message_to_proto(message))


class InProcessGrid(Grid):
    """`num_nodes` nodes, partition ids 0..num_nodes-1, each with its own persistent Context."""

    def __init__(
        self, client_app: ClientApp, num_nodes: int, run_config: dict, silent_partitions: Iterable[int] = ()
    ) -> None:
        run_id = next(_run_ids)
        self._run = Run.create_empty(run_id=run_id)
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1
        self.client_app = client_app
        self.node_ids = [1000 + i for i in range(num_nodes)]
        self.contexts = {
            node: Context(
                run_id=run_id,
                node_id=node,
                node_config={wire.PARTITION_ID: i, wire.NUM_PARTITIONS: num_nodes},
                state=RecordDict(),
                run_config=dict(run_config),
            )
            for i, node in enumerate(self.node_ids)
        }
        self.silent_nodes = {self.node_ids[i] for i in silent_partitions}
        self.replies_sent: list[Message] = []
        self._ready: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            ids.append(message.metadata.message_id)
            delivered = _over_the_wire(message)
            reply = self._handle(delivered)
            self.replies_sent.append(reply)
            lost = message.metadata.dst_node_id in self.silent_nodes and message.metadata.message_type.startswith(
                "train"
            )
            if not lost:
                self._ready[message.metadata.message_id] = _over_the_wire(reply)
        return ids

    def _handle(self, message: Message) -> Message:
        context = self.contexts[message.metadata.dst_node_id]
        try:
            reply = self.client_app(message, context)
        except Exception as error:  # a crashing ClientApp becomes an error reply, as in Flower
            reason = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)
        reply.metadata.__dict__["_message_id"] = str(uuid4())
        return reply

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._ready.pop(i) for i in message_ids if i in self._ready]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
