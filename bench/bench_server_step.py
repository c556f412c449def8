"""Server-step throughput: our `ServerSide` against a bare timm ViT on the same tensors, per precision.

    python bench/bench_server_step.py [--encoder-size vit-b16] [--finetune 6] [--batch 500] [--tokens 198]
                                      [--steps 10] [--warmup 3] [--precisions fp32 bf16 bf16+compile] [--clients 10]

(a) ours: `ServerSide.forward_staged` over the activations of `--clients` clients (10) and `ServerSide.backward`
with their output gradients (one MPSL server step: encoder, readout, head, Adam step, cut-layer
gradients back on the CPU); (b) bare: the same number of timm `Block`s (the last `--finetune`
trained), the same readout and head, forward, cross-entropy, backward down to the input (MPSL
must return the cut gradient, so the bare model computes it too) and an AdamW step. Both see the
same synthetic activations of the task's real shape (default: COCO-QA's 198 tokens, ViT-B/16,
last 6 blocks, batch 500). Precisions: fp32 (TF32 matmuls on GPUs that have them), bf16
autocast, bf16 autocast + torch.compile, and the last with the activations arriving in bfloat16
(`activation-precision='bfloat16'`).

Ours is timed as a strategy runs it: all but one client's activations are staged (`ServerSide.stage`:
page-locked host copy, non-blocking copy to the device on a side stream) while the server waits
for the last reply, which this bench stands in for by waiting until their copies are done; the
timed step starts with the last client's reply: its staging, the forward and the backward. It
prints samples/s of ours, of ours copying every client in at the forward (unstaged), of the bare
model, the ratio ours / bare, and how long staging the early clients takes: the time their
copies need to hide in, while the server waits for replies. It asserts nothing. Without a GPU it runs on the
CPU at the sizes given (the test suite runs it tiny).

Flower-free: a GPU machine needs torch and timm only.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn

from mpsl_flower.config import ENCODER_SIZES
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.split.server_side import ServerSide
from tasks.spec import EARLY_FUSION, FUSED_STREAM, TaskSpec, TextInput

CLIENTS = 10
NUM_CLASSES = 430  # COCO-QA's answers
# label -> (server precision, torch.compile, dtype the activations arrive in)
PRECISIONS = {
    "fp32": ("fp32", False, torch.float32),
    "bf16": ("bf16", False, torch.float32),
    "bf16+compile": ("bf16", True, torch.float32),
    "bf16+compile, bf16 wire": ("bf16", True, torch.bfloat16),
}


def task_of_shape(tokens: int) -> TaskSpec:
    """An early-fusion classification task whose one stream has `tokens` tokens (COCO-QA: 197 + 1)."""
    return TaskSpec(
        name="bench",
        description="synthetic activations of a real task's shape",
        num_classes=NUM_CLASSES,
        class_names=(),
        fusion=EARLY_FUSION,
        readout=((FUSED_STREAM, 0, "image"), (FUSED_STREAM, -1, "text")),
        text=TextInput(),
    )


class BareViT(nn.Module):
    """timm blocks, the same readout (mean of the first and last outputs) and a linear head."""

    def __init__(self, dim: int, depth: int, heads: int, finetune: int) -> None:
        super().__init__()
        norm = partial(nn.LayerNorm, eps=1e-5)
        self.blocks = nn.Sequential(
            *(Block(dim, heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm) for _ in range(depth))
        )
        self.blocks[: depth - finetune].requires_grad_(False)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        encoded = self.blocks(tokens)
        return self.head((encoded[:, 0] + encoded[:, -1]) / 2)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a time taken next includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed(step, steps: int, warmup: int, device: torch.device, before=None) -> tuple[float, float]:
    """Mean seconds of `step`, and of `before` (None: nothing), which runs ahead of each step and is waited for
    but left out of the step's time. Every step is waited for, the bare model's too: that costs it the launch
    of its first kernel, microseconds against a step's 100s of milliseconds."""
    spent, ahead = 0.0, 0.0
    for index in range(warmup + steps):
        started = time.perf_counter()
        if before is not None:
            before()
        synchronize(device)
        ready = time.perf_counter()
        step()
        synchronize(device)
        if index >= warmup:
            spent, ahead = spent + time.perf_counter() - ready, ahead + ready - started
    return spent / steps, ahead / steps


def ours_step_s(
    args, device: torch.device, precision: str, compile_model: bool, staged: bool, wire: torch.dtype
) -> tuple[float, float]:
    """Seconds per server step, and per staging of the clients that replied before the last; `staged`: as
    the strategy runs it (see the module docstring), else every client is copied in at the forward."""
    size = ENCODER_SIZES[args.encoder_size]
    torch.manual_seed(0)
    model = ServerModel(task_of_shape(args.tokens), size, args.finetune, post_layer_norm=False)
    server = ServerSide(model, 1e-4, device, precision=precision, compile_model=compile_model)
    per_client = args.batch // args.clients
    shape = (per_client, args.tokens, size.dim)
    activations = [{FUSED_STREAM: torch.randn(shape).to(wire)} for _ in range(args.clients)]
    grads = [torch.randn(per_client, NUM_CLASSES) / args.batch for _ in range(args.clients)]
    *early, last = range(args.clients)

    def stage_early() -> None:
        for client in early:
            server.stage(client, activations[client])

    def step() -> None:
        if staged:
            server.stage(last, activations[last])
            server.forward_staged(list(range(args.clients)))
        else:
            server.forward(activations)
        server.backward(grads)

    return _timed(step, args.steps, args.warmup, device, stage_early if staged else None)


def bare_step_s(args, device: torch.device, precision: str, compile_model: bool) -> float:
    size = ENCODER_SIZES[args.encoder_size]
    torch.manual_seed(0)
    model = BareViT(size.dim, size.depth, size.heads, args.finetune).to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    forward = torch.compile(model) if compile_model else model
    tokens = torch.randn(args.batch, args.tokens, size.dim, device=device)
    labels = torch.randint(NUM_CLASSES, (args.batch,), device=device)

    def step() -> None:
        inputs = tokens.clone().requires_grad_(True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = nn.functional.cross_entropy(forward(inputs).float(), labels)
        loss.backward()
        optimizer.step()

    return _timed(step, args.steps, args.warmup, device)[0]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder-size", default="vit-b16", choices=tuple(ENCODER_SIZES))
    parser.add_argument("--finetune", type=int, default=6)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--tokens", type=int, default=198)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=tuple(PRECISIONS))
    parser.add_argument("--clients", type=int, default=CLIENTS, help="clients the batch is split over")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.set_float32_matmul_precision("high")  # TF32 where the GPU has it, for ours and the bare model alike
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"{name}: {args.encoder_size}, last {args.finetune} blocks, batch {args.batch} x {args.tokens} tokens")
    early = f"staging of {args.clients - 1} clients, ms"
    print(f"| precision | ours samples/s | ours, unstaged | bare timm | ours / bare | {early} |")
    print("|---|---:|---:|---:|---:|---:|")
    rows = []
    for label in args.precisions:
        precision, compile_model, wire = PRECISIONS[label]
        step_s, staging_s = ours_step_s(args, device, precision, compile_model, staged=True, wire=wire)
        unstaged_s, _ = ours_step_s(args, device, precision, compile_model, staged=False, wire=wire)
        bare_s = bare_step_s(args, device, precision, compile_model)
        ours, unstaged, bare = args.batch / step_s, args.batch / unstaged_s, args.batch / bare_s
        rows.append({"precision": label, "ours": ours, "ours_unstaged": unstaged, "bare": bare, "staging_s": staging_s})
        print(
            f"| {label} | {ours:,.0f} | {unstaged:,.0f} | {bare:,.0f} | {ours / bare:.2f} | {1000 * staging_s:,.1f} |",
            flush=True,
        )
    return rows


if __name__ == "__main__":
    main()
