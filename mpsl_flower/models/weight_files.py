"""The official weight files: their names, the folder each belongs in, and where to get them.

Users download these themselves (nothing is fetched at run time). The folders are the run
config's `model-weights-dir` (the Meta-Transformer encoder) and `tokenizer-weights-cache-dir`
(OpenCLIP and AST, which initialise the client tokenizers, and the frozen text encoders).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
OPEN_CLIP_FILES = {
    "vit-b16": _open_clip("CLIP-ViT-B-16-laion2B-s34B-b88K"),
    "vit-l14": _open_clip("CLIP-ViT-L-14-laion2B-s32B-b82K"),
    "vit-h14": _open_clip("CLIP-ViT-H-14-laion2B-s32B-b79K"),
}


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
