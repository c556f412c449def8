"""Give the Simulation Engine's message dispatch a per-node index, so a step costs O(nodes), not O(nodes²).

Why: in flwr 1.42 the Simulation Engine's dispatcher thread (`vce_api.add_messages_to_queue`)
asks the in-memory LinkState, node after node, for that node's next message, every 0.1 s; and
`InMemoryLinkState.get_message_ins` answers by visiting *every* stored message and re-validating
each one (expiry, federation) under the state's lock. With one message per node, a sweep is
N² validations: 10⁴ at 100 clients, 10⁶ at 1,000, where it takes seconds, holds the lock the
ServerApp needs to pull replies, and keeps one core busy. It is what made 1,000 clients cost
far more than 10 × 100.

`index_dispatch(grid)` gives that one state instance a per-node queue of undelivered message
ids, filled as messages are stored; `get_message_ins` then validates only the asking node's own
messages. What a node receives, in what order, and which expired messages are dropped are
Flower's own (`tests/test_dispatch_index.py` runs both side by side). It touches Flower
internals, so it is applied only to the flwr versions it was checked against and only to the
in-memory state of a simulation; anywhere else it changes nothing and says so once.
"""

from __future__ import annotations

from collections import defaultdict, deque
from logging import INFO, WARNING

import flwr
from flwr.common import log
from flwr.server.superlink.linkstate import InMemoryLinkState
from flwr.supercore.date import now

CHECKED_FLWR_VERSIONS = ("1.42.",)  # the versions whose InMemoryLinkState this was read and tested against
INDEXED = "_mpsl_dispatch_index"  # marks a state already indexed (a ServerApp may start twice in one process)


def index_dispatch(grid: object) -> bool:
    """Index the message dispatch of `grid`'s in-memory LinkState; True if it is (now or already) indexed."""
    state = getattr(grid, "state", None)
    if not isinstance(state, InMemoryLinkState):
        return False  # deployment: the SuperLink's state lives in another process
    if getattr(state, INDEXED, False):
        return True
    if not flwr.__version__.startswith(CHECKED_FLWR_VERSIONS):
        log(
            WARNING,
            "flwr %s: the simulation's message dispatch is left as it is (checked only on %s); "
            "each step then costs O(nodes²) in the dispatcher, noticeable beyond a few hundred SuperNodes",
            flwr.__version__,
            ", ".join(v + "x" for v in CHECKED_FLWR_VERSIONS),
        )
        return False
    _install(state)
    log(INFO, "simulation message dispatch indexed per node (flwr %s)", flwr.__version__)
    return True


def _install(state: InMemoryLinkState) -> None:
    """Shadow `store_message_ins` and `get_message_ins` on this one instance with indexed versions.

    Both run under the state's own (re-entrant) lock, so the index and the store never disagree."""
    pending: dict[int, deque[str]] = defaultdict(deque)  # node -> ids of its messages not yet handed out
    store_message_ins = state.store_message_ins

    def indexed_store_message_ins(message):
        with state.lock:
            message_id = store_message_ins(message)
            if message_id is not None and message_id not in pending[message.metadata.dst_node_id]:
                pending[message.metadata.dst_node_id].append(message_id)
        return message_id

    def indexed_get_message_ins(node_id: int, limit: int | None, *, run_id: int | None = None):
        """Flower's `get_message_ins`, visiting only `node_id`'s own undelivered messages, oldest first."""
        if limit is not None and limit < 1:
            raise AssertionError("`limit` must be >= 1")
        found, later = [], deque()
        with state.lock:
            queue = pending.pop(node_id, deque())
            while queue and not (limit and len(found) == limit):
                message_id = queue.popleft()
                state._check_stored_messages({message_id})  # Flower's expiry and federation checks
                message = state.message_ins_store.get(message_id)
                if message is None or message.metadata.delivered_at != "":
                    continue  # expired, deleted or handed out: it is never asked for again
                if run_id is None or message.metadata.run_id == run_id:
                    found.append(message)
                else:
                    later.append(message_id)
            later.extend(queue)
            if later:
                pending[node_id] = later
            delivered_at = now().isoformat()
            for message in found:
                message.metadata.delivered_at = delivered_at
        return found

    state.store_message_ins = indexed_store_message_ins
    state.get_message_ins = indexed_get_message_ins
    setattr(state, INDEXED, True)
