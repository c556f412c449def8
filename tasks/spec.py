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


AUDIO_PATCH, AUDIO_STRIDE = 16, 10  # the audio tokenizer's patches, as AST's: 16 x 16, stride 10 both ways


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

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(time, frequency) patches of the fbank: 101 x 12 for 1,024 frames of 128 bins."""
        along_time = (self.num_frames - AUDIO_PATCH) // AUDIO_STRIDE + 1
        along_frequency = (self.num_mel_bins - AUDIO_PATCH) // AUDIO_STRIDE + 1
        return along_time, along_frequency

    @property
    def num_patches(self) -> int:
        """Patches of the fbank: the sequence grows with the clip length (1,212 for 1,024 frames)."""
        along_time, along_frequency = self.patch_grid
        return along_time * along_frequency


@dataclass(frozen=True)
class TextInput:
    """Texts per sample (a question, or 5 captions); a frozen encoder makes each one feature, one token.

    The encoder is frozen, so its features are computed once per dataset and cached
    (`mpsl_flower.split.model_inputs`); the client tokenizer only pads them to the encoder width.
    """

    per_sample: int = 1


@dataclass(frozen=True)
class RandomMoment:
    """A video read as the original reads UCF101 and Kinetics-Sounds, at every step of training and test.

    The original picks a random moment of the video, takes its frame (shorter side to 256,
    bilinear; a random 224 x 224 crop; a horizontal flip with probability 0.5; brightness and
    saturation jitter of +-0.2; no normalisation) and the audio window centred on that moment.
    Decoding a video at every step is too slow for 100 clients, so the cache holds `moments`
    moments per video at stratified times ((k + 1/2) / moments of its length), each as a frame
    of `stored_height` x `stored_width` (the shorter side at 256 for a 4:3 video) and the fbank of
    its window (`window_seconds`, the original's `--audio_time_dimension`); each step draws one
    moment and crops, flips and jitters its frame (`tasks.augment`). An odd count keeps the middle
    moment, the deterministic view.
    """

    moments: int = 3
    window_seconds: float = 10.255
    stored_height: int = 256
    stored_width: int = 341
    brightness: float = 0.2
    saturation: float = 0.2


@dataclass(frozen=True)
class RandomAudioPlacement:
    """Audio read as the original reads MELD, at every step of training and test.

    `clip_seconds` of the clip (training: from a random start; test: from its start) are placed at
    a random offset in a zero `window_seconds` waveform, whose fbank is the input. The cache holds
    the first `stored_seconds` of each clip's waveform; the fbank is computed at every step
    (about 4 ms a sample).
    """

    clip_seconds: float = 2.56
    window_seconds: float = 7.68
    stored_seconds: float = 7.68


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
    augmentation: RandomMoment | RandomAudioPlacement | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The task's input modalities, in a fixed order."""
        return tuple(name for name in ("image", "audio", "text") if getattr(self, name) is not None)

    @property
    def streams(self) -> tuple[str, ...]:
        """Token sequences sent from client to server, in a fixed order.

        Early fusion sends one sequence, the modalities' tokens one after the other; late fusion
        sends each modality's sequence apart (retrieval: the image's, and the 5 caption tokens).
        """
        if self.fusion == EARLY_FUSION:
            return (FUSED_STREAM,)
        return self.modalities

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


def fusion_readout(
    fusion: str, image: ImageInput | None, audio: AudioInput | None, text: TextInput | None
) -> tuple[tuple[str, int, str], ...]:
    """The readout of the original's fusion types: each modality's first output token (its CLS, or
    the text token), averaged. Early fusion concatenates the modalities in (image, audio, text)
    order, so a later modality's first token is counted from the end (audio: its 1 + patches
    tokens; text: one token)."""
    lengths = {"image": None, "audio": audio and 1 + audio.num_patches, "text": text and text.per_sample}
    present = [name for name, given in (("image", image), ("audio", audio), ("text", text)) if given is not None]
    if fusion == LATE_FUSION:
        return tuple((name, 0, name) for name in present)
    positions = [0] + [-sum(lengths[name] for name in present[k:]) for k in range(1, len(present))]
    return tuple((FUSED_STREAM, position, name) for position, name in zip(positions, present))


def fusion_types(task: TaskSpec) -> dict[str, str]:
    """The original's `--fusion_type` names that `task` accepts, to early or late fusion
    (e.g. `early_with_image_cls_and_pooling_mean`); none for retrieval, which has one way."""
    if task.objective == RETRIEVAL:
        return {}
    read = {("image", "text"): "image", ("audio", "text"): "audio", ("image", "audio"): "both"}[task.modalities]
    return {f"{fusion}_with_{read}_cls_and_pooling_mean": fusion for fusion in (EARLY_FUSION, LATE_FUSION)}


def early_fusion_task(
    name: str,
    description: str,
    class_names: tuple[str, ...],
    image: ImageInput | None = None,
    audio: AudioInput | None = None,
    num_classes: int | None = None,
    augmentation: RandomMoment | RandomAudioPlacement | None = None,
) -> TaskSpec:
    """A classification task over [image or audio tokens; 1 text token], read out at the first
    (CLS) and last (text) outputs, as COCO-QA, B-T4SA and MELD are defined."""
    return TaskSpec(
        name=name,
        description=description,
        num_classes=len(class_names) if num_classes is None else num_classes,
        class_names=class_names,
        fusion=EARLY_FUSION,
        readout=fusion_readout(EARLY_FUSION, image, audio, TextInput()),
        image=image,
        audio=audio,
        text=TextInput(),
        augmentation=augmentation,
    )
