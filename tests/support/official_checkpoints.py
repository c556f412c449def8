"""Write weight files in the official key layouts, with random values, for the loader tests.

The layouts come from the libraries that define them (timm's ViT blocks for the
Meta-Transformer file, OpenCLIP's `CLIP` for OpenCLIP checkpoints, timm blocks under
`module.v.` for AST, transformers' CLIP classes for OpenAI CLIP), never from our own model
code, so a loader that drifts from the official names fails here.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from timm.models.vision_transformer import VisionTransformer


def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Add noise to every parameter: libraries start norms at one and biases at zero, which hides swaps."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model.eval()


def timm_vit_blocks(dim: int, depth: int, heads: int) -> torch.nn.Module:
    """The blocks of a timm ViT of that size with Meta-Transformer's LayerNorm eps, as timm initialises them."""
    norm = partial(torch.nn.LayerNorm, eps=1e-5)
    return VisionTransformer(embed_dim=dim, depth=depth, num_heads=heads, num_classes=0, norm_layer=norm).blocks


def timm_vit(dim: int, depth: int, heads: int) -> torch.nn.Module:
    """Random timm ViT blocks with every tensor distinct: the reference encoder."""
    torch.manual_seed(depth * 1000 + dim)
    return _perturbed(timm_vit_blocks(dim, depth, heads))


def write_meta_transformer(path: Path, blocks: torch.nn.Module) -> Path:
    """`Meta-Transformer_*_encoder.pth`: a flat state_dict of the blocks, keys `{i}.{param}`."""
    torch.save({key: value.clone() for key, value in blocks.state_dict().items()}, path)
    return path


def open_clip_model(vision_width: int, vision_layers: int, patch: int, image: int, text_width: int = 64) -> CLIP:
    """An OpenCLIP `CLIP` with random weights (GELU, as the LAION checkpoints use)."""
    torch.manual_seed(vision_width + vision_layers)
    vision = CLIPVisionCfg(layers=vision_layers, width=vision_width, patch_size=patch, image_size=image)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=text_width, heads=max(1, text_width // 64), layers=1)
    return _perturbed(CLIP(embed_dim=32, vision_cfg=vision, text_cfg=text))


def write_open_clip(folder: Path, model: CLIP, repository: str, suffix: str = ".bin") -> Path:
    """An OpenCLIP checkpoint as its Hugging Face repository ships it (.bin or .safetensors)."""
    target = folder / repository
    target.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        path = target / "open_clip_model.safetensors"
        save_file(state, str(path))
    else:
        path = target / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    return path


def write_ast(path: Path, dim: int = 768, depth: int = 1, frequency_bins: int = 12, time_bins: int = 101) -> dict:
    """`audioset_10_10_0.4593.pth`: AST saved from `nn.DataParallel` (`module.` prefix).

    CLS and distillation tokens, positions for both plus the (frequency x time) patch grid,
    the 16x16 patch conv with bias, timm blocks, a final norm and the 527-class AudioSet head.
    Returns the state written.
    """
    torch.manual_seed(dim + depth)
    vit = VisionTransformer(
        img_size=224, patch_size=16, embed_dim=dim, depth=depth, num_heads=max(1, dim // 64), num_classes=0
    )
    state = {f"module.v.blocks.{key}": value for key, value in vit.blocks.state_dict().items()}
    state.update(
        {
            "module.v.cls_token": torch.randn(1, 1, dim),
            "module.v.dist_token": torch.randn(1, 1, dim),
            "module.v.pos_embed": torch.randn(1, 2 + frequency_bins * time_bins, dim),
            "module.v.patch_embed.proj.weight": torch.randn(dim, 1, 16, 16),
            "module.v.patch_embed.proj.bias": torch.randn(dim),
            "module.v.norm.weight": torch.ones(dim),
            "module.v.norm.bias": torch.zeros(dim),
            "module.mlp_head.0.weight": torch.ones(dim),
            "module.mlp_head.0.bias": torch.zeros(dim),
            "module.mlp_head.1.weight": torch.randn(527, dim),
            "module.mlp_head.1.bias": torch.zeros(527),
        }
    )
    torch.save(state, path)
    return state


def write_openai_clip_text(folder: Path, hidden: int = 32, projection: int = 512) -> Path:
    """`openai/clip-vit-base-patch16` as `hf download` leaves it: config, tokenizer files, model file.

    The model is a small random `CLIPTextModelWithProjection` (transformers' own class, so its
    key layout is the official one), projecting to CLIP ViT-B/16's 512 dimensions. The tokenizer
    files hold CLIP's real BPE vocabulary and merges, taken from the copy `open_clip_torch` ships.
    Returns the model file.
    """
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    bpe = SimpleTokenizer()
    special = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # OpenAI's names for them
    vocabulary = {special.get(token, token): index for token, index in bpe.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    config = CLIPTextConfig(
        vocab_size=len(bpe.encoder),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection,
        bos_token_id=bpe.sot_token_id,
        eos_token_id=bpe.eot_token_id,
    )
    torch.manual_seed(7)
    _perturbed(CLIPTextModelWithProjection(config)).save_pretrained(folder)
    return folder / "model.safetensors"


def write_hf_vit(folder: Path, dim: int, depth: int, heads: int, classes: int = 10):
    """`WinKawaks/vit-*-patch16-224` as `hf download` leaves it: a transformers `ViTForImageClassification`.

    LayerNorm eps is set to the encoder's (1e-5) so that outputs compare exactly. Returns the
    model and its file.
    """
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(dim + depth)
    config = ViTConfig(
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * dim,
        image_size=224,
        patch_size=16,
        num_labels=classes,
        layer_norm_eps=1e-5,
    )
    model = _perturbed(ViTForImageClassification(config))
    model.save_pretrained(folder)
    return model, folder / "model.safetensors"
