"""Computation per sample of every method, client and server apart: our `calculate_computation_overhead.py`.

    python -m mpsl_flower.tools.overhead --dataset coco-qa --encoder-size vit-b16 \\
        --nr-of-last-encoder-blocks-to-finetune 6

Options are the run-config keys (`--help`). The model is built with random weights in the task's
real shapes, so nothing is read from disk or the network. fvcore counts one forward pass of one
sample, as the original does: its per-module table (depth 4), then forward and training MACs
(FLOPs = 2 x MACs) for MPSL, FedAvg, FedCLIP and centralized, on the client and on the server
(`mpsl_flower.measure.accounting` says what training adds). Twice: the true count, with attention's
two matmuls, and the original tool's, where timm's fused attention counts as zero (what the paper's
figures come from). The frozen text encoder runs once per text before training, and the original
leaves it out; it gets a line of its own. `--json` writes the figures for the notebooks and the
scaling study.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from fvcore.nn import FlopCountAnalysis, flop_count_table

from mpsl_flower.config import CLIP_TEXT_WIDTH, ENCODER_SIZES, METHODS, ConfigError, RunConfig, parse_run_config
from mpsl_flower.logs import weight_file_notes_silenced
from mpsl_flower.measure.accounting import (
    CLIENT,
    SERVER,
    Part,
    SideCost,
    analytic_parts,
    as_the_original_tool_counts,
    method_costs,
)
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.models.pretrained import CLIP_B16_MAX_WIDTH
from mpsl_flower.models.tokenizers import example_inputs

TABLE_DEPTH = 4  # the original prints fvcore's table to depth 4
GIGA = 1e9
CLIP_TEXT = {  # OpenAI CLIP text towers, the original's text encoder: (width, layers, heads, projection)
    "ViT-B/16": (512, 12, 8, 512),
    "ViT-L/14": (768, 12, 12, 768),
}


def _without_fused_attention(model: torch.nn.Module) -> torch.nn.Module:
    """timm's fused attention is one op fvcore cannot count; the explicit q @ k^T and attn @ v it can."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return model


def _count(model: torch.nn.Module, inputs: tuple) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, inputs)
    analysis.unsupported_ops_warnings(False)  # element-wise ops, uncounted on purpose (as the original)
    analysis.uncalled_modules_warnings(False)
    return analysis


def measured_parts(config: RunConfig) -> tuple[list[Part], FlopCountAnalysis]:
    """`config`'s model as `Part`s with fvcore's forward count for one sample, and the (unfused) analysis.

    fvcore runs twice: on the model as built (timm's fused attention, which it counts as zero, as
    the original's tool does) and with attention unfused; the difference is each part's `attention`.
    """
    model = new_full_model(dataclasses.replace(config, embedded_pretraining=False)).eval()  # counts need no weights
    inputs = example_inputs(config.task, batch=1, text_feature_dim=ENCODER_SIZES[config.encoder_size].dim)
    fused = _count(model, (inputs,)).by_module()
    analysis = _count(_without_fused_attention(model), (inputs,))
    counted = analysis.by_module()
    parts = []
    for part in analytic_parts(config):
        module = model.get_submodule(part.name)
        trained = any(p.requires_grad for p in module.parameters())
        forward = float(counted.get(part.name, 0))
        attention = forward - float(fused.get(part.name, 0))
        parts.append(dataclasses.replace(part, forward=forward, trained=trained, attention=attention))
    return parts, analysis


def text_encoder_macs(config: RunConfig) -> tuple[str, float] | None:
    """The original's frozen text encoder (OpenAI CLIP's text tower, random weights in its real shape)
    and its MACs for one sample's texts, for `text-encoder` `auto` or `clip`; None for a task without
    text, an encoder narrower than CLIP's 512 (the original feeds it token ids) or another text encoder."""
    task = config.task
    width = ENCODER_SIZES[config.encoder_size].dim
    if task.text is None or config.text_encoder not in ("auto", "clip") or width < CLIP_TEXT_WIDTH:
        return None
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    name = "ViT-L/14" if width > CLIP_B16_MAX_WIDTH else "ViT-B/16"
    text_width, layers, heads, projection = CLIP_TEXT[name]
    text_config = CLIPTextConfig(
        hidden_size=text_width,
        intermediate_size=4 * text_width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        projection_dim=projection,
        attn_implementation="eager",
    )
    tower = CLIPTextModelWithProjection(text_config).eval()
    ids = torch.zeros(task.text.per_sample, text_config.max_position_embeddings, dtype=torch.long)
    analysis = _count(tower, (ids,))
    return f"OpenAI CLIP {name} text tower, {task.text.per_sample} text(s) of 77 tokens", float(analysis.total())


def method_config(config: RunConfig, method: str) -> RunConfig:
    """`config` for another method: the same task, encoder and options."""
    return dataclasses.replace(config, method=method)


def overhead(config: RunConfig) -> dict:
    """Per-sample MACs of every method, by side, with what the tables print: `methods` counts attention's
    matmuls, `original_tool` counts them as zero (as the original's tool does)."""
    figures: dict = {"dataset": config.dataset, "encoder_size": config.encoder_size, "methods": {}, "original_tool": {}}
    for method in METHODS:
        parts, analysis = measured_parts(method_config(config, method))
        for key, counted in (("methods", parts), ("original_tool", as_the_original_tool_counts(parts))):
            costs = method_costs(method, counted)
            figures[key][method] = {side: dataclasses.asdict(cost) for side, cost in costs.items()}
        if method == config.method:
            figures["table"] = flop_count_table(analysis, max_depth=TABLE_DEPTH)
            figures["parts"] = [dataclasses.asdict(part) for part in parts]
    text = text_encoder_macs(config)
    figures["text_encoder"] = {"name": text[0], "macs": text[1]} if text else None
    return figures


def _g(macs: float) -> str:
    return f"{macs / GIGA:10.4f}"


TRUE_COUNT = "True count (ours): attention's two matmuls (q k^T, attn v) included"
ORIGINAL_COUNT = (
    "As the original's tool counts (where the paper's ratios come from): attention as zero, since timm 1.0.7\n"
    "fuses it into scaled_dot_product_attention, which fvcore 0.1.5 does not count"
)


def _totals(title: str, methods: dict) -> list[str]:
    """One block of totals: forward and training MACs and FLOPs (2 x MACs) per method and side, and the
    client ratio of FedAvg to MPSL."""
    lines = [
        f"{title}:",
        f"{'method':<12}{'side':<8}{'fwd GMACs':>11}{'train GMACs':>13}{'fwd GFLOPs':>12}{'train GFLOPs':>14}",
    ]
    for method, sides in methods.items():
        for side in (CLIENT, SERVER):
            cost = SideCost(**sides[side])
            lines.append(
                f"{method:<12}{side:<8}{_g(cost.forward):>11}{_g(cost.training):>13}"
                f"{_g(2 * cost.forward):>12}{_g(2 * cost.training):>14}"
            )
    mpsl, fedavg = methods["mpsl"][CLIENT], methods["fedavg"][CLIENT]
    if mpsl["training"]:
        ratio = fedavg["training"] / mpsl["training"]
        lines.append(f"FedAvg's client trains with {ratio:,.0f}x the MACs of an MPSL client")
    return [*lines, ""]


def render(figures: dict) -> str:
    """The per-module table and the totals, true and as the original's tool counts, as the tool prints them."""
    lines = [
        f"{figures['dataset']}, {figures['encoder_size']}: one sample, random weights in the real shapes",
        "",
        "Per module (fvcore, attention unfused; its '#flops' column counts multiply-accumulates, i.e. MACs):",
        figures["table"],
        "",
        "Totals per sample, in G (1e9). MACs as fvcore counts them; FLOPs = 2 x MACs",
        "(the original's tool says to divide MACs by 2 for FLOPs: it is a multiplication).",
        "training = forward + backward of what is trained (see mpsl_flower/measure/accounting.py)",
        "",
        *_totals(TRUE_COUNT, figures["methods"]),
        *_totals(ORIGINAL_COUNT, figures["original_tool"]),
    ]
    lines.append("Our MPSL client also re-runs its forward pass when the cut gradient arrives (+ one client forward).")
    text = figures["text_encoder"]
    if text:
        lines.append(
            f"Frozen text encoder (not in the totals, as in the original): {text['name']}: "
            f"{text['macs'] / GIGA:.4f} GMACs per sample, computed once per text and cached"
        )
    return "\n".join(lines)


def _summary_cells(methods: dict) -> list[str]:
    """Forward / training GMACs of an MPSL client, the MPSL server and a FedAvg client, and the client ratio."""
    client, server, fedavg = methods["mpsl"][CLIENT], methods["mpsl"][SERVER], methods["fedavg"][CLIENT]
    cells = [f"{c['forward'] / GIGA:.3f} / {c['training'] / GIGA:.3f}" for c in (client, server, fedavg)]
    return [*cells, f"{fedavg['training'] / client['training']:,.0f}x"]


def summary_table(figures: list[dict]) -> str:
    """Two Markdown rows per task (the README's table): forward and training GMACs per sample of an MPSL
    client, the MPSL server and a FedAvg client, and the client ratio, as we count them (attention's
    matmuls included) and as the original's tool counts them (fused attention counted as zero)."""
    columns = ("MPSL client", "MPSL server", "FedAvg client")
    lines = [
        "| task | count | " + " | ".join(f"{c} fwd / train" for c in columns) + " | FedAvg / MPSL client |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for figure in figures:
        for label, key in (("ours (true)", "methods"), ("original's tool", "original_tool")):
            lines.append(f"| {figure['dataset']} | {label} | {' | '.join(_summary_cells(figure[key]))} |")
    return "\n".join(lines)


def _argument_parser() -> argparse.ArgumentParser:
    """One option per run-config key, with the run config's defaults."""
    parser = argparse.ArgumentParser(
        prog="python -m mpsl_flower.tools.overhead",
        description="MACs per sample of MPSL, FedAvg, FedCLIP and centralized, client and server (README).",
    )
    parse_bool = {"true": True, "false": False}
    for f in dataclasses.fields(RunConfig):
        key = f.metadata["key"]
        kind = {"bool": lambda value: parse_bool[value.lower()], "int": int, "float": float}.get(f.type, str)
        parser.add_argument(f"--{key}", dest=key, type=kind, default=argparse.SUPPRESS, help=f"default: {f.default!r}")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--datasets", nargs="+", help="print one summary row (GMACs) per dataset instead (the README's table)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = vars(_argument_parser().parse_args(argv))
    output, datasets = arguments.pop("json", None), arguments.pop("datasets", None)
    try:
        configs = [parse_run_config({**arguments, "dataset": d}) for d in datasets or [arguments.get("dataset")]]
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with weight_file_notes_silenced():  # random weights on purpose
        figures = [overhead(config) for config in configs]
    print(summary_table(figures) if datasets else render(figures[0]))
    if output:
        output.write_text(json.dumps(figures if datasets else figures[0], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
