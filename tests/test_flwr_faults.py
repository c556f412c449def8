"""Faulty clients in a real `flwr run`: the MPSL run finishes, each drop is logged with its reason and counted.

A copy of the app runs with `faulty_client_app.py` as its ClientApp: four of the ten simulated
SuperNodes fail one MPSL message each, one fault of each kind, at a known step of the one epoch:

  partition 0  train.forward    step 1  raises                  -> "client error: ... injected crash at ..."
  partition 1  train.forward    step 2  smashed all NaN         -> "smashed: ... contains NaN or Inf"
  partition 2  train.loss_grad  step 3  logit_grad 1 row short  -> "logit grad: array ... expected ..."
  partition 5  train.forward    step 5  sleeps past the timeout -> "no reply within 20 s"

Each costs exactly one client-step, nothing more: a client dropped at its forward gets no logits
and no cut-layer gradient for that step, one dropped at its loss gradient no cut-layer gradient,
so at its next step it has nothing pending to apply and simply abandons the failed step; a crash
leaves the node's context as it was. The hang is early in partition 5's epoch (22 batches of 50):
while its ClientApp sleeps, holding one of the two Ray actors, the node's next messages run on
the other one, and when the late handler ends it finds that the node has moved on and refuses
(`node.state_store.StaleMessage`), so Flower keeps the node's newer state instead of the late one's.

Why 20 s, not a few: a normal reply must never come close to the timeout, or the drop count
would not be exact; on 2 CPU cores with one of the two Ray actors asleep, an exchange with the
other nine clients takes a few seconds. The simulation's cold start (Ray actors importing torch
and building partitions, ~20 s) is covered by `discovery-timeout-s`, which asks again.
"""

from __future__ import annotations

import json
import math
import re
from uuid import uuid4

import pytest
from flwr.app import Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.supercore.task_identity import TaskIdentity
from support.flwr_harness import NUM_SUPERNODES, REPO, copy_app, flwr_run, running_superlink

from mpsl_flower.runs.readers import read_metrics
from strategies.exchange import exchange

TIMEOUT_S = 20  # see the module docstring
HANG_S = TIMEOUT_S + 25  # the hung client answers 25 s after the server stopped waiting for it
SLACK_S = 4  # the stream is polled every 0.5 s, logs uploaded every 0.2 s
BATCH = 500  # 50 samples per client per step, 22 steps
RUN_CONFIG = f"nr-of-epochs=1 batch-size={BATCH} step-timeout-s={TIMEOUT_S}"
FAULTS = [
    {"partition": 0, "message_type": "train.forward", "epoch": 0, "step": 1, "fault": "crash"},
    {"partition": 1, "message_type": "train.forward", "epoch": 0, "step": 2, "fault": "nan"},
    {"partition": 2, "message_type": "train.loss_grad", "epoch": 0, "step": 3, "fault": "shape"},
    {"partition": 5, "message_type": "train.forward", "epoch": 0, "step": 5, "fault": "hang", "sleep_s": HANG_S},
]
HANG = FAULTS[3]
REASONS = {  # what the drop line of each fault says after "dropped: "
    # Flower's reason (in simulation Ray's whole traceback) cut to its last line, the exception's message
    "crash": r"client error: .*injected crash at partition 0 train\.forward epoch 0 step 1\W*",
    "nan": r"smashed: array '\w+' contains NaN or Inf \(at float32\)",
    "shape": r"logit grad: array 'logit_grad' is float32 \(49, \d+\), expected float32 \(50, \d+\) \(float32\)",
    "hang": rf"no reply within {TIMEOUT_S} s( \(the SuperLink: message unavailable\))?",  # the latter: TTL ran out
}
DROP = re.compile(r"\[MPSL\] epoch (\d+) step (\d+): client (\d+) \(node \d+\) dropped: (.*)$")
LOG_LINE = re.compile(r"^(\x1b\[[\d;]*m)?(DEBUG|INFO|WARNING|ERROR)\b")  # a new log record, not a continuation


@pytest.fixture
def faulty_app(tmp_path):
    plan = tmp_path / "faults.json"
    plan.write_text(json.dumps(FAULTS))
    files = {"faulty_client_app.py": REPO / "tests" / "support" / "faulty_client_app.py", "faults.json": plan}
    return copy_app(tmp_path / "app", clientapp="faulty_client_app:app", extra_files=files)


def _record_at(lines: list[tuple[float, str]], index: int) -> str:
    """The log record starting at `lines[index]`, with the lines that continue it."""
    end = index + 1
    while end < len(lines) and not LOG_LINE.match(lines[end][1]):
        end += 1
    return "\n".join(line for _, line in lines[index:end])


@pytest.mark.integration
def test_faulty_clients_are_dropped_logged_and_counted_and_a_hang_costs_one_timeout(faulty_app, tmp_path):
    output_dir = tmp_path / "results"
    with running_superlink(tmp_path) as (env, superlink_log):
        run = flwr_run(env, superlink_log, f"{RUN_CONFIG} output-dir='{output_dir}'", app=faulty_app)
    diagnostics = run.diagnostics
    (folder,) = output_dir.iterdir()

    # The plan's premises: all clients found; every faulty one still has data at its step, the hanging
    # one has many steps after it; the progress line "step 5/22" is logged right before step 5 begins.
    info = json.loads((folder / "run_info.json").read_text())
    assert info["num_clients"] == NUM_SUPERNODES, f"discovery found {info['num_clients']} clients\n{diagnostics}"
    batches = {int(p): math.ceil(size / info["client_batch_size"]) for p, size in info["partition_sizes"].items()}
    assert info["client_batch_size"] == BATCH // NUM_SUPERNODES, info
    assert all(fault["step"] < batches[fault["partition"]] for fault in FAULTS), batches
    assert batches[HANG["partition"]] > HANG["step"] + 10, batches
    assert info["steps_per_epoch"] // 4 == HANG["step"], info

    # One drop line per fault, at its step, with its reason; and no other drop.
    drops = [(i, DROP.search(line)) for i, (_, line) in enumerate(run.lines) if DROP.search(line)]
    found = {(int(m[3]), int(m[2])): (i, m[1], m[4]) for i, m in drops}
    assert len(drops) == len(FAULTS), diagnostics
    assert sorted(found) == sorted((f["partition"], f["step"]) for f in FAULTS), diagnostics
    for fault in FAULTS:
        index, epoch, reason = found[fault["partition"], fault["step"]]
        assert epoch == "1" and re.fullmatch(REASONS[fault["fault"]], reason), (fault, reason)
    crash_index = found[FAULTS[0]["partition"], FAULTS[0]["step"]][0]
    assert _record_at(run.lines, crash_index) == run.lines[crash_index][1]  # the drop is one line; the traceback
    assert any("InjectedCrash" in line for _, line in run.lines[:crash_index]), diagnostics  # is Flower's, above

    (record,) = read_metrics(folder)
    assert record["dropped_client_steps"] == len(FAULTS), (record, diagnostics)
    assert record["clients_aggregated"] == NUM_SUPERNODES, (record, diagnostics)  # every client is back at the end
    assert record["steps"] == info["steps_per_epoch"], record

    # The hang costs its step one timeout and holds up nothing after it: the server gave up on the
    # client TIMEOUT_S after the step began, and the next progress line came while it still slept.
    hang_index = found[HANG["partition"], HANG["step"]][0]
    dropped_at = run.lines[hang_index][0]
    step_began_at = max(t for t, line in run.lines[:hang_index] if re.search(rf"epoch 1: step {HANG['step']}/", line))
    next_progress_at = min(t for t, line in run.lines[hang_index:] if re.search(r"\[MPSL\] epoch 1: step \d+/", line))
    timings = f"step began {step_began_at:.1f} s, dropped {dropped_at:.1f} s, next progress {next_progress_at:.1f} s"
    print(timings, f"train_wall_s {record['train_wall_s']:.1f}")
    assert TIMEOUT_S - 1 <= dropped_at - step_began_at <= TIMEOUT_S + SLACK_S, timings
    assert next_progress_at - dropped_at < HANG_S - TIMEOUT_S, timings
    # when the hung ClientApp finally ran the message, the node had moved on: it refused, keeping its state
    assert "StaleMessage: message at (epoch, step, phase) (0, 5, 0) arrived after" in run.stream, diagnostics


RAY_REASON = (
    "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m "
    '(pid=7)\n  File "client_app.py", line 9, in run\n    raise InjectedCrash(what)\n\n'
    "Exception ClientAppException occurred. Message: injected crash'>"
)


class _Link:
    """The push and pull a strategy sees of a SuperLink whose node 1 answers, node 2's ClientApp raises,
    node 3's message has expired unanswered (the SuperLink then answers "Message Unavailable"), and node 4's
    ClientApp raises in a simulation (Ray's coloured traceback)."""

    def __init__(self) -> None:
        self.pushed: dict[str, Message] = {}

    def push_messages(self, messages):
        for message in messages:
            message.metadata.__dict__["_message_id"] = uuid4().hex
            self.pushed[message.metadata.message_id] = message
        return list(self.pushed)

    def pull_messages(self, message_ids):
        answers = {
            1: RecordDict(),
            2: Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason="<class 'ValueError'>:<'boom'>"),
            3: Error(code=ErrorCode.MESSAGE_UNAVAILABLE, reason="Error: Message Unavailable - ... expired ..."),
            4: Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=RAY_REASON),
        }
        return [Message(answers[self.pushed[i].metadata.dst_node_id], reply_to=self.pushed[i]) for i in message_ids]


def test_an_expired_message_is_the_clients_silence_and_a_client_error_one_line(monkeypatch):
    for name, value in (("_run_id", 1), ("_node_id", SUPERLINK_NODE_ID), ("_task_id", 1)):  # as a ServerApp's
        monkeypatch.setattr(TaskIdentity, name, value)
    contents = {node: RecordDict() for node in (1, 2, 3, 4)}
    result = exchange(_Link(), contents, "train.forward", timeout_s=5)
    assert list(result.replies) == [1]
    assert result.failures == {
        2: "client error: <class 'ValueError'>:<'boom'>",
        3: "no reply within 5 s (the SuperLink: message unavailable)",
        4: "client error: Exception ClientAppException occurred. Message: injected crash'>",  # its last line
    }
