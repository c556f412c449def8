"""The official weight files, and how they initialise the model; say what was used.

Users download the files themselves (nothing is fetched at run time). Each `WeightFile` names
the file, the folder it belongs in (the run config's `model-weights-dir` for the
Meta-Transformer encoder and the transformers ViTs, `tokenizer-weights-cache-dir` for OpenCLIP
and AST, which initialise the client tokenizers, and the frozen text encoders) and where to
get it; `checkpoints` reads each format.

| part | file | without it |
|---|---|---|
| encoder blocks | Meta-Transformer encoder, else the vision checkpoint's blocks | random init |
| image tokenizer | vision checkpoint: `conv1`, `class_embedding`, `positional_embedding` | random init |
| pre-LN, post-LN | vision checkpoint: `ln_pre`, `ln_post` (tasks with images only) | default init (ones, zeros) |
| audio tokenizer | AST AudioSet checkpoint | random init |
| text encoder (`auto`) | OpenAI CLIP folder (B/16 to 768 wide, L/14 above), else OpenCLIP | MiniLM, bag of words |

The vision checkpoint is the OpenCLIP file of the size (B, L, H), or for ViT-Ti/16 and ViT-S/16
the original's transformers ViT (`WinKawaks/vit-*-patch16-224`), read in OpenCLIP's names; it
has no `ln_pre`, so pre-LN keeps its default init there, as in the original. As in the original too,
ViT-Ti/16 and ViT-S/16 get the CLIP token ids themselves as text features. A task without images
(MELD) reads no vision checkpoint for its norms, as the original's MELD model loads only AST: its
pre-LN and post-LN keep their default init even when the file is there (its encoder blocks still
come from the file when no Meta-Transformer file is present, a fallback the original lacks).

On the embedded tasks with `tiny-default` (`embedded-pretraining=true`, the default) `models.factory` reads none of
these: every part but the task head starts from weights pretrained here on generated samples
(`models.embedded_pretraining`).

A missing file is not an error: the part falls back as above, a warning names the file,
the folder to put it in and where to get it, and the returned sources record it for the
results folder. A file that is present but unusable (truncated, another size) is an error:
silently training from random weights when the user meant the pretrained ones wastes a run.

The client's extracted weights (a few MB) are cached per process, so the many clients a Ray
worker hosts read each checkpoint once; the full checkpoints are not kept in memory.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from mpsl_flower.config import CLIP_TEXT_WIDTH, ENCODER_SIZES, MINILM_WIDTH, ConfigError, RunConfig
from mpsl_flower.models.checkpoints import (
    ast_audio_tokenizer,
    hf_vit_as_open_clip,
    load_meta_transformer,
    open_clip_image_tokenizer,
    open_clip_layer_norm,
    open_clip_visual_blocks,
    read_state_dict,
)
from mpsl_flower.models.encoder import Encoder
from mpsl_flower.models.text_encoders import (
    FrozenTextEncoder,
    bag_of_words_text_encoder,
    minilm_text_encoder,
    open_clip_text_encoder,
    openai_clip_text_encoder,
    token_ids_text_encoder,
)
from mpsl_flower.models.tokenizers import ClientModel
from tasks.registry import EMBEDDED

MODEL_WEIGHTS_KEY = "model-weights-dir"
TOKENIZER_WEIGHTS_KEY = "tokenizer-weights-cache-dir"


@dataclass(frozen=True)
class WeightFile:
    """One official file, looked for under `names` (first one preferred) in the folder `folder_key`.

    `feeds` says which parts of the model it initialises, for the warning when it is missing.
    """

    folder_key: str
    names: tuple[str, ...]
    url: str
    feeds: str

    def find(self, folder: Path | None) -> Path | None:
        """The file in `folder`, or None when the folder is unset or holds none of the names."""
        if folder is None:
            return None
        return next((folder / name for name in self.names if (folder / name).is_file()), None)

    def missing_message(self, folder: Path | None) -> str:
        """Which file is missing, where to put it, where to get it, and that fallbacks are used."""
        where = (
            f"{folder}/{self.names[0]}"
            if folder
            else f"<{self.folder_key}>/{self.names[0]} ({self.folder_key} is not set)"
        )
        return (
            f"no weight file at {where}: the {self.feeds} start from their fallback "
            f"(README, 'Pretrained weights'). Download it from {self.url}"
        )


def _open_clip(repository: str) -> WeightFile:
    """An OpenCLIP LAION checkpoint as its Hugging Face repository ships it."""
    names = tuple(f"{repository}/{name}" for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"))
    feeds = "image tokenizer, pre/post-LayerNorm, CLIP text encoder (and encoder, without a Meta-Transformer file)"
    return WeightFile(TOKENIZER_WEIGHTS_KEY, names, f"https://huggingface.co/laion/{repository}", feeds)


def _openai_clip_text(repository: str) -> WeightFile:
    """One of the original's text encoders (`clip.load`), in the Hugging Face layout transformers reads:
    the folder holds the model file, config.json and the tokenizer files."""
    return WeightFile(
        TOKENIZER_WEIGHTS_KEY,
        tuple(f"{repository}/{name}" for name in ("model.safetensors", "pytorch_model.bin")),
        f"https://huggingface.co/openai/{repository}",
        f"CLIP text encoder (OpenAI {repository}, the original's)",
    )


# The original encodes text with OpenAI CLIP ViT-B/16 for encoders up to 768 wide, ViT-L/14 above.
OPENAI_CLIP_TEXT_B16 = _openai_clip_text("clip-vit-base-patch16")
OPENAI_CLIP_TEXT_L14 = _openai_clip_text("clip-vit-large-patch14")

# Keyed by encoder size (see `ENCODER_SIZES`); a size without an entry has no such file.
META_TRANSFORMER_FILES = {
    "vit-b16": WeightFile(
        MODEL_WEIGHTS_KEY,
        ("Meta-Transformer_base_patch16_encoder.pth",),
        "https://drive.google.com/file/d/19ahcN2QKknkir_bayhTW5rucuAiX0OXq/view",
        "encoder blocks",
    ),
    "vit-l14": WeightFile(
        MODEL_WEIGHTS_KEY,
        ("Meta-Transformer_large_patch14_encoder.pth",),
        "https://drive.google.com/file/d/15EtzCBAQSqmelhdLz6k880A19_RpcX9B/view",
        "encoder blocks",
    ),
}
OPEN_CLIP_FILES = {name: _open_clip(size.open_clip) for name, size in ENCODER_SIZES.items() if size.open_clip}


def _hf_vit(repository: str) -> WeightFile:
    """One of the original's ViT-Ti/16, ViT-S/16 checkpoints: a transformers ViT as its repository ships it."""
    names = tuple(f"{repository}/{name}" for name in ("model.safetensors", "pytorch_model.bin"))
    feeds = "image tokenizer, encoder blocks and post-LayerNorm"
    return WeightFile(MODEL_WEIGHTS_KEY, names, f"https://huggingface.co/WinKawaks/{repository}", feeds)


HF_VIT_FILES = {"vit-ti16": _hf_vit("vit-tiny-patch16-224"), "vit-s16": _hf_vit("vit-small-patch16-224")}
AST_FILES = {
    "vit-b16": WeightFile(
        TOKENIZER_WEIGHTS_KEY,
        ("audioset_10_10_0.4593.pth",),
        "https://www.dropbox.com/s/ca0b1v2nlxzyeb4/audioset_10_10_0.4593.pth?dl=1",
        "audio tokenizer",
    ),
}

logger = logging.getLogger(__name__)
RANDOM = "random init"
NO_IMAGE_NORM = "default init (a task without images reads no vision checkpoint, as the original)"
CLIP_B16_MAX_WIDTH = 768  # wider encoders get the original's ViT-L/14 text encoder
# The original's ViT-Ti/16 and ViT-S/16 are narrower than CLIP's text feature: it feeds them the token ids.
TOKEN_ID_SIZES = ("vit-ti16", "vit-s16")


def _find(files: dict[str, WeightFile], config: RunConfig):
    """The file for this encoder size if present; None otherwise (warned once per process)."""
    entry = files.get(config.encoder_size)
    return None if entry is None else _find_file(entry, config)


def _find_file(entry: WeightFile, config: RunConfig):
    """`entry`'s file if present; None otherwise (warned once per process)."""
    folder = config.folder(entry.folder_key)
    path = entry.find(folder)
    if path is None:
        _warn_once(entry.missing_message(folder))
    return path


def _vision_checkpoint(config: RunConfig) -> tuple[Path | None, dict[str, torch.Tensor] | None]:
    """This size's vision checkpoint in OpenCLIP's names: an OpenCLIP file (B, L, H), or the
    original's transformers ViT (Ti, S); (None, None) when it is not there."""
    path = _find(OPEN_CLIP_FILES, config)
    if path:
        return path, read_state_dict(path)
    path = _find(HF_VIT_FILES, config)
    if path:
        return path, hf_vit_as_open_clip(read_state_dict(path), path)
    return None, None


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """Log `message` the first time it would show; while notes are silenced (`logs.weight_file_notes_silenced`,
    e.g. the overhead tool) it is not spent, so a run later in the same process still names the file."""
    if message not in _warned and logger.isEnabledFor(logging.WARNING):
        _warned.add(message)
        logger.warning(message)


@functools.lru_cache(maxsize=4)
def client_initial_state(config: RunConfig) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Weights that replace the random init of the client model, and their sources by part."""
    size, task = ENCODER_SIZES[config.encoder_size], config.task
    template = ClientModel(task, size.dim, size.patch, config.pre_layer_norm, config.audio_tokenizer == "ast")
    state, sources = {}, {}
    # only the extracted parts are kept; a task without images reads none (the original's MELD model)
    clip_path, clip = _vision_checkpoint(config) if task.image is not None else (None, None)
    if task.image is not None:
        sources["image tokenizer"] = str(clip_path or RANDOM)
        if clip_path:
            parts = open_clip_image_tokenizer(clip, template.image, clip_path)
            state.update({f"image.{key}": value for key, value in parts.items()})
    if config.pre_layer_norm:
        has_pre_norm = clip is not None and "visual.ln_pre.weight" in clip  # a transformers ViT has none
        sources["pre-LayerNorm"] = str(clip_path) if has_pre_norm else _norm_fallback(config)
        if has_pre_norm:
            norm = open_clip_layer_norm(clip, "ln_pre", size.dim, clip_path)
            state.update({f"pre_norm.{key}": value for key, value in norm.items()})
    if task.audio is not None:
        ast_path = _find(AST_FILES, config)
        sources["audio tokenizer"] = str(ast_path or RANDOM)
        if ast_path:
            time, frequency = task.audio.patch_grid
            parts = ast_audio_tokenizer(
                read_state_dict(ast_path), template.audio, (frequency, time), ast_path, config.audio_tokenizer == "ast"
            )
            state.update({f"audio.{key}": value for key, value in parts.items()})
    return state, sources


def initialise_client_model(model: ClientModel, config: RunConfig) -> dict[str, str]:
    """Load the pretrained tokenizer weights that are present into `model`; returns the sources."""
    state, sources = client_initial_state(config)
    model.load_state_dict(state, strict=False)
    return sources


def _norm_fallback(config: RunConfig) -> str:
    """What a pre- or post-LN starts from when the vision checkpoint does not initialise it."""
    return RANDOM if config.task.image is not None else NO_IMAGE_NORM


def initialise_server_model(encoder: Encoder, post_norm: torch.nn.Module, config: RunConfig) -> dict[str, str]:
    """Load the encoder blocks (and CLIP's `ln_post` when post-LN is on and the task has images, as the
    original); returns the sources."""
    sources = {}
    meta_path = _find(META_TRANSFORMER_FILES, config)
    post_from_clip = config.post_layer_norm and config.task.image is not None
    clip_path, clip = _vision_checkpoint(config) if post_from_clip or not meta_path else (None, None)
    if meta_path:
        load_meta_transformer(encoder, read_state_dict(meta_path), meta_path)
        sources["encoder"] = str(meta_path)
    elif clip_path:
        load_meta_transformer(encoder, open_clip_visual_blocks(clip), clip_path)
        sources["encoder"] = f"{clip_path} (visual tower)"
    else:
        sources["encoder"] = RANDOM
    if config.post_layer_norm:
        sources["post-LayerNorm"] = str(clip_path) if post_from_clip and clip_path else _norm_fallback(config)
        if post_from_clip and clip_path:
            dim = ENCODER_SIZES[config.encoder_size].dim
            post_norm.load_state_dict(open_clip_layer_norm(clip, "ln_post", dim, clip_path))
    return sources


def resolve_text_encoder(config: RunConfig) -> FrozenTextEncoder:
    """The frozen text encoder of this run (see the module table); cheap until it encodes."""
    width = ENCODER_SIZES[config.encoder_size].dim
    if _uses_token_ids(config):
        return token_ids_text_encoder()
    openai = _openai_clip_text_file(config)
    openai_path = _find_file(openai, config) if openai else None
    if openai_path:
        return openai_clip_text_encoder(openai_path)
    if config.text_encoder in ("auto", "openclip"):
        clip_path = _find(OPEN_CLIP_FILES, config)
        if clip_path:
            return open_clip_text_encoder(clip_path)
    if config.text_encoder == "bag-of-words" or (config.text_encoder != "minilm" and width < MINILM_WIDTH):
        return bag_of_words_text_encoder(config.seed)
    return minilm_text_encoder()


def missing_weight_files(config: RunConfig) -> list[WeightFile]:
    """The official files the run's model loads (see the module table) that are not in their folders."""
    task, size = config.task, config.encoder_size
    vision = OPEN_CLIP_FILES.get(size) or HF_VIT_FILES.get(size)
    wanted = [META_TRANSFORMER_FILES.get(size) or vision]  # the encoder, from the vision tower without its own file
    if task.image is not None:
        wanted.append(vision)  # image tokenizer and pre-LayerNorm
    if task.audio is not None:
        wanted.append(AST_FILES.get(size))
    if task.text is not None:
        wanted.append(_text_encoder_file(config))
    unique = {entry: None for entry in wanted if entry is not None}
    return [entry for entry in unique if entry.find(config.folder(entry.folder_key)) is None]


def _uses_token_ids(config: RunConfig) -> bool:
    return config.text_encoder == "token-ids" or (
        config.text_encoder == "auto" and config.encoder_size in TOKEN_ID_SIZES
    )


def _openai_clip_text_file(config: RunConfig) -> WeightFile | None:
    """The original's text encoder for this width (B/16 up to 768 wide, L/14 above), when the config takes it."""
    width = ENCODER_SIZES[config.encoder_size].dim
    if config.text_encoder in ("auto", "clip") and width >= CLIP_TEXT_WIDTH:
        return OPENAI_CLIP_TEXT_B16 if width <= CLIP_B16_MAX_WIDTH else OPENAI_CLIP_TEXT_L14
    return None


def _text_encoder_file(config: RunConfig) -> WeightFile | None:
    """The file `resolve_text_encoder` reads first for this config; None for text encoders that need none."""
    if _uses_token_ids(config):
        return None
    if config.text_encoder == "openclip":
        return OPEN_CLIP_FILES.get(config.encoder_size)
    return _openai_clip_text_file(config)


def require_weight_files(config: RunConfig) -> None:
    """Stop a run on a real dataset whose model would start from fallbacks for want of official files, naming
    each file, its folder and where to get it; `allow-missing-weights=true` trains with the fallbacks. The
    embedded tasks, and encoders without official files (`tiny-default`, `bag-of-words`), need none. A
    rehearsal (`rehearsal=true`) measures a run's shapes, not its accuracy: it goes on with the fallbacks,
    saying so in one line."""
    if config.dataset in EMBEDDED or config.allow_missing_weights:
        return
    missing = missing_weight_files(config)
    if missing and config.rehearsal:
        logger.warning(
            "rehearsal of %s runs with random weights: %d official weight files are missing (%s), so the parts "
            "they initialise start from their fallbacks (README, 'Pretrained weights')",
            config.dataset,
            len(missing),
            ", ".join(entry.names[0] for entry in missing),
        )
    elif missing:
        files = "; ".join(entry.missing_message(config.folder(entry.folder_key)) for entry in missing)
        raise ConfigError(
            f"dataset={config.dataset!r} with encoder-size={config.encoder_size!r} loads official weight files that "
            f"are missing: {files}. Put them there, or set allow-missing-weights=true to train with the fallbacks"
        )
