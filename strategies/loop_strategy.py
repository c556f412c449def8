"""Base of the strategies whose `start` runs the whole training loop itself (MPSL, centralized).

Flower's `Strategy` drives rounds through four hooks: send a round's messages, aggregate the
replies, and the same for evaluation. MPSL trains in many two-round-trip steps per epoch and
the centralized baseline sends nothing, so for them those hooks have no meaning: they raise,
saying so, instead of pretending; `start` keeps Flower's signature and returns its `Result`.
Evaluation is central, through `evaluate_fn`.
"""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy


class LoopStrategy(Strategy):
    """A strategy that runs its own loop in `start`; Flower's round hooks raise."""

    def _no_round_hooks(self) -> NotImplementedError:
        return NotImplementedError(
            f"{type(self).__name__} runs its own training loop and evaluates centrally: call start()"
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        raise self._no_round_hooks()

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        raise self._no_round_hooks()

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        raise self._no_round_hooks()

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        raise self._no_round_hooks()
