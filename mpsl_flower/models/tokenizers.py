"""Client-side tokenizers: light modules that turn raw inputs into encoder-width tokens."""

from __future__ import annotations

import torch
from torch import nn

from tasks.spec import AUDIO_PATCH, AUDIO_STRIDE, FUSED_STREAM, PIXEL_NORMALISATIONS, AudioInput, ImageInput, TaskSpec


class ImageTokenizer(nn.Module):
    """Patch embedding (conv, no bias) + CLS + learned position embedding, as in CLIP ViT.

    Pixels arrive as uint8 and are normalised here as the task says (`ImageInput.normalisation`):
    for the real datasets as the original does, for the embedded tasks with CLIP's statistics.
    """

    def __init__(self, spec: ImageInput, dim: int, patch: int) -> None:
        super().__init__()
        if spec.size % patch:
            raise ValueError(f"image size {spec.size} is not a multiple of the patch size {patch}")
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch, bias=False)
        num_patches = (spec.size // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(dim) * dim**-0.5)
        self.pos_embed = nn.Parameter(torch.randn(num_patches + 1, dim) * dim**-0.5)
        mean, std = PIXEL_NORMALISATIONS[spec.normalisation]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image_uint8: torch.Tensor) -> torch.Tensor:
        pixels = (image_uint8.float() / 255.0 - self.mean) / self.std
        patches = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed


class AudioTokenizer(nn.Module):
    """fbank (frames x mel bins) -> 16 x 16 patches, stride 10 -> patch tokens after a CLS token, plus positions.

    `ast_layout=False`, as the original: the fbank enters the convolution as [time, mel] (time is
    the image height, so patches follow time first), the convolution has no bias and the
    positions start as N(0, 1). AST's projection weight, loaded into it, was trained on the
    other orientation. `ast_layout=True`, as AST itself: [mel, time], frequency first, with a
    bias, so AST's bias and positions can be loaded as well (`audio-tokenizer='ast'`).
    """

    def __init__(self, spec: AudioInput, dim: int, ast_layout: bool = False) -> None:
        super().__init__()
        self.ast_layout = ast_layout
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=AUDIO_PATCH, stride=AUDIO_STRIDE, bias=ast_layout)
        self.cls_token = nn.Parameter(torch.randn(dim) * dim**-0.5)
        position_scale = dim**-0.5 if ast_layout else 1.0
        self.pos_embed = nn.Parameter(torch.randn(spec.num_patches + 1, dim) * position_scale)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        fbank = fbank.float()
        if self.ast_layout:
            fbank = fbank.transpose(1, 2)
        patches = self.patch_embed(fbank.unsqueeze(1)).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.pos_embed


class TextTokenizer(nn.Module):
    """One token per text: the frozen text encoder's feature, zero-padded to the encoder width.

    Takes features [batch, texts per sample, width] and gives as many tokens per sample.
    The frozen encoder itself runs once per dataset (its features are cached, see
    `mpsl_flower.split.model_inputs`), so this module has no weights.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[-1] > self.dim:
            raise ValueError(f"text features are {features.shape[-1]} wide, wider than the encoder ({self.dim})")
        return nn.functional.pad(features.float(), (0, self.dim - features.shape[-1]))


class ClientModel(nn.Module):
    """All tokenizers of one client, plus the optional pre-LayerNorm over its token sequences.

    Returns one token tensor per stream of the task: early fusion concatenates the
    image/audio tokens and the text token into one sequence; late fusion keeps them apart.

    `head` maps the server's output to what the loss scores: the identity in the paper's mode
    (the server's head gives logits), the task's linear head in `label-privacy='u-shaped'`, where
    the server returns pooled features and the head, like the loss, stays with the client.
    """

    def __init__(
        self,
        task: TaskSpec,
        dim: int,
        patch: int,
        pre_layer_norm: bool,
        ast_audio_layout: bool = False,
        head_on_client: bool = False,
    ) -> None:
        super().__init__()
        self.task = task
        self.dim = dim
        self.image = ImageTokenizer(task.image, dim, patch) if task.image else None
        self.audio = AudioTokenizer(task.audio, dim, ast_audio_layout) if task.audio else None
        self.text = TextTokenizer(dim) if task.text else None
        self.pre_norm = nn.LayerNorm(dim, eps=1e-5) if pre_layer_norm else nn.Identity()
        # created last, so the tokenizers draw the same initial weights in both modes
        self.head = nn.Linear(dim, task.num_classes) if head_on_client and task.num_classes else nn.Identity()
        self.weight_sources: dict[str, str] = {}  # part -> file that initialised it (set by models.factory)

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sequences = {}
        if self.image is not None:
            sequences["image"] = self.image(inputs["image"])
        if self.audio is not None:
            sequences["audio"] = self.audio(inputs["fbank"])
        if self.text is not None:
            sequences["text"] = self.text(inputs["text_feature"])
        if self.task.streams == (FUSED_STREAM,):
            streams = {FUSED_STREAM: torch.cat(list(sequences.values()), dim=1)}
        else:
            streams = {name: sequences[name] for name in self.task.streams}
        return {name: self.pre_norm(tokens) for name, tokens in streams.items()}

    def stream_shapes(self) -> dict[str, tuple[int, int]]:
        """(tokens, width) of each stream, for validating what a client sends."""
        with torch.no_grad():
            example = self(example_inputs(self.task, batch=1, text_feature_dim=self.dim))
        return {name: tuple(tokens.shape[1:]) for name, tokens in example.items()}


def example_inputs(task: TaskSpec, batch: int, text_feature_dim: int) -> dict[str, torch.Tensor]:
    """Zero inputs of the right shapes and dtypes for `task` (any feature width up to the encoder's)."""
    inputs = {}
    if task.image:
        inputs["image"] = torch.zeros(batch, 3, task.image.size, task.image.size, dtype=torch.uint8)
    if task.audio:
        inputs["fbank"] = torch.zeros(batch, task.audio.num_frames, task.audio.num_mel_bins)
    if task.text:
        inputs["text_feature"] = torch.zeros(batch, task.text.per_sample, text_feature_dim)
    return inputs
