"""Send one message to each of several nodes and collect the replies, fast and with a timeout.

`Grid.send_and_receive` sleeps 0.1 s (simulation) to 3 s (deployment) between polls, far
longer than an MPSL round trip should take; here the poll interval starts at 1 ms and backs
off to 20 ms. Errors and silence become per-node failure reasons instead of exceptions, so
one bad client never stops the others. `on_reply` sees each reply the moment it is pulled, so the
caller can work on it (MPSL copies activations to its GPU) while it waits for the others.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flwr.app import Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from mpsl_flower.wire import payload_bytes

FIRST_POLL_S, MAX_POLL_S = 0.001, 0.02
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # terminal colours, as Ray writes its tracebacks
NO_REPLY = "no reply within"  # how every failure reason of a silent node starts
EXPIRED = (ErrorCode.MESSAGE_UNAVAILABLE, ErrorCode.REPLY_MESSAGE_UNAVAILABLE)  # the SuperLink's "TTL ran out"


@dataclass
class Exchange:
    """Replies by node, failure reasons by node, and the bytes that travelled each way."""

    replies: dict[int, RecordDict] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0


def exchange(
    grid: Grid,
    contents: dict[int, RecordDict],
    message_type: str,
    timeout_s: float,
    group_id: str = "",
    on_reply: Callable[[int, RecordDict], None] | None = None,
) -> Exchange:
    """Push `contents[node]` to each node as `message_type`; wait up to `timeout_s` for replies.
    `on_reply(node, content)` is called once for each reply that is not an error, as it arrives."""
    result = Exchange()
    deadline = time.monotonic() + timeout_s  # before the messages' TTLs start: never later than they expire
    messages = {
        node: Message(content, dst_node_id=node, message_type=message_type, ttl=timeout_s, group_id=group_id)
        for node, content in contents.items()
    }
    result.bytes_down = sum(payload_bytes(content) for content in contents.values())
    accepted = set(grid.push_messages(list(messages.values()))) - {None}
    waiting = {}
    for node, message in messages.items():
        if message.metadata.message_id in accepted:
            waiting[message.metadata.message_id] = node
        else:
            result.failures[node] = "the SuperLink did not accept the message"
    poll_s = FIRST_POLL_S
    while waiting:  # pulls at least once: replies already there count, however long the push took
        for reply in grid.pull_messages(list(waiting)):
            node = waiting.pop(reply.metadata.reply_to_message_id, None)
            if node is None:
                continue
            if reply.has_error() and reply.error.code in EXPIRED:
                result.failures[node] = f"{NO_REPLY} {timeout_s:g} s (the SuperLink: message unavailable)"
            elif reply.has_error():
                result.failures[node] = f"client error: {_one_line(reply.error.reason)}"
            else:
                result.replies[node] = reply.content
                result.bytes_up += payload_bytes(reply.content)
                if on_reply is not None:
                    on_reply(node, reply.content)
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
        poll_s = min(poll_s * 2, MAX_POLL_S)
    for node in waiting.values():
        result.failures[node] = f"{NO_REPLY} {timeout_s:g} s"
    return result


def _one_line(reason: str) -> str:
    """A client error's reason as one line: its last, where a traceback names the exception. In simulation the
    reason is Ray's whole traceback, in colour; Flower logs it in full, the drop line needs only what failed."""
    lines = [line.strip() for line in ANSI_CODES.sub("", reason).splitlines() if line.strip()]
    return lines[-1] if lines else reason
