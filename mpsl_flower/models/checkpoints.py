"""Readers for the official weight files, each mapping the file's names onto ours.

One reader per format: the Meta-Transformer encoder (flat `{i}.{param}` timm block keys),
OpenCLIP (visual tower, its tokenizer parts and the text tower), transformers ViT (the
original's ViT-Ti/16 and ViT-S/16, renamed to OpenCLIP's names) and AST (the audio patch
embedding). Each checks every key and shape it needs before copying anything, and fails
with a `CheckpointError` that names the file, the missing and unexpected keys and the shape
mismatches, so a wrong or truncated download is caught at start-up rather than as NaNs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mpsl_flower.models.encoder import Encoder

if TYPE_CHECKING:  # open_clip and timm are heavy: imported where a reader needs them, not by every client
    from open_clip.transformer import TextTransformer

# OpenCLIP residual-block names -> timm `Block` names (the Meta-Transformer file uses timm's).
OPEN_CLIP_TO_TIMM_BLOCK = {
    "ln_1.": "norm1.",
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.": "attn.proj.",
    "ln_2.": "norm2.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
}
OPEN_CLIP_VISUAL_BLOCKS = "visual.transformer.resblocks."
OPEN_CLIP_NON_TEXT_KEYS = ("logit_scale", "logit_bias")
AST_PREFIX = "v."
HF_VIT_PREFIX = "vit."
HF_VIT_EMBEDDINGS = (
    "embeddings.cls_token",
    "embeddings.position_embeddings",
    "embeddings.patch_embeddings.projection.weight",
    "layernorm.weight",
    "layernorm.bias",
)
# transformers ViT layer names -> OpenCLIP residual-block names (query/key/value are stacked apart).
HF_VIT_TO_OPEN_CLIP = {
    "layernorm_before.": "ln_1.",
    "attention.output.dense.": "attn.out_proj.",
    "layernorm_after.": "ln_2.",
    "intermediate.dense.": "mlp.c_fc.",
    "output.dense.": "mlp.c_proj.",
}
LISTED = 8  # keys listed per category in an error message


class CheckpointError(ValueError):
    """A weight file that cannot be used; the message names the file and what is wrong."""


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a `torch.save`d state_dict (.pth/.pt/.bin) or a .safetensors file."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any reader failure means the same thing to the user
        raise CheckpointError(f"{path} cannot be read as a checkpoint ({error}); download it again") from error
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat state_dict of tensors (found {type(state).__name__})")
    return dict(state)


def check_keys(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Size], source: Path | str) -> None:
    """Raise unless `found` has exactly the keys of `expected`, with the same shapes."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{key}: file {list(found[key].shape)}, model {list(expected[key])}"
        for key in sorted(set(found) & set(expected))
        if tuple(found[key].shape) != tuple(expected[key])
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:LISTED])}{' ...' if len(items) > LISTED else ''}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        raise CheckpointError(
            f"{source} does not match the model: "
            + "; ".join(problems)
            + ". Check that the file is the one for this encoder size and was fully downloaded."
        )


def _require(state: Mapping[str, torch.Tensor], keys, source: Path | str, kind: str, shown_prefix: str = "") -> None:
    missing = sorted(shown_prefix + key for key in keys if key not in state)
    if missing:
        raise CheckpointError(f"{source} is not {kind}: missing keys {missing}")


def _check_patch_conv(weight: torch.Tensor, tokenizer: nn.Module, source: Path | str, name: str, hint: str) -> None:
    needed = tokenizer.patch_embed.weight.shape
    if weight.shape != needed:
        raise CheckpointError(
            f"{source}: {name} is {list(weight.shape)} but the tokenizer needs {list(needed)}: {hint}"
        )


def _shapes(module: nn.Module) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in module.state_dict().items()}


# ---- Meta-Transformer encoder ---------------------------------------------------------------


def load_meta_transformer(encoder: Encoder, state: Mapping[str, torch.Tensor], source: Path | str) -> None:
    """Load a Meta-Transformer encoder file (`{i}.{param}` keys) into `encoder.blocks`."""
    check_keys(state, _shapes(encoder.blocks), source)
    encoder.blocks.load_state_dict(dict(state))


def open_clip_visual_blocks(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenCLIP's visual transformer blocks renamed to the Meta-Transformer layout.

    Meta-Transformer's encoder is CLIP's visual tower in timm naming, so an OpenCLIP
    checkpoint initialises the encoder exactly as the Meta-Transformer file would.
    """
    blocks = {}
    for key, value in state.items():
        if not key.startswith(OPEN_CLIP_VISUAL_BLOCKS):
            continue
        name = key[len(OPEN_CLIP_VISUAL_BLOCKS) :]
        for ours_from, ours_to in OPEN_CLIP_TO_TIMM_BLOCK.items():
            name = name.replace(ours_from, ours_to)
        blocks[name] = value
    return blocks


# ---- transformers ViT (the original's ViT-Ti/16 and ViT-S/16) ----------------------------------


def hf_vit_as_open_clip(state: Mapping[str, torch.Tensor], source: Path | str) -> dict[str, torch.Tensor]:
    """A transformers ViT checkpoint renamed to OpenCLIP's visual names, so the OpenCLIP readers serve it.

    The layout is the one `WinKawaks/vit-{tiny,small}-patch16-224` ship (`ViTForImageClassification`,
    keys under `vit.`; a bare `ViTModel` file works too). As in the original: CLS, positions,
    patch projection (its bias dropped), the final LayerNorm as post-LN, the layers as encoder
    blocks with query, key and value stacked into one projection; there is no pre-LN.
    """
    vit = {key.removeprefix(HF_VIT_PREFIX): value for key, value in state.items()}
    _require(vit, HF_VIT_EMBEDDINGS, source, "a transformers ViT checkpoint", HF_VIT_PREFIX)
    renamed = {
        "visual.class_embedding": vit["embeddings.cls_token"].reshape(-1),
        "visual.positional_embedding": vit["embeddings.position_embeddings"][0],
        "visual.conv1.weight": vit["embeddings.patch_embeddings.projection.weight"],
        "visual.ln_post.weight": vit["layernorm.weight"],
        "visual.ln_post.bias": vit["layernorm.bias"],
    }
    layers = sorted({int(key.split(".")[2]) for key in vit if key.startswith("encoder.layer.")})
    for i in layers:
        layer, attention = f"encoder.layer.{i}.", f"encoder.layer.{i}.attention.attention."
        stacked = [f"{attention}{part}.{kind}" for kind in ("weight", "bias") for part in ("query", "key", "value")]
        _require(vit, stacked, source, "a transformers ViT checkpoint", HF_VIT_PREFIX)
        for kind in ("weight", "bias"):
            parts = [vit[f"{attention}{part}.{kind}"] for part in ("query", "key", "value")]
            renamed[f"{OPEN_CLIP_VISUAL_BLOCKS}{i}.attn.in_proj_{kind}"] = torch.cat(parts)
        for key, value in vit.items():
            if key.startswith(layer) and not key.startswith(attention):
                rest = key[len(layer) :]
                ours = next(
                    (new + rest[len(old) :] for old, new in HF_VIT_TO_OPEN_CLIP.items() if rest.startswith(old)), rest
                )
                renamed[f"{OPEN_CLIP_VISUAL_BLOCKS}{i}.{ours}"] = value
    return renamed


# ---- OpenCLIP tokenizer parts and text tower -------------------------------------------------


def _resampled_positions(
    positions: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int], prefix: int
) -> torch.Tensor:
    """Position embeddings [prefix + h*w, D] interpolated to another patch grid (timm's resampler)."""
    if tuple(new_grid) == tuple(old_grid):
        return positions
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(positions.unsqueeze(0), list(new_grid), list(old_grid), num_prefix_tokens=prefix)[0]


def open_clip_image_tokenizer(
    state: Mapping[str, torch.Tensor], tokenizer: nn.Module, source: Path | str
) -> dict[str, torch.Tensor]:
    """`ImageTokenizer` weights from an OpenCLIP checkpoint: conv1, class and position embeddings.

    The position embedding is interpolated when the tokenizer's patch grid differs from the
    checkpoint's (e.g. another image size).
    """
    _require(
        state,
        ("visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding"),
        source,
        "an OpenCLIP ViT checkpoint",
    )
    conv = state["visual.conv1.weight"]
    _check_patch_conv(
        conv, tokenizer, source, "visual.conv1.weight", "the checkpoint is for another width or patch size"
    )
    positions = state["visual.positional_embedding"]
    old_side = round((positions.shape[0] - 1) ** 0.5)
    new_side = round((tokenizer.pos_embed.shape[0] - 1) ** 0.5)
    return {
        "patch_embed.weight": conv,
        "cls_token": state["visual.class_embedding"],
        "pos_embed": _resampled_positions(positions, (new_side, new_side), (old_side, old_side), prefix=1),
    }


def open_clip_layer_norm(
    state: Mapping[str, torch.Tensor], name: str, dim: int, source: Path | str
) -> dict[str, torch.Tensor]:
    """The weight and bias of OpenCLIP's visual `ln_pre` or `ln_post`."""
    found = {part: state.get(f"visual.{name}.{part}") for part in ("weight", "bias")}
    if any(value is None or value.shape != (dim,) for value in found.values()):
        raise CheckpointError(f"{source}: visual.{name}.weight/bias are missing or not of width {dim}")
    return found


def open_clip_text_tower(state: Mapping[str, torch.Tensor], source: Path | str) -> TextTransformer:
    """OpenCLIP's text tower, sized from the checkpoint's own shapes, frozen, in eval mode.

    Heads follow OpenCLIP's convention of 64-wide heads, as in every CLIP text tower.
    """
    text_state = {
        key: value
        for key, value in state.items()
        if not key.startswith("visual.") and key not in OPEN_CLIP_NON_TEXT_KEYS
    }
    _require(
        text_state,
        ("token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection"),
        source,
        "an OpenCLIP checkpoint with a text tower",
    )
    width = text_state["ln_final.weight"].shape[0]
    layers = len({key.split(".")[2] for key in text_state if key.startswith("transformer.resblocks.")})
    from open_clip.transformer import TextTransformer

    tower = TextTransformer(
        context_length=text_state["positional_embedding"].shape[0],
        vocab_size=text_state["token_embedding.weight"].shape[0],
        width=width,
        heads=max(1, width // 64),
        layers=layers,
        output_dim=text_state["text_projection"].shape[1],
        act_layer=nn.GELU,
    )
    check_keys(text_state, _shapes(tower), source)
    tower.load_state_dict(text_state)
    return tower.eval().requires_grad_(False)


# ---- AST audio patch embedding ---------------------------------------------------------------


def ast_audio_tokenizer(
    state: Mapping[str, torch.Tensor],
    tokenizer: nn.Module,
    grid: tuple[int, int],
    source: Path | str,
    with_positions: bool = False,
) -> dict[str, torch.Tensor]:
    """`AudioTokenizer` weights from an AST checkpoint (saved from `nn.DataParallel`, `module.v.*`).

    As the original: AST's CLS token and patch projection weight; the projection's bias and the
    position embedding keep their own initialisation. `with_positions` also takes the bias and
    the positions: AST keeps two prefix tokens (CLS and distillation), we keep the CLS position
    and drop the other; its patch positions form a (frequency x time) grid, 12 x 101 for
    10.24 s clips, interpolated along time for other clip lengths.
    """
    ast = {key.removeprefix("module.").removeprefix(AST_PREFIX): value for key, value in state.items()}
    _require(
        ast,
        ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "pos_embed"),
        source,
        "an AST checkpoint",
        "module.v.",
    )
    weight = ast["patch_embed.proj.weight"]
    hint = "AST checkpoints are 768 wide (encoder-size vit-b16)"
    _check_patch_conv(weight, tokenizer, source, "module.v.patch_embed.proj.weight", hint)
    parts = {"patch_embed.weight": weight, "cls_token": ast["cls_token"].reshape(-1)}
    if not with_positions:
        return parts
    positions = ast["pos_embed"][0]
    frequency_bins = grid[0]
    old_patches = positions.shape[0] - 2
    if old_patches % frequency_bins:
        raise CheckpointError(
            f"{source}: {old_patches} AST patch positions do not form a grid of {frequency_bins} frequency rows"
        )
    patches = _resampled_positions(positions[2:], grid, (frequency_bins, old_patches // frequency_bins), prefix=0)
    return {**parts, "patch_embed.bias": ast["patch_embed.proj.bias"], "pos_embed": torch.cat([positions[:1], patches])}
