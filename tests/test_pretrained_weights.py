"""Loaders of the official weight files, on files written in each official key layout."""

from __future__ import annotations

import logging

import open_clip
import pytest
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from support.official_checkpoints import (
    open_clip_model,
    timm_vit,
    timm_vit_blocks,
    write_ast,
    write_hf_vit,
    write_meta_transformer,
    write_open_clip,
    write_openai_clip_text,
)
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from mpsl_flower.config import ENCODER_SIZES, ConfigError, EncoderSize, parse_run_config
from mpsl_flower.logs import weight_file_notes_silenced
from mpsl_flower.models import pretrained
from mpsl_flower.models.checkpoints import (
    CheckpointError,
    ast_audio_tokenizer,
    hf_vit_as_open_clip,
    load_meta_transformer,
    open_clip_image_tokenizer,
    open_clip_layer_norm,
    open_clip_text_tower,
    open_clip_visual_blocks,
    read_state_dict,
)
from mpsl_flower.models.encoder import Encoder
from mpsl_flower.models.factory import new_client_model, new_server_model
from mpsl_flower.models.pretrained import resolve_text_encoder
from mpsl_flower.models.text_encoders import (
    clip_tokenizer,
    minilm_text_encoder,
    open_clip_text_encoder,
    openai_clip_text_encoder,
)
from mpsl_flower.models.tokenizers import AudioTokenizer, ImageTokenizer
from tasks.registry import TASKS
from tasks.spec import AudioInput, ImageInput

VIT_B16 = ENCODER_SIZES["vit-b16"]
OPEN_CLIP_B16 = "CLIP-ViT-B-16-laion2B-s34B-b88K"


def _config(tmp_path, **overrides):
    return parse_run_config({"output-dir": str(tmp_path / "results"), "device": "cpu", **overrides})


# ---- Meta-Transformer encoder file -------------------------------------------------------------


@pytest.fixture(scope="module")
def meta_transformer_base(tmp_path_factory):
    """The full ViT-B/16 key set (144 tensors), written as the official file name."""
    blocks = timm_vit(VIT_B16.dim, VIT_B16.depth, VIT_B16.heads)
    folder = tmp_path_factory.mktemp("model-weights")
    return blocks, write_meta_transformer(folder / "Meta-Transformer_base_patch16_encoder.pth", blocks)


def test_meta_transformer_file_has_the_official_key_set(meta_transformer_base):
    _, path = meta_transformer_base
    state = read_state_dict(path)
    assert len(state) == 144
    assert tuple(state["0.attn.qkv.weight"].shape) == (2304, 768)
    assert tuple(state["11.mlp.fc2.weight"].shape) == (768, 3072)


def test_dropping_the_file_in_the_weights_dir_gives_the_pretrained_encoder(meta_transformer_base, tmp_path):
    blocks, path = meta_transformer_base
    config = _config(tmp_path, **{"encoder-size": "vit-b16", "model-weights-dir": str(path.parent)})
    server = new_server_model(config)
    assert server.weight_sources["encoder"] == str(path)
    tokens = torch.randn(2, 9, VIT_B16.dim)
    with torch.no_grad():
        torch.testing.assert_close(server.encoder(tokens), blocks(tokens))
    # Loading keeps the fine-tuning split: the first depth - N blocks stay frozen.
    frozen = [not any(p.requires_grad for p in block.parameters()) for block in server.encoder.blocks]
    assert frozen == [i < VIT_B16.depth - config.finetune_blocks for i in range(VIT_B16.depth)]


def test_a_wrong_encoder_file_names_missing_unexpected_and_mismatched_keys(tmp_path):
    size = ENCODER_SIZES["vit-ti16"]
    state = {key: value.clone() for key, value in timm_vit(size.dim, size.depth, size.heads).state_dict().items()}
    del state["3.norm1.bias"]
    state["12.norm1.weight"] = torch.ones(size.dim)
    state["5.mlp.fc1.weight"] = torch.zeros(10, size.dim)
    with pytest.raises(CheckpointError) as error:
        load_meta_transformer(Encoder(size, finetune_blocks=2), state, "bad.pth")
    message = str(error.value)
    assert "bad.pth" in message and "3.norm1.bias" in message and "12.norm1.weight" in message
    assert "5.mlp.fc1.weight: file [10, 192], model [768, 192]" in message


def test_a_truncated_file_is_refused_with_its_name(meta_transformer_base, tmp_path):
    broken = tmp_path / "Meta-Transformer_base_patch16_encoder.pth"
    broken.write_bytes(meta_transformer_base[1].read_bytes()[:100_000])
    with pytest.raises(CheckpointError, match="cannot be read as a checkpoint"):
        new_server_model(_config(tmp_path, **{"encoder-size": "vit-b16", "model-weights-dir": str(tmp_path)}))


# ---- OpenCLIP: tokenizer parts, encoder fallback, text tower -------------------------------------


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_open_clip_parts_reproduce_open_clips_own_image_and_text_features(tmp_path, suffix):
    """Our image tokenizer + pre-LN + encoder + ln_post equals OpenCLIP's `encode_image`; text likewise."""
    clip = open_clip_model(vision_width=64, vision_layers=2, patch=16, image=64)
    state = read_state_dict(write_open_clip(tmp_path, clip, OPEN_CLIP_B16, suffix))
    size = EncoderSize(dim=64, depth=2, heads=1, patch=16)

    tokenizer = ImageTokenizer(ImageInput(size=64), size.dim, size.patch)
    tokenizer.load_state_dict(open_clip_image_tokenizer(state, tokenizer, "ckpt"))
    pre_norm, post_norm = torch.nn.LayerNorm(size.dim), torch.nn.LayerNorm(size.dim)
    pre_norm.load_state_dict(open_clip_layer_norm(state, "ln_pre", size.dim, "ckpt"))
    post_norm.load_state_dict(open_clip_layer_norm(state, "ln_post", size.dim, "ckpt"))
    encoder = Encoder(size, finetune_blocks=0)
    load_meta_transformer(encoder, open_clip_visual_blocks(state), "ckpt")

    image = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    mean, std = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = clip.encode_image((image.float() / 255 - mean) / std)
        ours = post_norm(encoder(pre_norm(tokenizer(image)))[:, 0]) @ state["visual.proj"]
        torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)

        texts = ["a photo of a cat", "what color is the circle?"]
        expected_text = clip.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts))
        torch.testing.assert_close(open_clip_text_tower(state, "ckpt")(clip_tokenizer()(texts)), expected_text)


def test_position_embeddings_are_resampled_to_another_image_size(tmp_path):
    clip = open_clip_model(vision_width=64, vision_layers=1, patch=16, image=64)
    state = clip.state_dict()
    same = open_clip_image_tokenizer(state, ImageTokenizer(ImageInput(size=64), 64, 16), "ckpt")
    torch.testing.assert_close(same["pos_embed"], state["visual.positional_embedding"])
    smaller = open_clip_image_tokenizer(state, ImageTokenizer(ImageInput(size=32), 64, 16), "ckpt")
    assert tuple(smaller["pos_embed"].shape) == (1 + 4, 64)
    torch.testing.assert_close(smaller["pos_embed"][0], state["visual.positional_embedding"][0])  # CLS kept


def test_an_open_clip_file_of_another_width_is_refused():
    state = open_clip_model(vision_width=64, vision_layers=1, patch=16, image=64).state_dict()
    with pytest.raises(CheckpointError, match=r"visual.conv1.weight is \[64, 3, 16, 16\]"):
        open_clip_image_tokenizer(state, ImageTokenizer(ImageInput(size=64), 96, 16), "ckpt")


@pytest.fixture(scope="module")
def open_clip_base(tmp_path_factory):
    """An OpenCLIP file with the full ViT-B/16 visual tower (and a small text tower, which the format allows)."""
    clip = open_clip_model(vision_width=768, vision_layers=12, patch=16, image=224)
    folder = tmp_path_factory.mktemp("tokenizer-weights")
    return clip, folder, write_open_clip(folder, clip, OPEN_CLIP_B16)


def test_an_open_clip_file_alone_initialises_tokenizer_encoder_and_clip_text_encoder(open_clip_base, tmp_path):
    clip, folder, path = open_clip_base
    overrides = {"encoder-size": "vit-b16", "tokenizer-weights-cache-dir": str(folder), "use-post-layer-norm": True}
    config = _config(tmp_path, **overrides)
    client, server = new_client_model(config), new_server_model(config)
    assert set(client.weight_sources.values()) == {str(path)}
    assert server.weight_sources == {"encoder": f"{path} (visual tower)", "post-LayerNorm": str(path)}
    visual = clip.visual
    torch.testing.assert_close(client.image.patch_embed.weight, visual.conv1.weight)
    torch.testing.assert_close(client.pre_norm.weight, visual.ln_pre.weight)
    torch.testing.assert_close(server.post_norm.bias, visual.ln_post.bias)
    torch.testing.assert_close(
        server.encoder.blocks[11].attn.qkv.weight, visual.transformer.resblocks[11].attn.in_proj_weight
    )
    assert tuple(client.image.pos_embed.shape) == (1 + 4, 768)  # 32-px images: 2x2 patches


def test_openclip_text_encoder_reads_the_text_tower_of_the_file(open_clip_base):
    clip, _, path = open_clip_base
    texts = ["what shape is the red object?"]
    with torch.no_grad():
        expected = clip.encode_text(open_clip.get_tokenizer("ViT-B-16")(texts))
    torch.testing.assert_close(open_clip_text_encoder(path).encode(texts), expected)


# ---- the original's ViT-Ti/16 and ViT-S/16: transformers ViT files ------------------------------


@pytest.mark.parametrize(
    ("size", "repository"), [("vit-ti16", "vit-tiny-patch16-224"), ("vit-s16", "vit-small-patch16-224")]
)
def test_the_originals_vit_file_initialises_image_tokenizer_encoder_and_post_ln(tmp_path, size, repository):
    dims = ENCODER_SIZES[size]
    hf, path = write_hf_vit(tmp_path / "weights" / repository, dims.dim, dims.depth, dims.heads)
    overrides = {"encoder-size": size, "model-weights-dir": str(tmp_path / "weights"), "use-post-layer-norm": True}
    config = _config(tmp_path, **overrides)
    client, server = new_client_model(config), new_server_model(config)
    assert client.weight_sources == {"image tokenizer": str(path), "pre-LayerNorm": "random init"}
    assert server.weight_sources == {"encoder": f"{path} (visual tower)", "post-LayerNorm": str(path)}
    embeddings = hf.vit.embeddings
    torch.testing.assert_close(client.image.patch_embed.weight, embeddings.patch_embeddings.projection.weight)
    torch.testing.assert_close(client.image.cls_token, embeddings.cls_token.reshape(-1))
    torch.testing.assert_close(server.post_norm.weight, hf.vit.layernorm.weight)
    with torch.no_grad():  # block for block the same encoder: query, key, value stacked in the right order
        hidden = hf.vit(torch.randn(2, 3, 224, 224), output_hidden_states=True).hidden_states
        torch.testing.assert_close(server.encoder(hidden[0]), hidden[-1], rtol=1e-4, atol=1e-5)


def test_a_vit_file_without_a_layers_query_names_the_key(tmp_path):
    _, path = write_hf_vit(tmp_path / "vit-tiny-patch16-224", 24, 2, 2)
    state = read_state_dict(path)
    del state["vit.encoder.layer.1.attention.attention.query.bias"]
    with pytest.raises(CheckpointError, match=r"not a transformers ViT checkpoint: missing keys .*layer.1.attention"):
        hf_vit_as_open_clip(state, path)


# ---- the original's text encoder: OpenAI CLIP ViT-B/16 (transformers) ----------------------------


@pytest.fixture(scope="module")
def openai_clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer-weights")
    write_openai_clip_text(folder / "clip-vit-base-patch16")
    return folder


def test_by_default_the_text_encoder_is_the_originals_openai_clip(openai_clip_folder, open_clip_base, tmp_path):
    overrides = {"encoder-size": "vit-b16", "tokenizer-weights-cache-dir": str(openai_clip_folder)}
    encoder = resolve_text_encoder(_config(tmp_path, **overrides))
    assert encoder.name == "clip" and encoder.identity.startswith("openai-clip-text:model.safetensors:")
    texts = ["a photo of a cat", "what shape is the red object in the middle of the picture?"]
    features = encoder.encode(texts)
    assert tuple(features.shape) == (2, 512)
    model = CLIPTextModelWithProjection.from_pretrained(openai_clip_folder / "clip-vit-base-patch16").eval()
    tokenizer = CLIPTokenizer.from_pretrained(openai_clip_folder / "clip-vit-base-patch16")
    for text, feature in zip(texts, features):  # one at a time, unpadded: padding to 77 must not change it
        ids = tokenizer([text], return_tensors="pt").input_ids
        with torch.no_grad():
            torch.testing.assert_close(feature, model(input_ids=ids).text_embeds[0], rtol=1e-4, atol=1e-5)
    assert tokenizer(["a photo of a cat"]).input_ids[0] == [49406, 320, 1125, 539, 320, 2368, 49407]
    # With the OpenCLIP file only, `auto` takes its LAION text tower; `openclip` asks for it by name.
    _, laion_folder, _ = open_clip_base
    laion = {"encoder-size": "vit-b16", "tokenizer-weights-cache-dir": str(laion_folder)}
    assert resolve_text_encoder(_config(tmp_path, **laion)).name == "openclip"
    openclip = {**overrides, "text-encoder": "openclip"}
    assert resolve_text_encoder(_config(tmp_path, **openclip)).name == "minilm"  # no OpenCLIP file there


def test_wider_encoders_get_the_originals_vit_l14_text_encoder(tmp_path):
    write_openai_clip_text(tmp_path / "clip-vit-large-patch14", projection=768)
    write_openai_clip_text(tmp_path / "clip-vit-base-patch16")
    for size, folder in (("vit-l14", "clip-vit-large-patch14"), ("vit-b16", "clip-vit-base-patch16")):
        options = {"encoder-size": size, "tokenizer-weights-cache-dir": str(tmp_path), "dataset": "coco-qa"}
        encoder = resolve_text_encoder(_config(tmp_path, **options))  # 224-pixel images: 14-pixel patches tile them
        width = 768 if size == "vit-l14" else 512
        assert encoder.name == "clip" and tuple(encoder.encode(["a cat"]).shape) == (1, width)
        assert f"model.safetensors:{(tmp_path / folder / 'model.safetensors').stat().st_size}:" in encoder.identity


def test_vit_ti_and_s_get_the_token_ids_as_the_original_does(tmp_path):
    for size in ("vit-ti16", "vit-s16"):
        encoder = resolve_text_encoder(_config(tmp_path, **{"encoder-size": size}))
        assert encoder.name == "token-ids"
    features = encoder.encode(["a photo of a cat"])
    assert tuple(features.shape) == (1, 77)
    assert features[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407] and not features[0, 7:].any()
    minilm = _config(tmp_path, **{"encoder-size": "vit-s16", "text-encoder": "minilm"})
    assert resolve_text_encoder(minilm).name == "minilm"


def test_an_incomplete_openai_clip_folder_names_the_missing_files(tmp_path):
    path = write_openai_clip_text(tmp_path / "clip-vit-base-patch16")
    (path.parent / "merges.txt").unlink()
    with pytest.raises(CheckpointError, match=r"lacks \['merges.txt'\]: download the whole folder"):
        openai_clip_text_encoder(path).encode(["a cat"])


# ---- AST audio tokenizer -----------------------------------------------------------------------


def test_as_the_original_ast_gives_the_audio_tokenizer_its_cls_and_patch_projection_only(tmp_path):
    state = write_ast(tmp_path / "audioset_10_10_0.4593.pth")
    tokenizer = AudioTokenizer(AudioInput(num_frames=1024), 768)
    parts = ast_audio_tokenizer(read_state_dict(tmp_path / "audioset_10_10_0.4593.pth"), tokenizer, (12, 101), "ast")
    assert set(parts) == {"patch_embed.weight", "cls_token"}  # bias and positions keep their own init
    torch.testing.assert_close(parts["patch_embed.weight"], state["module.v.patch_embed.proj.weight"])
    torch.testing.assert_close(parts["cls_token"], state["module.v.cls_token"].reshape(-1))


def test_the_originals_audio_tokenizer_reads_the_fbank_time_first_without_a_bias_and_n01_positions():
    audio = AudioInput(num_frames=1024)
    original, ast = AudioTokenizer(audio, 768), AudioTokenizer(audio, 768, ast_layout=True)
    assert original.patch_embed.bias is None and ast.patch_embed.bias is not None
    assert 0.9 < original.pos_embed.std() < 1.1 and ast.pos_embed.std() < 0.1  # torch.randn, as the original
    fbank = torch.zeros(1, 1024, 128)
    fbank[0, :26, :16] = 1.0  # the first 26 frames of the lowest 16 bins: 3 patches along time x 2 along mel
    for tokenizer in (original, ast):
        tokenizer.pos_embed.data.zero_()
        tokenizer.patch_embed.weight.data.fill_(1.0)
        if tokenizer.patch_embed.bias is not None:
            tokenizer.patch_embed.bias.data.zero_()
    lit_original = (original(fbank)[0, 1:, 0] > 0).nonzero().flatten().tolist()
    lit_ast = (ast(fbank)[0, 1:, 0] > 0).nonzero().flatten().tolist()
    assert lit_original == [0, 1, 12, 13, 24, 25]  # a time row of 12 mel patches after another
    assert lit_ast == [0, 1, 2, 101, 102, 103]  # a mel row of 101 time patches after another


def test_with_its_positions_ast_initialises_the_audio_tokenizer_for_10_24_s_clips_exactly(tmp_path):
    state = write_ast(tmp_path / "audioset_10_10_0.4593.pth")
    audio = AudioInput(num_frames=1024)
    tokenizer = AudioTokenizer(audio, 768, ast_layout=True)
    grid = tuple(reversed(audio.patch_grid))
    assert grid == (12, 101)
    state_dict = read_state_dict(tmp_path / "audioset_10_10_0.4593.pth")
    tokenizer.load_state_dict(ast_audio_tokenizer(state_dict, tokenizer, grid, "ast", with_positions=True))
    positions = state["module.v.pos_embed"][0]
    torch.testing.assert_close(tokenizer.pos_embed[1:], positions[2:])  # same grid: no interpolation
    torch.testing.assert_close(tokenizer.pos_embed[0], positions[0])  # CLS position; distillation token dropped
    torch.testing.assert_close(tokenizer.cls_token, state["module.v.cls_token"].reshape(-1))
    torch.testing.assert_close(tokenizer.patch_embed.bias, state["module.v.patch_embed.proj.bias"])


def test_ast_file_in_the_tokenizer_dir_initialises_shorter_clips_by_interpolation(tmp_path):
    write_ast(tmp_path / "audioset_10_10_0.4593.pth")
    folder = str(tmp_path)
    overrides = {"encoder-size": "vit-b16", "dataset": "shapes-av", "tokenizer-weights-cache-dir": folder}
    client = new_client_model(_config(tmp_path, **overrides, **{"audio-tokenizer": "ast"}))
    assert client.weight_sources["audio tokenizer"] == str(tmp_path / "audioset_10_10_0.4593.pth")
    assert client.weight_sources["image tokenizer"] == "random init"
    assert tuple(client.audio.pos_embed.shape) == (1 + TASKS["shapes-av"].audio.num_patches, 768)
    original = new_client_model(_config(tmp_path, **overrides))  # the original's: positions not from AST
    assert not torch.equal(original.audio.pos_embed, client.audio.pos_embed)
    torch.testing.assert_close(original.audio.cls_token, client.audio.cls_token)
    torch.testing.assert_close(original.audio.patch_embed.weight, client.audio.patch_embed.weight)


def test_an_ast_file_for_another_width_is_refused(tmp_path):
    write_ast(tmp_path / "ast.pth", dim=96)
    tokenizer = AudioTokenizer(AudioInput(num_frames=1024), 768)
    with pytest.raises(CheckpointError, match="AST checkpoints are 768 wide"):
        ast_audio_tokenizer(read_state_dict(tmp_path / "ast.pth"), tokenizer, (12, 101), "ast.pth")


# ---- no files: documented fallbacks, said out loud ---------------------------------------------


def test_missing_files_are_named_with_folder_and_source_and_the_run_goes_on(tmp_path, caplog):
    pretrained._warned.clear()  # each note shows once per process: earlier tests may have shown these
    config = _config(tmp_path, **{"encoder-size": "vit-b16", "model-weights-dir": str(tmp_path)})
    with caplog.at_level(logging.WARNING):
        server = new_server_model(config)
    assert server.weight_sources == {"encoder": "random init"}
    text = caplog.text
    assert f"{tmp_path}/Meta-Transformer_base_patch16_encoder.pth" in text and "drive.google.com" in text
    assert "tokenizer-weights-cache-dir is not set" in text and "huggingface.co/laion/CLIP-ViT-B-16" in text


def test_a_note_silenced_by_a_tool_still_shows_in_a_later_run(tmp_path, caplog):
    pretrained._warned.clear()
    config = _config(tmp_path, **{"encoder-size": "vit-b16", "model-weights-dir": str(tmp_path)})
    with weight_file_notes_silenced():  # as the overhead tool builds its models
        new_server_model(config)
    with caplog.at_level(logging.WARNING):
        new_server_model(config)
    assert f"{tmp_path}/Meta-Transformer_base_patch16_encoder.pth" in caplog.text


def test_text_encoders_that_do_not_fit_the_encoder_are_refused_up_front(tmp_path):
    with pytest.raises(ConfigError, match="text-encoder='minilm' gives 384-d features"):
        _config(tmp_path, **{"text-encoder": "minilm"})
    with pytest.raises(
        ConfigError, match="text-encoder='clip' gives 512-d features, wider than encoder-size='vit-s16'"
    ):
        _config(tmp_path, **{"text-encoder": "clip", "encoder-size": "vit-s16"})
    with pytest.raises(ConfigError, match="text-encoder='openclip' needs an OpenCLIP checkpoint"):
        _config(tmp_path, **{"text-encoder": "openclip", "encoder-size": "vit-s16"})


# ---- tokenizers of the real pipeline -------------------------------------------------------------


def test_clip_bpe_tokenizer_gives_clips_ids_for_a_known_sentence():
    ids = clip_tokenizer()(["a photo of a cat"])[0]
    assert ids.shape == (77,)
    assert ids[:7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]  # <start> a photo of a cat <end>
    assert not ids[7:].any()


def test_minilm_fallback_is_a_real_pretrained_sentence_encoder():
    features = minilm_text_encoder().encode(["a photo of a cat", "a picture of a kitten", "the quarterly tax report"])
    assert tuple(features.shape) == (3, 384)
    similarity = features @ features.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


@pytest.mark.parametrize(("name", "millions"), [("vit-b16", 85.1), ("vit-l14", 302.3), ("vit-h14", 629.7)])
def test_encoder_sizes_have_the_parameter_counts_of_timm_vits(name, millions):
    """Block for block the same parameters as timm's ViT of that size (built on the meta device: no memory)."""
    size = ENCODER_SIZES[name]
    with torch.device("meta"):
        ours = sum(p.numel() for p in Encoder(size, finetune_blocks=0).parameters())
        reference = sum(p.numel() for p in timm_vit_blocks(size.dim, size.depth, size.heads).parameters())
    assert ours == reference
    assert round(ours / 1e6, 1) == millions
