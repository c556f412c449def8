"""The computation overhead tool: fvcore's counts on our real models, the analytic counts that match them,
and what training adds, on random weights in the real shapes."""

from __future__ import annotations

import json

import pytest

from mpsl_flower.config import parse_run_config
from mpsl_flower.measure.accounting import CLIENT, SERVER, Part, analytic_parts, method_costs, training_macs
from mpsl_flower.tools import overhead
from tasks.registry import TASKS


@pytest.mark.parametrize(
    "options",
    [
        {"dataset": "shapes-qa"},
        {"dataset": "shapes-av", "use-post-layer-norm": True},
        {"dataset": "shapes-qa", "method": "fedclip"},
        {"dataset": "flickr30k", "encoder-size": "vit-ti16", "method": "fedclip", "include-unified-adapter": True},
        {"dataset": "meld", "encoder-size": "vit-ti16", "nr-of-last-encoder-blocks-to-finetune": 3},
        {"dataset": "ucf101", "fusion-type": "early_with_both_cls_and_pooling_mean", "audio-time-dimension": "1s"},
        {"dataset": "coco-qa", "trainable-params-key": "classifier_only"},
        {"dataset": "shapes-av", "label-privacy": "u-shaped"},
    ],
)
def test_the_analytic_count_of_every_part_equals_fvcores(options):
    config = parse_run_config(options)
    measured, analysis = overhead.measured_parts(config)
    assert [(p.name, p.forward, p.trained) for p in measured] == [
        (p.name, p.forward, p.trained) for p in analytic_parts(config)
    ]
    assert sum(p.forward for p in measured) == analysis.total()  # the parts cover the whole model
    assert [p.attention for p in measured] == [p.attention for p in analytic_parts(config)]  # what fused fvcore drops


def test_a_tiny_model_counts_what_a_hand_count_gives():
    """shapes-qa on tiny-default: 32 px images in 8 px patches (16), width 96, 4 blocks, [17 image + 1 text] tokens."""
    parts = {p.name: p.forward for p in analytic_parts(parse_run_config({"dataset": "shapes-qa"}))}
    tokens, dim = 18, 96
    assert parts["client.image"] == 16 * dim * (3 * 8 * 8)  # one MAC per weight per patch
    assert parts["client.pre_norm"] == 5 * tokens * dim  # fvcore: 5 per LayerNorm element
    block = 12 * dim**2 * tokens + 2 * tokens**2 * dim + 2 * 5 * tokens * dim  # linears, q k^T and attn v, 2 LNs
    assert [parts[f"server.encoder.blocks.{i}"] for i in range(4)] == [block] * 4
    assert parts["server.head"] == dim * TASKS["shapes-qa"].num_classes
    costs = method_costs("mpsl", overhead.measured_parts(parse_run_config({"dataset": "shapes-qa"}))[0])
    assert costs[CLIENT].forward == parts["client.image"] + parts["client.pre_norm"]
    assert costs[CLIENT].forward + costs[SERVER].forward == sum(parts.values())  # client + server = whole model


def test_training_adds_weight_gradients_where_parts_train_and_input_gradients_above_the_first_that_does():
    parts = [
        Part("client.image", CLIENT, 10, trained=True, reads_data=True),
        Part("client.pre_norm", CLIENT, 1, trained=True),
        Part("server.encoder.blocks.0", SERVER, 100, trained=False),  # passes the cut gradient down
        Part("server.encoder.blocks.1", SERVER, 100, trained=True),
        Part("server.head", SERVER, 5, trained=True),
    ]
    assert training_macs(parts) == [20, 3, 200, 300, 15]
    frozen_below = [Part("client.image", CLIENT, 10, False, True), *parts[2:]]
    assert training_macs(frozen_below) == [10, 100, 200, 15]  # nothing below block 0 trains: no gradient to pass
    mpsl, fedavg, central = (method_costs(m, parts) for m in ("mpsl", "fedavg", "centralized"))
    assert (mpsl[CLIENT].training, mpsl[SERVER].training) == (23, 515)
    assert (fedavg[CLIENT].training, fedavg[SERVER].training) == (538, 0)
    assert (central[CLIENT].forward, central[SERVER].forward) == (0, 216)


def test_the_command_prints_the_table_and_totals_and_writes_json(tmp_path, capsys):
    arguments = ["--dataset", "shapes-qa", "--use-post-layer-norm", "true", "--json", str(tmp_path / "o.json")]
    assert overhead.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "client.image.patch_embed" in printed and "server.encoder.blocks.3.attn" in printed  # depth 4
    assert "FLOPs = 2 x MACs" in printed and "FedAvg's client trains with" in printed
    figures = json.loads((tmp_path / "o.json").read_text())
    assert set(figures["methods"]) == {"mpsl", "fedavg", "fedclip", "centralized"}
    assert figures["methods"]["fedavg"][SERVER] == {"forward": 0.0, "training": 0.0}
    assert figures["text_encoder"] is None  # 96 wide: the original would feed CLIP token ids


def test_the_originals_text_encoder_is_counted_on_its_own_line():
    name, macs = overhead.text_encoder_macs(parse_run_config({"dataset": "coco-qa", "encoder-size": "vit-b16"}))
    assert name.startswith("OpenAI CLIP ViT-B/16") and 2.5e9 < macs < 3.5e9  # 12 layers of 512 on 77 tokens
    assert overhead.text_encoder_macs(parse_run_config({"dataset": "ucf101"})) is None


def test_a_bad_option_is_one_line_and_exit_code_2(capsys):
    assert overhead.main(["--dataset", "meld", "--fusion-type", "late_with_both_cls_and_pooling_mean"]) == 2
    assert "fusion-type='late_with_both_cls_and_pooling_mean' does not apply to meld" in capsys.readouterr().err
