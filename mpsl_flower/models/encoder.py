"""The modality-agnostic encoder: a stack of timm ViT blocks, sizes declared as data (`config.ENCODER_SIZES`).

Like Meta-Transformer's encoder it has no CLS, position embedding or final norm of its own:
those live in the client tokenizers (CLS, positions, pre-LN) and the server readout (post-LN).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from mpsl_flower.config import EncoderSize


class Encoder(nn.Module):
    """`depth` pre-norm transformer blocks; the first `depth - finetune_blocks` are frozen.

    Frozen blocks still pass gradients back to their input: the cut-layer gradient that the
    clients need flows through the whole stack.
    """

    def __init__(self, size: EncoderSize, finetune_blocks: int) -> None:
        super().__init__()
        if not 0 <= finetune_blocks <= size.depth:
            raise ValueError(f"finetune_blocks must be in 0..{size.depth}, got {finetune_blocks}")
        from timm.models.vision_transformer import Block  # timm is heavy: clients import this module for the sizes

        norm = partial(nn.LayerNorm, eps=1e-5)
        self.blocks = nn.ModuleList(
            Block(size.dim, size.heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm) for _ in range(size.depth)
        )
        for block in self.blocks[: size.depth - finetune_blocks]:
            block.requires_grad_(False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens)
        return tokens
