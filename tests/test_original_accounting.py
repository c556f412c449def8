"""Our figures next to the original's: its tool's MACs (fused attention counted as zero), its trainers'
byte counting (each client charged the whole batch's output storage, a scalar loss going up), and
FLOPs printed as 2 x MACs (the original's tool says to divide by 2)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from mpsl_flower.config import ENCODER_SIZES, parse_run_config
from mpsl_flower.measure.accounting import (
    OriginalBytes,
    analytic_parts,
    as_the_original_tool_counts,
    original_mpsl_bytes_per_batch,
    original_mpsl_bytes_per_client_epoch,
    original_output_elements,
)
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.models.tokenizers import example_inputs
from mpsl_flower.tools import overhead, scaling
from tasks.registry import TASKS

TOKENS, DIM, DEPTH = 18, 96, 4  # shapes-qa on tiny-default: 16 patches + CLS + 1 text token, width 96, 4 blocks
ATTENTION_PER_BLOCK = 2 * TOKENS**2 * DIM  # q k^T and attn v, forward
OVERHEAD = sys.getsizeof(torch.UntypedStorage(0))  # what sys.getsizeof adds to a storage's bytes


def _fvcore_on_the_fused_model(config) -> dict[str, int]:
    """fvcore on the model as built (timm's fused attention), per module: what the original's tool sees."""
    model = new_full_model(config).eval()
    inputs = example_inputs(config.task, batch=1, text_feature_dim=ENCODER_SIZES[config.encoder_size].dim)
    analysis = FlopCountAnalysis(model, (inputs,))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis.by_module()


def test_the_original_tools_count_is_ours_less_the_attention_matmuls_on_a_tiny_encoder():
    config = parse_run_config({"dataset": "shapes-qa"})
    ours = analytic_parts(config)
    original = as_the_original_tool_counts(ours)
    fused = _fvcore_on_the_fused_model(config)
    for mine, theirs in zip(ours, original, strict=True):
        attention = ATTENTION_PER_BLOCK if mine.name.startswith("server.encoder.blocks.") else 0
        assert theirs.forward == mine.forward - attention
        assert theirs.forward == fused[mine.name]  # fvcore counts the fused op as zero
    measured, _ = overhead.measured_parts(config)
    assert [p.attention for p in measured] == [p.attention for p in ours]
    assert sum(p.attention for p in measured) == DEPTH * ATTENTION_PER_BLOCK


def test_two_streams_each_lose_their_own_attention():
    config = parse_run_config({"dataset": "shapes-av"})
    fused = _fvcore_on_the_fused_model(config)
    assert {p.name: p.forward for p in as_the_original_tool_counts(analytic_parts(config))} == {
        p.name: fused[p.name] for p in analytic_parts(config)
    }


def test_the_tool_prints_both_counts_and_flops_as_twice_the_macs(tmp_path, capsys):
    assert overhead.main(["--dataset", "shapes-qa", "--json", str(tmp_path / "o.json")]) == 0
    printed = capsys.readouterr().out
    assert overhead.TRUE_COUNT in printed and overhead.ORIGINAL_COUNT in printed
    assert "FLOPs = 2 x MACs" in printed and "divide MACs by 2" in printed
    figures = json.loads((tmp_path / "o.json").read_text())
    for method in ("mpsl", "fedavg", "centralized"):
        ours, theirs = figures["methods"][method], figures["original_tool"][method]
        side = "client" if method == "fedavg" else "server"
        assert theirs[side]["forward"] == ours[side]["forward"] - DEPTH * ATTENTION_PER_BLOCK
    assert figures["original_tool"]["mpsl"]["client"] == figures["methods"]["mpsl"]["client"]  # no attention there
    for key in ("methods", "original_tool"):
        server = figures[key]["mpsl"]["server"]
        row = "".join(f"{value / 1e9:10.4f}" for value in (server["forward"], server["training"]))
        flops = "".join(f"{2 * value / 1e9:10.4f}" for value in (server["forward"], server["training"]))
        assert any(line.replace(" ", "").endswith((row + flops).replace(" ", "")) for line in printed.splitlines())


def test_the_summary_table_has_a_row_for_each_count():
    table = overhead.summary_table([overhead.overhead(parse_run_config({"dataset": "shapes-qa"}))])
    assert "| shapes-qa | ours (true) |" in table and "| shapes-qa | original's tool |" in table


def test_the_originals_byte_count_on_a_hand_computed_case():
    """3 clients of 2 samples, one stream of 3 tokens x 4 wide, 5 classes, overhead 80 bytes per tensor."""
    common = {"stream_elements": [12], "output_elements": [5], "client_trains": True, "storage_overhead": 80}
    step = original_mpsl_bytes_per_batch(mini_batch=2, clients=3, **common)
    activations, loss, outputs = 2 * 12 * 4 + 80, 4 + 80, 3 * 2 * 5 * 4 + 80  # the outputs of all 6 samples
    assert step == OriginalBytes(up=activations + loss, down=outputs + activations)
    frozen = original_mpsl_bytes_per_batch(mini_batch=2, clients=3, **{**common, "client_trains": False})
    assert frozen == OriginalBytes(up=260, down=200)  # no cut-layer gradient for a client that does not train
    epoch = original_mpsl_bytes_per_client_epoch(5, 2, 3, **common)  # steps of 2, 2 and 1 sample
    last = OriginalBytes(up=(12 * 4 + 80) + 84, down=(3 * 5 * 4 + 80) + (12 * 4 + 80))
    assert epoch == OriginalBytes(up=2 * 260 + last.up, down=2 * 376 + last.down)
    with pytest.raises(ValueError, match="must all be at least 1"):
        original_mpsl_bytes_per_client_epoch(0, 2, 3, **common)


@pytest.mark.parametrize("retrieval", [False, True])
def test_the_formula_matches_sys_getsizeof_on_tensors_sent_the_originals_way(retrieval):
    """Real tensors handled as the original's trainers handle them: activations concatenated, outputs sliced
    (views), loss per client, the gradient's slice cloned; their storages' sizes against the formula."""
    clients, mini_batch, tokens, dim, classes = 3, 2, 5, 8, 4
    torch.manual_seed(0)
    layer = torch.nn.Linear(dim, dim)
    sent = [layer(torch.randn(mini_batch, tokens, dim)) for _ in range(clients)]
    server_in = torch.cat(sent).detach().requires_grad_(True)
    encoded = server_in * 2.0
    outputs = [encoded[:, 0]] if retrieval else [encoded.mean(dim=1) @ torch.randn(dim, classes)]
    slices = [[out[c * mini_batch : (c + 1) * mini_batch] for out in outputs] for c in range(clients)]
    losses = [sum(s.square().mean() for s in client) for client in slices]
    sum(losses).backward()
    gradient = server_in.grad[:mini_batch].clone()
    up = sys.getsizeof(sent[0].untyped_storage()) + sys.getsizeof(losses[0].untyped_storage())
    down = sum(sys.getsizeof(s.untyped_storage()) for s in slices[0]) + sys.getsizeof(gradient.untyped_storage())
    task = TASKS["flickr30k" if retrieval else "shapes-qa"]
    elements = [tokens * dim] if retrieval else [classes]  # an image feature without post-LN: all its tokens
    if retrieval:
        assert original_output_elements(task, dim, tokens, post_layer_norm=False)[0] == elements[0]
    expected = original_mpsl_bytes_per_batch(
        stream_elements=[tokens * dim],
        output_elements=elements,
        mini_batch=mini_batch,
        clients=clients,
        client_trains=True,
        storage_overhead=OVERHEAD,
    )
    assert (up, down) == (expected.up, expected.down)


def test_the_scaling_command_prints_the_originals_count_next_to_ours(tmp_path, capsys):
    arguments = ["--datasets", "shapes-qa", "--encoder-sizes", "tiny-default", "--samples-per-client", "10"]
    arguments += ["--nr-of-last-encoder-blocks-to-finetune", "2", "--clients", "4", "--batch-size", "8"]
    arguments += ["--json", str(tmp_path / "s.json")]
    assert scaling.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "original's count: MPSL MiB/client/epoch up / down" in printed and "4 clients, global batch 8" in printed
    (row,) = json.loads((tmp_path / "s.json").read_text())
    activations = 2 * TOKENS * DIM * 4 + OVERHEAD  # mini-batch of 8 / 4 = 2, five steps
    outputs = 4 * 2 * TASKS["shapes-qa"].num_classes * 4 + OVERHEAD
    assert row["original_mib_up_per_client_epoch"] * 2**20 == pytest.approx(5 * (activations + 4 + OVERHEAD))
    assert row["original_mib_down_per_client_epoch"] * 2**20 == pytest.approx(5 * (outputs + activations))
    assert row["mpsl_mb_per_client_epoch"] * 1e6 == pytest.approx(10 * 2 * (TOKENS * DIM + 7) * 4)  # ours
