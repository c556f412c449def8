"""Client-side tokenizers: light modules that turn raw inputs into encoder-width tokens."""

from __future__ import annotations

import torch
from torch import nn

from tasks.spec import FUSED_STREAM, AudioInput, ImageInput, TaskSpec, TextInput


class ImageTokenizer(nn.Module):
    """Patch embedding (conv, no bias) + CLS + learned position embedding, as in CLIP ViT."""

    def __init__(self, spec: ImageInput, dim: int, patch: int) -> None:
        super().__init__()
        if spec.size % patch:
            raise ValueError(f"image size {spec.size} is not a multiple of the patch size {patch}")
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, bias=False)
        num_patches = (spec.size // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(dim) * dim**-0.5)
        self.pos_embed = nn.Parameter(torch.randn(num_patches + 1, dim) * dim**-0.5)

    def forward(self, image_uint8: torch.Tensor) -> torch.Tensor:
        pixels = image_uint8.float().div(255.0).sub(0.5).div(0.25)
        patches = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed


class AudioTokenizer(nn.Module):
    """AST-style: fbank (frames x mel) -> conv 16x16 stride 10 -> patches + CLS + positions."""

    kernel, stride = 16, 10

    def __init__(self, spec: AudioInput, dim: int) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=self.kernel, stride=self.stride)
        num_patches = self.num_patches(spec.num_frames, spec.num_mel_bins)
        self.cls_token = nn.Parameter(torch.randn(dim) * dim**-0.5)
        self.pos_embed = nn.Parameter(torch.randn(num_patches + 1, dim) * dim**-0.5)

    @classmethod
    def num_patches(cls, num_frames: int, num_mel_bins: int) -> int:
        """Patches of a fbank: the sequence grows with the clip length."""
        along_time = (num_frames - cls.kernel) // cls.stride + 1
        along_freq = (num_mel_bins - cls.kernel) // cls.stride + 1
        return along_time * along_freq

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        # AST lays the fbank out as (mel, time) with frequency as the image height.
        patches = self.patch_embed(fbank.transpose(1, 2).unsqueeze(1)).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed


class FrozenBagOfWordsText(nn.Module):
    """Frozen text encoder giving one token per text: mean of fixed random word vectors.

    Stands in for the frozen CLIP text tower on the embedded task: it is frozen and yields
    one vector per text, zero-padded to the encoder width, exactly where CLIP's 512-d
    feature would go.
    """

    feature_dim = 64

    def __init__(self, spec: TextInput, dim: int, seed: int) -> None:
        super().__init__()
        if dim < self.feature_dim:
            raise ValueError(f"encoder width {dim} is below the text feature width {self.feature_dim}")
        generator = torch.Generator().manual_seed(seed)
        table = torch.randn(len(spec.vocabulary), self.feature_dim, generator=generator)
        table[0] = 0.0  # padding word
        self.register_buffer("word_vectors", table)
        self.dim = dim

    def forward(self, word_ids: torch.Tensor) -> torch.Tensor:
        counts = (word_ids > 0).sum(dim=1, keepdim=True).clamp(min=1)
        feature = self.word_vectors[word_ids].sum(dim=1) / counts
        padded = nn.functional.pad(feature, (0, self.dim - self.feature_dim))
        return padded.unsqueeze(1)


class ClientModel(nn.Module):
    """All tokenizers of one client, plus the optional pre-LayerNorm over its token sequences.

    Returns one token tensor per stream of the task: early fusion concatenates the
    image/audio tokens and the text token into one sequence; late fusion keeps them apart.
    """

    def __init__(self, task: TaskSpec, dim: int, patch: int, pre_layer_norm: bool, seed: int) -> None:
        super().__init__()
        self.task = task
        self.image = ImageTokenizer(task.image, dim, patch) if task.image else None
        self.audio = AudioTokenizer(task.audio, dim) if task.audio else None
        self.text = FrozenBagOfWordsText(task.text, dim, seed) if task.text else None
        self.pre_norm = nn.LayerNorm(dim, eps=1e-5) if pre_layer_norm else nn.Identity()

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sequences = {}
        if self.image is not None:
            sequences["image"] = self.image(inputs["image"])
        if self.audio is not None:
            sequences["audio"] = self.audio(inputs["fbank"])
        if self.text is not None:
            sequences["text"] = self.text(inputs["text_ids"])
        if self.task.streams == (FUSED_STREAM,):
            streams = {FUSED_STREAM: torch.cat(list(sequences.values()), dim=1)}
        else:
            streams = {name: sequences[name] for name in self.task.streams}
        return {name: self.pre_norm(tokens) for name, tokens in streams.items()}

    def stream_shapes(self) -> dict[str, tuple[int, int]]:
        """(tokens, width) of each stream, for validating what a client sends."""
        with torch.no_grad():
            example = self(example_inputs(self.task, batch=1))
        return {name: tuple(tokens.shape[1:]) for name, tokens in example.items()}


def example_inputs(task: TaskSpec, batch: int) -> dict[str, torch.Tensor]:
    """Zero inputs of the right shapes and dtypes for `task`."""
    inputs = {}
    if task.image:
        inputs["image"] = torch.zeros(batch, 3, task.image.size, task.image.size, dtype=torch.uint8)
    if task.audio:
        inputs["fbank"] = torch.zeros(batch, task.audio.num_frames, task.audio.num_mel_bins)
    if task.text:
        inputs["text_ids"] = torch.zeros(batch, task.text.max_words, dtype=torch.long)
    return inputs
