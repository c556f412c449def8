"""TEST ONLY: the project's ClientApp with faults injected, for `tests/test_flwr_faults.py`.

`tests/support/flwr_harness.copy_app` puts this module at the root of a copy of the app, with the copy's
pyproject pointing `clientapp` at `faulty_client_app:app`, and a `faults.json` beside it: a list of

    {"partition": 3, "message_type": "train.forward", "epoch": 0, "step": 2, "fault": "nan"}

Every other message goes to `mpsl_flower.app.client_app.app` untouched. Faults, on the one message
that matches (node-config partition id, message type, epoch and step of its `step` record):
  crash  raise `InjectedCrash` before the real handler runs (the node's context stays as it was);
  hang   sleep `sleep_s`, then let the real handler answer (too late);
  nan    the real reply, its `smashed` / `logit_grad` arrays all NaN;
  shape  the real reply, its `smashed` / `logit_grad` arrays one sample short.
Corrupted arrays are packed with the project's own wire helpers at the run's activation precision,
so the fault is the only thing wrong with the reply.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from mpsl_flower import wire
from mpsl_flower.app.client_app import app as real_app
from mpsl_flower.config import parse_run_config

PLAN_FILE = Path(__file__).with_name("faults.json")
ARRAYS_KEY = {wire.FORWARD: wire.SMASHED, wire.LOSS_GRAD: wire.LOGIT_GRAD}


class InjectedCrash(RuntimeError):
    pass


def _plan() -> list[dict]:
    return json.loads(PLAN_FILE.read_text()) if PLAN_FILE.exists() else []


def _fault_for(message: Message, context: Context) -> dict | None:
    message_type = message.metadata.message_type
    if message_type not in ARRAYS_KEY:
        return None
    step = message.content[wire.STEP]
    here = (int(context.node_config[wire.PARTITION_ID]), message_type, step[wire.EPOCH], step[wire.STEP_INDEX])
    for fault in _plan():
        if (fault["partition"], fault["message_type"], fault["epoch"], fault["step"]) == here:
            return fault
    return None


class FaultyClientApp(ClientApp):
    def __call__(self, message: Message, context: Context) -> Message:
        fault = _fault_for(message, context)
        if fault is None:
            return real_app(message, context)
        what = f"partition {fault['partition']} {fault['message_type']} epoch {fault['epoch']} step {fault['step']}"
        if fault["fault"] == "crash":
            raise InjectedCrash(f"injected crash at {what}")
        if fault["fault"] == "hang":
            time.sleep(fault["sleep_s"])
            return real_app(message, context)
        reply = real_app(message, context)
        key = ARRAYS_KEY[message.metadata.message_type]
        precision = parse_run_config(context.run_config).activation_precision
        tensors = wire.read_activations(reply.content[key], precision)
        if fault["fault"] == "nan":
            tensors = {name: torch.full_like(t, float("nan")) for name, t in tensors.items()}
        elif fault["fault"] == "shape":
            tensors = {name: t[:-1] for name, t in tensors.items()}
        else:
            raise ValueError(f"unknown fault {fault['fault']!r}")
        reply.content[key] = wire.encode_activations(tensors, precision)
        return reply


app = FaultyClientApp()
