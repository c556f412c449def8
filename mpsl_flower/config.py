"""The run config: one typed, validated object built from `[tool.flwr.app.config]`.

Key names mirror the options of the original MPSL scripts (`--batch_size` becomes
`batch-size`), so users of that code find their settings. Every bad value stops the run
before training with one message that names the key, the allowed values and the fix.

This module is the ground the rest of `mpsl_flower` stands on: it imports nothing from it.
What the checks need to know of the model (encoder sizes, server precisions) is declared
here as data, and so are the facts about keys (which shape the saved model, which a resumed
run may change) and the properties derived from them (`head_on_client`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tasks.registry import AUDIO_TIME_DIMENSIONS, DEFAULT_AUDIO_TIME, DEFAULT_FUSION, EMBEDDED, TASKS, configured_task
from tasks.spec import RETRIEVAL, TaskSpec


@dataclass(frozen=True)
class EncoderSize:
    """Width, depth and heads of an encoder, the patch size of its image tokenizer, and the OpenCLIP LAION
    checkpoint of the same shape (its Hugging Face repository; empty when there is none)."""

    dim: int
    depth: int
    heads: int
    patch: int
    open_clip: str = ""


ENCODER_SIZES: dict[str, EncoderSize] = {
    # Small enough that the embedded default task trains in minutes on a 2-core CPU.
    "tiny-default": EncoderSize(dim=96, depth=4, heads=4, patch=8),
    "vit-ti16": EncoderSize(dim=192, depth=12, heads=3, patch=16),
    "vit-s16": EncoderSize(dim=384, depth=12, heads=6, patch=16),
    # Meta-Transformer base: the paper's model.
    "vit-b16": EncoderSize(dim=768, depth=12, heads=12, patch=16, open_clip="CLIP-ViT-B-16-laion2B-s34B-b88K"),
    # Meta-Transformer large.
    "vit-l14": EncoderSize(dim=1024, depth=24, heads=16, patch=14, open_clip="CLIP-ViT-L-14-laion2B-s32B-b82K"),
    "vit-h14": EncoderSize(dim=1280, depth=32, heads=16, patch=14, open_clip="CLIP-ViT-H-14-laion2B-s32B-b79K"),
}
SERVER_PRECISIONS = ("fp32", "bf16")  # MPSL's server step: fp32, or bf16 autocast (`split.server_side`)
METHODS = ("mpsl", "fedavg", "fedclip", "centralized")
# The methods whose global batch is split over the clients; like the original (`main_mpsl.py`, `main_fl.py`) they
# refuse a batch-size the clients cannot share evenly.
SPLIT_BATCH_METHODS = ("mpsl", "fedavg", "fedclip")
SPLIT_TYPES = ("iid", "noniid")
DEVICES = ("auto", "cpu", "cuda")
TEXT_ENCODERS = ("auto", "clip", "openclip", "minilm", "bag-of-words", "token-ids")
RETRIEVAL_SCORINGS = ("dot", "cosine")
AUDIO_TOKENIZERS = ("original", "ast")
ACTIVATION_PRECISIONS = ("float32", "float16", "bfloat16", "int8")  # coded by mpsl_flower.split.precision
LABEL_PRIVACY_MODES = ("none", "u-shaped")  # u-shaped: the task head and the loss stay on the clients
# The original's `--trainable_params_key` choices: which tokenizers train besides the head ("default": all).
TRAINABLE_PARAMS_KEYS = (
    "default",
    "classifier_only",
    "classifier_and_image_tokenizer",
    "classifier_and_audio_tokenizer",
    "classifier_and_image_tokenizer_and_audio_tokenizer",
)
DATASET_ALIASES = {"t4sa": "b-t4sa", "coco-retrieval": "mscoco"}  # the original scripts' names
MINILM_WIDTH = 384
CLIP_TEXT_WIDTH = 512  # OpenAI CLIP ViT-B/16's text feature
# The keys that shape a saved model's tensors (the rest shape training, not the model): a model loads
# only with a config that agrees with its own on these (`runs.saved_model`).
MODEL_KEYS = (
    "dataset",
    "encoder-size",
    "fusion-type",
    "audio-time-dimension",
    "audio-tokenizer",
    "text-encoder",
    "use-pre-layer-norm",
    "use-post-layer-norm",
    "use-adapter-approach",
    "include-image-adapter",
    "include-text-adapter",
    "include-audio-adapter",
    "include-unified-adapter",
    "label-privacy",
)
# What a resumed run may set differently: where it runs, how long it waits, how far it trains (`runs.resume`).
RESUMABLE_CHANGES = ("resume-from", "nr-of-epochs", "step-timeout-s", "device")
# "default" for one of `TASK_DEFAULT_KEYS` (or leaving it out) asks for the task's own value: the original's
# example commands for the real datasets, settings that train in minutes on a CPU for the embedded tasks.
TASK_DEFAULT = "default"
EMBEDDED_DEFAULTS = {
    "encoder-size": "tiny-default",
    "nr-of-last-encoder-blocks-to-finetune": 2,
    "start-lr": 1e-4,  # the paper's: fine-tuning from the embedded pretraining
    "nr-of-epochs": 6,
}
PAPER_DEFAULTS = {  # ViT-B/16 Meta-Transformer, last 6 blocks (at most the encoder's depth), as the original's runs
    "encoder-size": "vit-b16",
    "nr-of-last-encoder-blocks-to-finetune": 6,
    "start-lr": 1e-4,
    "nr-of-epochs": 15,
}
TASK_DEFAULT_KEYS = tuple(PAPER_DEFAULTS)
DEFAULT_OUTPUT_DIR = "~/mpsl-flower-results"
DEFAULT_CACHE_DIR = "~/.cache/mpsl-flower"


class ConfigError(ValueError):
    """A run-config value that cannot be used; the message says which key and how to fix it."""


def _key(name: str, **extra) -> dict:
    return {"key": name, **extra}


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run; see README.md for what each key does."""

    method: str = field(default="mpsl", metadata=_key("method", choices=METHODS))
    dataset: str = field(default="shapes-qa", metadata=_key("dataset", choices=tuple(TASKS)))
    split_type: str = field(default="noniid", metadata=_key("dataset-split-type", choices=SPLIT_TYPES))
    dirichlet_alpha: float = field(default=0.5, metadata=_key("dirichlet-alpha", positive=True))
    min_partition_size: int = field(default=10, metadata=_key("min-partition-size", minimum=1))
    batch_size: int = field(default=500, metadata=_key("batch-size", minimum=1))
    num_epochs: int = field(default=EMBEDDED_DEFAULTS["nr-of-epochs"], metadata=_key("nr-of-epochs", minimum=1))
    finetune_blocks: int = field(
        default=EMBEDDED_DEFAULTS["nr-of-last-encoder-blocks-to-finetune"],
        metadata=_key("nr-of-last-encoder-blocks-to-finetune", minimum=-1),
    )
    freeze_encoder: bool = field(default=False, metadata=_key("freeze-encoder"))
    learning_rate: float = field(default=EMBEDDED_DEFAULTS["start-lr"], metadata=_key("start-lr", positive=True))
    lr_step_size: int = field(default=5, metadata=_key("lr-step-size", minimum=1))
    lr_gamma: float = field(default=0.1, metadata=_key("lr-gamma", positive=True))
    seed: int = field(default=2024, metadata=_key("random-seed", minimum=0))
    pre_layer_norm: bool = field(default=True, metadata=_key("use-pre-layer-norm"))
    post_layer_norm: bool = field(default=False, metadata=_key("use-post-layer-norm"))
    encoder_size: str = field(
        default=EMBEDDED_DEFAULTS["encoder-size"], metadata=_key("encoder-size", choices=tuple(ENCODER_SIZES))
    )
    text_encoder: str = field(default="auto", metadata=_key("text-encoder", choices=TEXT_ENCODERS))
    data_dir: str = field(default="", metadata=_key("torch-data-dir", path="existing"))
    cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata=_key("pre-processors-cache-dir", path="created"))
    tokenizer_weights_dir: str = field(default="", metadata=_key("tokenizer-weights-cache-dir", path="created"))
    model_weights_dir: str = field(default="", metadata=_key("model-weights-dir", path="existing"))
    output_dir: str = field(default=DEFAULT_OUTPUT_DIR, metadata=_key("output-dir", path="created"))
    save_name: str = field(default="mpsl_model", metadata=_key("save-file-name"))
    device: str = field(default="auto", metadata=_key("device", choices=DEVICES))
    image_adapter: bool = field(default=True, metadata=_key("include-image-adapter"))
    text_adapter: bool = field(default=True, metadata=_key("include-text-adapter"))
    audio_adapter: bool = field(default=True, metadata=_key("include-audio-adapter"))
    unified_adapter: bool = field(default=False, metadata=_key("include-unified-adapter"))
    audio_tokenizer: str = field(default="original", metadata=_key("audio-tokenizer", choices=AUDIO_TOKENIZERS))
    fusion_type: str = field(default=DEFAULT_FUSION, metadata=_key("fusion-type"))
    trainable_params_key: str = field(
        default="default", metadata=_key("trainable-params-key", choices=TRAINABLE_PARAMS_KEYS)
    )
    audio_time_dimension: str = field(
        default=DEFAULT_AUDIO_TIME, metadata=_key("audio-time-dimension", choices=tuple(AUDIO_TIME_DIMENSIONS))
    )
    adapter_approach: bool = field(default=False, metadata=_key("use-adapter-approach"))
    fraction_train: float = field(default=1.0, metadata=_key("fraction-train", positive=True))
    step_timeout_s: float = field(default=120.0, metadata=_key("step-timeout-s", positive=True))
    discovery_timeout_s: float = field(default=300.0, metadata=_key("discovery-timeout-s", positive=True))
    eval_batch_size: int = field(default=250, metadata=_key("eval-batch-size", minimum=1))
    retrieval_scoring: str = field(default="dot", metadata=_key("retrieval-scoring", choices=RETRIEVAL_SCORINGS))
    save_every_epoch: bool = field(default=False, metadata=_key("save-model-after-each-epoch"))
    save_final_model: bool = field(default=True, metadata=_key("save-final-model"))
    validate_only_aggregated: bool = field(default=True, metadata=_key("validate-only-aggregated-model"))
    test_time_augmentation: bool = field(default=True, metadata=_key("test-time-augmentation"))
    client_state_dir: str = field(default="", metadata=_key("client-state-dir", path="created"))
    server_precision: str = field(default="fp32", metadata=_key("server-precision", choices=SERVER_PRECISIONS))
    compile_server: bool = field(default=False, metadata=_key("compile-server"))
    activation_precision: str = field(
        default="float32", metadata=_key("activation-precision", choices=ACTIVATION_PRECISIONS)
    )
    label_privacy: str = field(default="none", metadata=_key("label-privacy", choices=LABEL_PRIVACY_MODES))
    label_attack_report: bool = field(default=False, metadata=_key("label-attack-report"))
    resume_from: str = field(default="", metadata=_key("resume-from", path="server"))  # checked by RunResults
    allow_missing_weights: bool = field(default=False, metadata=_key("allow-missing-weights"))
    # Beyond the original: a seeded sample of this many clients per MPSL step (0: every client, as the original).
    clients_per_step: int = field(default=0, metadata=_key("clients-per-step", minimum=0))
    # Beyond the original: the named real dataset's exact shapes with generated inputs, no download needed.
    rehearsal: bool = field(default=False, metadata=_key("rehearsal"))
    rehearsal_train_samples: int = field(default=0, metadata=_key("rehearsal-train-samples", minimum=0))
    rehearsal_test_samples: int = field(default=0, metadata=_key("rehearsal-test-samples", minimum=0))
    embedded_train_samples: int = field(default=0, metadata=_key("embedded-train-samples", minimum=0))
    # The embedded tasks' tiny-default encoder starts from weights pretrained on generated samples, as a paper run
    # starts from CLIP's (`models.embedded_pretraining`); false: from random weights.
    embedded_pretraining: bool = field(default=True, metadata=_key("embedded-pretraining"))

    @functools.cached_property
    def task(self) -> TaskSpec:
        """The run's task, shaped by `fusion-type` and `audio-time-dimension`."""
        return configured_task(self.dataset, self.fusion_type, self.audio_time_dimension)

    def trainable_tokenizers(self) -> tuple[str, ...]:
        """Tokenizers the clients train (`trainable-params-key`): by default every one the task has, as the
        original's per-task defaults; the text tokenizer has no weights."""
        if self.trainable_params_key == "default":
            return ("image", "audio")
        return tuple(m for m in ("image", "audio") if f"{m}_tokenizer" in self.trainable_params_key)

    def to_flower(self) -> dict[str, bool | float | int | str]:
        """The config as `[tool.flwr.app.config]` keys, e.g. for results files and overrides."""
        return {f.metadata["key"]: getattr(self, f.name) for f in dataclasses.fields(self)}

    @property
    def head_on_client(self) -> bool:
        """`label-privacy='u-shaped'`: the task head and the loss stay on the clients; the server's output is the
        pooled features, not logits."""
        return self.label_privacy == "u-shaped"

    @property
    def adapter_modalities(self) -> dict[str, bool]:
        """FedCLIP: which modalities get an adapter."""
        return {"image": self.image_adapter, "text": self.text_adapter, "audio": self.audio_adapter}

    @property
    def uses_adapters(self) -> bool:
        """The FedCLIP adapter approach: frozen encoder plus adapters (FedCLIP, or any method that asks)."""
        return self.method == "fedclip" or self.adapter_approach

    def client_batch_size(self, num_clients: int) -> int:
        """Each client's mini-batch: the global batch split evenly over the clients of a step, rounded up
        (500/100 = 5); those are every client, or `clients-per-step` of them when fewer."""
        return math.ceil(self.batch_size / self.step_clients(num_clients))

    def step_clients(self, num_clients: int) -> int:
        """How many of `num_clients` clients take part in each step: `clients-per-step`, or every one (0)."""
        return min(self.clients_per_step, num_clients) if self.clients_per_step else num_clients

    def check_num_clients(self, num_clients: int) -> None:
        """Fail before training when the federation cannot be served with this config: too few clients, more
        `clients-per-step` than clients, or (MPSL, FedAvg, FedCLIP) a global batch that is not the mini-batches
        of a step's clients summed."""
        if num_clients < 1:
            raise ConfigError("no clients are connected: start at least one SuperNode")
        if self.clients_per_step > num_clients:
            raise ConfigError(
                f"clients-per-step={self.clients_per_step} exceeds the {num_clients} connected clients: "
                f"set it to at most {num_clients}, or to 0 for every client in every step"
            )
        sharers = self.step_clients(num_clients)
        among = f"clients-per-step={sharers}" if self.clients_per_step else f"the number of clients ({sharers})"
        if self.batch_size < sharers:
            raise ConfigError(
                f"batch-size={self.batch_size} is below {among}: every client of a step needs at least one "
                f"sample; set batch-size >= {sharers}"
            )
        if self.method in SPLIT_BATCH_METHODS and self.batch_size % sharers:
            mini_batch = self.client_batch_size(num_clients)
            below, above = (mini_batch - 1) * sharers, mini_batch * sharers
            over = f"the clients-per-step={sharers}" if self.clients_per_step else str(sharers)
            other_k = f", or clients-per-step to a divisor of {self.batch_size}" if self.clients_per_step else ""
            raise ConfigError(
                f"batch-size={self.batch_size} does not split evenly over {over} clients: each would take "
                f"{mini_batch} samples, {above} in all, and the original refuses a step larger than batch-size; "
                f"set batch-size to a multiple of {sharers}, e.g. {below} or {above}{other_k}"
            )

    def resolved_path(self, name: str) -> Path | None:
        """An absolute path setting, or None when it is empty."""
        value = getattr(self, name)
        return Path(value).expanduser() if value else None

    def folder(self, key: str) -> Path | None:
        """The path setting named by its run-config key (e.g. 'model-weights-dir'), or None when empty."""
        (name,) = [f.name for f in dataclasses.fields(self) if f.metadata["key"] == key]
        return self.resolved_path(name)


def _coerce(f: dataclasses.Field, value):
    key, expected = f.metadata["key"], f.type
    kinds = {"bool": bool, "int": int, "float": float, "str": str}
    kind = kinds[expected]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} must be of type {expected}")
    return value


def _check_value(f: dataclasses.Field, value) -> None:
    key, meta = f.metadata["key"], f.metadata
    if "choices" in meta and value not in meta["choices"]:
        allowed = ", ".join(meta["choices"])
        raise ConfigError(f"{key}={value!r} is not supported; allowed values: {allowed}")
    if "minimum" in meta and value < meta["minimum"]:
        raise ConfigError(f"{key}={value} must be at least {meta['minimum']}")
    if meta.get("positive") and not value > 0:
        raise ConfigError(f"{key}={value} must be greater than 0")
    if meta.get("path") and value:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise ConfigError(
                f"{key}={value!r} must be an absolute path: Flower runs the app from a copy "
                "under $FLWR_HOME/apps, so relative paths would land there"
            )
        if meta["path"] == "existing" and not path.is_dir():
            raise ConfigError(f"{key}={value!r} does not exist: create it, or set {key} to an existing folder")


def task_defaults(run_config: Mapping[str, object]) -> dict[str, object]:
    """The values `TASK_DEFAULT_KEYS` take where `run_config` leaves them out or says "default": the original's
    example command for a real dataset, the fast CPU settings for an embedded one (the blocks trained are at
    most the encoder's depth). The run logs them, so a user sees which settings nobody chose."""
    dataset = str(run_config.get("dataset", RunConfig.dataset))
    defaults = dict(EMBEDDED_DEFAULTS if DATASET_ALIASES.get(dataset, dataset) in EMBEDDED else PAPER_DEFAULTS)
    chosen = {key: run_config[key] for key in TASK_DEFAULT_KEYS if run_config.get(key, TASK_DEFAULT) != TASK_DEFAULT}
    size = ENCODER_SIZES.get(str(chosen.get("encoder-size", defaults["encoder-size"])))
    blocks = "nr-of-last-encoder-blocks-to-finetune"
    if size is not None:
        defaults[blocks] = min(defaults[blocks], size.depth)
    return {key: value for key, value in defaults.items() if key not in chosen}


def parse_run_config(run_config: Mapping[str, object]) -> RunConfig:
    """Build and validate a `RunConfig` from Flower's run config (hyphenated keys)."""
    fields = {f.metadata["key"]: f for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(run_config) - set(fields))
    if unknown:
        raise ConfigError(f"unknown run-config keys {unknown}; known keys: {', '.join(fields)}")
    run_config = {**run_config, **task_defaults(run_config)}
    values = {}
    for key, f in fields.items():
        if key in run_config:
            values[f.name] = _coerce(f, run_config[key])
    if values.get("dataset") in DATASET_ALIASES:
        values["dataset"] = DATASET_ALIASES[values["dataset"]]
    config = RunConfig(**values)
    for f in dataclasses.fields(config):
        _check_value(f, getattr(config, f.name))
    config = _resolve_finetune_blocks(config)
    _check_text_encoder(config)
    try:
        config.task  # noqa: B018 - shapes the task once, so a bad fusion or audio option fails here
    except ValueError as error:
        raise ConfigError(str(error)) from error
    if not config.output_dir:
        raise ConfigError(f"output-dir is empty: set an absolute folder for the results, e.g. {DEFAULT_OUTPUT_DIR!r}")
    patch, image = ENCODER_SIZES[config.encoder_size].patch, config.task.image
    if image is not None and image.size % patch:
        fitting = [name for name, size in ENCODER_SIZES.items() if image.size % size.patch == 0]
        raise ConfigError(
            f"encoder-size={config.encoder_size!r} cuts images into {patch}-pixel patches, which do not tile "
            f"{config.dataset}'s {image.size}-pixel images; choose one of {fitting}"
        )
    if config.method != "mpsl" and (config.server_precision != "fp32" or config.compile_server):
        raise ConfigError(
            f"server-precision and compile-server apply to MPSL's server step; method={config.method!r} "
            "trains in fp32 without compilation: leave them at 'fp32' and false"
        )
    if config.method == "mpsl" and not config.pre_layer_norm and not config.trainable_tokenizers():
        raise ConfigError(
            f"trainable-params-key={config.trainable_params_key!r} with use-pre-layer-norm=false leaves MPSL clients "
            "nothing to train; train a tokenizer or keep the pre-LayerNorm"
        )
    _check_mpsl_keys(config)
    _check_rehearsal(config)
    _check_embedded_size(config)
    if config.fraction_train > 1:
        raise ConfigError(f"fraction-train={config.fraction_train} must be in (0, 1]")
    if config.lr_gamma > 1:
        raise ConfigError(f"lr-gamma={config.lr_gamma} must be in (0, 1]")
    return config


def _resolve_finetune_blocks(config: RunConfig) -> RunConfig:
    """The original's rule: -1 trains every block, or none with `freeze-encoder`; the result is stored."""
    depth = ENCODER_SIZES[config.encoder_size].depth
    blocks = config.finetune_blocks
    if blocks == -1:
        blocks = 0 if config.freeze_encoder else depth
    if config.freeze_encoder and blocks:
        raise ConfigError(
            f"freeze-encoder=true trains no encoder block, but nr-of-last-encoder-blocks-to-finetune={blocks}; "
            "set it to 0 or -1, or freeze-encoder=false"
        )
    if blocks > depth:
        raise ConfigError(
            f"nr-of-last-encoder-blocks-to-finetune={blocks} exceeds the depth of "
            f"encoder-size={config.encoder_size!r}; allowed values: -1..{depth}"
        )
    return dataclasses.replace(config, finetune_blocks=blocks)


def _check_mpsl_keys(config: RunConfig) -> None:
    """The label-privacy keys concern MPSL's messages (the attacks need class labels to score against), and
    only MPSL keeps a resume state."""
    if config.method != "mpsl" and (config.label_privacy != "none" or config.label_attack_report):
        raise ConfigError(
            f"label-privacy and label-attack-report concern MPSL's server, which sees gradients of client losses; "
            f"with method={config.method!r} no per-sample gradient leaves a client: leave them at 'none' and false"
        )
    if config.method != "mpsl" and config.clients_per_step:
        raise ConfigError(
            f"clients-per-step={config.clients_per_step} draws the clients of each MPSL step; "
            f"method={config.method!r} has no such steps: leave clients-per-step at 0"
        )
    if config.method != "mpsl" and config.resume_from:
        raise ConfigError(
            f"resume-from continues MPSL runs only; a method={config.method!r} run keeps no resume state: "
            "start it anew (its last model is in its results folder)"
        )
    if config.label_attack_report and config.task.objective == RETRIEVAL:
        raise ConfigError(
            f"label-attack-report=true scores attacks against class labels; {config.dataset} is a retrieval task "
            "whose pairs are in-batch positions, not labels: set label-attack-report=false"
        )


def _check_embedded_size(config: RunConfig) -> None:
    """`embedded-train-samples` sizes a generated task; a real dataset's size is its files' (or its rehearsal's)."""
    if config.embedded_train_samples and config.dataset not in EMBEDDED:
        raise ConfigError(
            f"embedded-train-samples={config.embedded_train_samples} sizes the embedded tasks; "
            f"dataset={config.dataset!r} is not one: leave it at 0 (for a rehearsal use rehearsal-train-samples)"
        )


def _check_rehearsal(config: RunConfig) -> None:
    """A rehearsal generates a real dataset's shapes; the embedded tasks are generated already."""
    if not config.rehearsal:
        counts = (("train", config.rehearsal_train_samples), ("test", config.rehearsal_test_samples))
        chosen = " ".join(f"rehearsal-{split}-samples={count}" for split, count in counts if count)
        if chosen:
            raise ConfigError(f"{chosen} sizes a rehearsal: set rehearsal=true too, or leave them at 0")
    elif config.dataset in EMBEDDED:
        real = ", ".join(name for name in TASKS if name not in EMBEDDED)
        raise ConfigError(
            f"rehearsal=true rehearses a real dataset; dataset={config.dataset!r} is generated already: "
            f"set rehearsal=false, or choose one of {real}"
        )


def _check_text_encoder(config: RunConfig) -> None:
    """An explicit text encoder must fit the encoder width; `auto` always picks one that does."""
    width = ENCODER_SIZES[config.encoder_size].dim
    if config.text_encoder == "clip" and width < CLIP_TEXT_WIDTH:
        raise ConfigError(
            f"text-encoder='clip' gives {CLIP_TEXT_WIDTH}-d features, wider than encoder-size="
            f"{config.encoder_size!r} ({width}); set text-encoder='minilm', 'bag-of-words' or 'auto'"
        )
    if config.text_encoder == "openclip" and not ENCODER_SIZES[config.encoder_size].open_clip:
        with_open_clip = [name for name, size in ENCODER_SIZES.items() if size.open_clip]
        raise ConfigError(
            f"text-encoder='openclip' needs an OpenCLIP checkpoint, which exists for encoder-size "
            f"{', '.join(with_open_clip)} only; set text-encoder='auto'"
        )
    if config.text_encoder == "minilm" and width < MINILM_WIDTH:
        raise ConfigError(
            f"text-encoder='minilm' gives {MINILM_WIDTH}-d features, wider than encoder-size="
            f"{config.encoder_size!r} ({width}); set text-encoder='bag-of-words' or 'auto'"
        )
