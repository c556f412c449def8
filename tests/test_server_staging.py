"""Staging: clients' activations sent to the device as each reply arrives give the step that copies them at the forward.

On a CPU `ServerSide.stage` keeps the tensors and `forward_staged` hands them to `forward`; these tests pin down
that the staged step is the unstaged one bit for bit, whatever order the clients are staged in and whichever
staged client drops out, and that `exchange` calls its `on_reply` for each reply as it arrives, so that the
strategy can stage while it waits for the others. (The CUDA path, page-locked copies on a side stream, needs a
GPU: `bench/bench_server_step.py` times it and compares its step.)
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from support.inprocess_grid import InProcessGrid

from mpsl_flower import wire
from mpsl_flower.config import ENCODER_SIZES
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.split.optimizer import new_optimizer
from mpsl_flower.split.server_side import ServerSide
from strategies.exchange import exchange
from tasks.registry import TASKS

TASK = TASKS["shapes-qa"]
CPU = torch.device("cpu")
LR = 1e-3
SIZES = (5, 3, 4)  # three clients' batches


def _server() -> ServerSide:
    torch.manual_seed(0)
    model = ServerModel(TASK, ENCODER_SIZES["tiny-default"], finetune_blocks=2, post_layer_norm=True)
    return ServerSide(model, LR, CPU)


def _activations(dtype: torch.dtype) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [{"fused": torch.randn(size, 18, 96, generator=generator).to(dtype)} for size in SIZES]


def _logit_grads(logits: list[torch.Tensor]) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return [torch.randn(part.shape, generator=generator) / 8 for part in logits]


def _step(server: ServerSide, forward) -> dict[str, torch.Tensor]:
    """Logits, cut gradients and weights after one step whose forward is `forward()`."""
    logits = forward()
    cut = server.backward(_logit_grads(logits))
    return {
        "logits": torch.cat(logits),
        "cut": torch.cat([c["fused"] for c in cut]),
        "weights": torch.cat([v.flatten() for v in server.model.state_dict().values()]),
    }


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    for key in a:
        assert a[key].dtype == b[key].dtype == torch.float32, key
        assert torch.equal(a[key], b[key]), key


def test_an_unstaged_step_is_the_models_step_on_the_float32_concatenation():
    """The oracle for the tests below: `forward` + `backward` are the model's forward, backward and Adam step."""
    clients = _activations(torch.bfloat16)
    server = _server()
    ours = _step(server, lambda: server.forward(clients))

    model = _server().model
    optimizer = new_optimizer(model, LR)
    inputs = {"fused": torch.cat([c["fused"].float() for c in clients]).requires_grad_(True)}
    logits = model(inputs).float()
    logits.backward(torch.cat(_logit_grads(list(logits.detach().split(SIZES)))))
    optimizer.step()
    weights = torch.cat([v.flatten() for v in model.state_dict().values()])
    _assert_identical(ours, {"logits": logits.detach(), "cut": inputs["fused"].grad, "weights": weights})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_staged_step_is_the_unstaged_step_bit_for_bit_whatever_the_staging_order(dtype):
    clients = _activations(dtype)
    unstaged = _server()
    expected = _step(unstaged, lambda: unstaged.forward(clients))
    staged = _server()
    for client in (2, 0, 1):  # replies arrive in another order than the forward's
        staged.stage(f"node-{client}", clients[client])
    _assert_identical(_step(staged, lambda: staged.forward_staged(["node-0", "node-1", "node-2"])), expected)


def test_a_client_staged_and_then_dropped_is_let_go_and_leaves_the_step_as_without_it():
    clients = _activations(torch.float16)
    unstaged = _server()
    expected = _step(unstaged, lambda: unstaged.forward([clients[0], clients[2]]))
    staged = _server()
    dropped = {"fused": clients[1]["fused"].clone()}
    gone = weakref.ref(dropped["fused"])
    for client in (0, 2):
        staged.stage(client, clients[client])
    staged.stage(1, dropped)
    del dropped
    _assert_identical(_step(staged, lambda: staged.forward_staged([0, 2])), expected)
    gc.collect()
    assert gone() is None  # the staging let the dropped client's tensor go
    with pytest.raises(KeyError, match=r"clients \[0\] are not staged"):  # nothing is left for the next step
        staged.forward_staged([0])


def test_staging_refuses_a_client_twice_and_tensors_that_are_not_on_the_cpu():
    server = _server()
    clients = _activations(torch.float32)
    server.stage("a", clients[0])
    with pytest.raises(KeyError, match="client 'a' is already staged"):
        server.stage("a", clients[1])
    with pytest.raises(ValueError, match=r"client 'b': stage\(\) takes CPU tensors.*\['fused'\]"):
        server.stage("b", {"fused": torch.empty(2, 18, 96, device="meta")})
    with pytest.raises(KeyError, match=r"clients \['c'\] are not staged"):
        server.forward_staged(["a", "c"])


# ---- exchange: on_reply ----------------------------------------------------------------------

echo_app = ClientApp()


@echo_app.train("echo")
def _echo(msg: Message, context: Context) -> Message:
    """Answers with its partition id; partition 1's ClientApp raises."""
    partition = int(context.node_config[wire.PARTITION_ID])
    if partition == 1:
        raise ValueError("refused")
    return Message(RecordDict({"who": ConfigRecord({"partition": partition})}), reply_to=msg)


class OneReplyPerPoll(InProcessGrid):
    """A grid whose replies come in one per poll, as from clients that finish one after another."""

    def pull_messages(self, message_ids):
        return super().pull_messages(list(message_ids)[:1])

    def waiting(self) -> int:
        return len(self._ready)


def test_on_reply_sees_each_reply_as_it_arrives_once_and_no_failure():
    grid = OneReplyPerPoll(echo_app, num_nodes=4, run_config={}, silent_partitions=[3])
    calls = []

    def on_reply(node: int, content: RecordDict) -> None:
        calls.append((node, int(content["who"]["partition"]), grid.waiting()))

    contents = {node: RecordDict() for node in grid.node_ids}
    result = exchange(grid, contents, "train.echo", timeout_s=0.5, on_reply=on_reply)
    assert sorted(result.replies) == [grid.node_ids[0], grid.node_ids[2]]
    assert sorted(result.failures) == [grid.node_ids[1], grid.node_ids[3]]  # raised; silent
    assert sorted((node, partition) for node, partition, _ in calls) == [(grid.node_ids[0], 0), (grid.node_ids[2], 2)]
    assert calls[0][2] > 0  # the first reply was handed over while another was still to be pulled
