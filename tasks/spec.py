"""A task declared as data: one model and one training step serve every task.

Tasks differ only in what the client tokenizes, how the server fuses and reads out the
encoder outputs, and the head. `TaskSpec` holds exactly that, so adding a task never adds
a model class.
"""

from __future__ import annotations

from dataclasses import dataclass

EARLY_FUSION = "early"
LATE_FUSION = "late"
FUSED_STREAM = "fused"
CLASSIFICATION = "classification"  # head + cross-entropy, metric accuracy
RETRIEVAL = "retrieval"  # no head: image and caption embeddings, contrastive loss, metric R@1/5/10


# How pixels are normalised in the tokenizer: (mean, std) per channel, for pixels in [0, 1].
PIXEL_NORMALISATIONS = {
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),  # OpenAI CLIP's
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # `facebook/vit-mae-base`'s processor
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # torchvision's ToTensor alone
}


@dataclass(frozen=True)
class ImageInput:
    """An RGB image (or video frame) fed to the client's patch-embedding tokenizer.

    `resize`: "crop" scales the shorter side and crops the centre square; "stretch" scales to
    size x size, as a `ViTImageProcessor` does. `normalisation` names an entry of
    `PIXEL_NORMALISATIONS`.
    """

    size: int  # square side in pixels
    resize: str = "crop"
    normalisation: str = "clip"


# COCO-QA, B-T4SA, Flickr30K and MS-COCO images, as the original's `facebook/vit-mae-base` processor
# gives them: resized to 224 x 224, ImageNet mean and std.
ORIGINAL_STILL_IMAGE = ImageInput(size=224, resize="stretch", normalisation="imagenet")


@dataclass(frozen=True)
class AudioInput:
    """A Kaldi fbank (frames x mel bins) fed to the client's audio patch tokenizer.

    `original`: prepared as the original code does for its datasets (the waveform zero-padded to
    the window before the fbank, the fbank not normalised); otherwise the fbank is padded and
    normalised with AudioSet's statistics, as AST was trained (the embedded task).
    """

    num_frames: int
    num_mel_bins: int = 128
    original: bool = False


@dataclass(frozen=True)
class TextInput:
    """Texts per sample (a question, or 5 captions); a frozen encoder makes each one feature, one token.

    The encoder is frozen, so its features are computed once per dataset and cached
    (`mpsl_flower.model_inputs`); the client tokenizer only pads them to the encoder width.
    """

    per_sample: int = 1


@dataclass(frozen=True)
class TaskSpec:
    """Everything the model and the step need to know about a task.

    `readout` lists (stream, position, modality) triples whose encoder outputs are averaged
    before the head: e.g. the image CLS and the text token for early fusion, both CLS tokens
    for late fusion. The modality says which FedCLIP adapter, if any, applies to that output.
    """

    name: str
    description: str
    num_classes: int
    class_names: tuple[str, ...]
    fusion: str
    readout: tuple[tuple[str, int, str], ...]
    objective: str = CLASSIFICATION
    image: ImageInput | None = None
    audio: AudioInput | None = None
    text: TextInput | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The task's input modalities, in a fixed order."""
        return tuple(name for name in ("image", "audio", "text") if getattr(self, name) is not None)

    @property
    def streams(self) -> tuple[str, ...]:
        """Token sequences sent from client to server, in a fixed order.

        Late fusion sends the image and audio sequences apart; retrieval sends the image
        sequence and the caption tokens apart (each caption is encoded on its own).
        """
        if self.fusion == EARLY_FUSION:
            return (FUSED_STREAM,)
        separate = ("image", "audio", "text") if self.objective == RETRIEVAL else ("image", "audio")
        return tuple(name for name in separate if getattr(self, name) is not None)

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Dataset columns the client tokenizers read, besides the label."""
        columns = []
        if self.image is not None:
            columns.append("image")
        if self.audio is not None:
            columns.append("fbank")
        if self.text is not None:
            columns.append("text_feature")
        return tuple(columns)


def early_fusion_task(
    name: str,
    description: str,
    class_names: tuple[str, ...],
    image: ImageInput | None = None,
    audio: AudioInput | None = None,
    num_classes: int | None = None,
) -> TaskSpec:
    """A classification task over [image or audio tokens; 1 text token], read out at the first
    (CLS) and last (text) outputs, as COCO-QA, B-T4SA and MELD are defined."""
    modality = "image" if image is not None else "audio"
    return TaskSpec(
        name=name,
        description=description,
        num_classes=len(class_names) if num_classes is None else num_classes,
        class_names=class_names,
        fusion=EARLY_FUSION,
        readout=((FUSED_STREAM, 0, modality), (FUSED_STREAM, -1, "text")),
        image=image,
        audio=audio,
        text=TextInput(),
    )
