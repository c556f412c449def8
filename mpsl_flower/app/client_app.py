"""The ClientApp: Flower's entry point for every message a SuperNode receives.

Deliberately light. In deployment every message starts a fresh ClientApp process, which imports
this module: `query.ping` (Flower's own round-trip floor) answers without importing torch, and
the other handlers import `mpsl_flower.app.client_handlers` (torch, the models, the data) on first
use in their process. The handlers themselves are documented there.
"""

from __future__ import annotations

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from mpsl_flower.wire import END_EPOCH, FORWARD, LOSS_GRAD, PARTITION_INFO, PING, action

app = ClientApp()


def _handlers():
    from mpsl_flower.app import client_handlers

    return client_handlers


@app.query(action(PARTITION_INFO))
def partition_info(msg: Message, context: Context) -> Message:
    return _handlers().partition_info(msg, context)


@app.query(action(PING))
def ping(msg: Message, context: Context) -> Message:
    return Message(RecordDict(), reply_to=msg)


@app.train(action(FORWARD))
def forward(msg: Message, context: Context) -> Message:
    return _handlers().forward(msg, context)


@app.train(action(LOSS_GRAD))
def loss_grad(msg: Message, context: Context) -> Message:
    return _handlers().loss_grad(msg, context)


@app.train(action(END_EPOCH))
def end_epoch(msg: Message, context: Context) -> Message:
    return _handlers().end_epoch(msg, context)


@app.train()
def fedavg_local_epoch(msg: Message, context: Context) -> Message:
    return _handlers().fedavg_local_epoch(msg, context)
