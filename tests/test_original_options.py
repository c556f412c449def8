"""The original scripts' options that change what is trained: `--fusion_type`, `--trainable_params_key`,
`--audio_time_dimension`, with the same meaning under our run-config keys."""

from __future__ import annotations

import pytest
import torch
from support.fixtures_video import write_video

from mpsl_flower.config import ENCODER_SIZES, ConfigError, parse_run_config
from mpsl_flower.models.factory import new_client_model
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.models.tokenizers import ClientModel, example_inputs
from mpsl_flower.models.trainable import trainable_arrays
from mpsl_flower.split.model_inputs import load_inputs
from mpsl_flower.split.runner import InProcessRunner
from tasks.datasets import ucf101
from tasks.preprocess import Sample, build_split
from tasks.registry import TASKS, configured_task
from tasks.spec import EARLY_FUSION, FUSED_STREAM, LATE_FUSION, fusion_types

TINY = ENCODER_SIZES["tiny-default"]


def _tokens(task, batch: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    client = ClientModel(task, TINY.dim, TINY.patch, pre_layer_norm=False)
    inputs = example_inputs(task, batch, TINY.dim)
    inputs = {name: torch.rand(value.shape) * (255 if name == "image" else 1) for name, value in inputs.items()}
    inputs = {name: value.to(torch.uint8) if name == "image" else value for name, value in inputs.items()}
    return client(inputs)


@pytest.mark.parametrize(
    ("dataset", "names"),
    [
        ("coco-qa", ("early_with_image_cls_and_pooling_mean", "late_with_image_cls_and_pooling_mean")),
        ("b-t4sa", ("early_with_image_cls_and_pooling_mean", "late_with_image_cls_and_pooling_mean")),
        ("meld", ("early_with_audio_cls_and_pooling_mean", "late_with_audio_cls_and_pooling_mean")),
        ("ucf101", ("early_with_both_cls_and_pooling_mean", "late_with_both_cls_and_pooling_mean")),
        ("kinetics-sounds", ("early_with_both_cls_and_pooling_mean", "late_with_both_cls_and_pooling_mean")),
    ],
)
def test_every_task_accepts_the_originals_fusion_type_names_and_its_default_is_the_originals(dataset, names):
    assert tuple(fusion_types(TASKS[dataset])) == names
    default = configured_task(dataset)
    assert default.fusion == (LATE_FUSION if dataset in ("ucf101", "kinetics-sounds") else EARLY_FUSION)
    for name in names:
        task = configured_task(dataset, name.upper())  # the original looks names up case-insensitively
        assert task.fusion == name.split("_")[0]
        assert task.streams == ((FUSED_STREAM,) if task.fusion == EARLY_FUSION else task.modalities)
        assert [modality for _, _, modality in task.readout] == list(task.modalities)


def test_early_fusion_of_frame_and_audio_reads_out_both_cls_tokens_of_the_one_sequence():
    early = configured_task("ucf101", "early_with_both_cls_and_pooling_mean")
    late = configured_task("ucf101")
    fused, apart = _tokens(early)[FUSED_STREAM], _tokens(late)
    assert fused.shape[1] == apart["image"].shape[1] + apart["audio"].shape[1]  # [image; audio], one sequence
    (_, image_at, _), (_, audio_at, _) = early.readout
    torch.testing.assert_close(fused[:, image_at], apart["image"][:, 0])  # image CLS
    torch.testing.assert_close(fused[:, audio_at], apart["audio"][:, 0])  # audio CLS, 1,213 tokens from the end
    server = ServerModel(early, TINY, finetune_blocks=1, post_layer_norm=False)
    assert server({FUSED_STREAM: fused}).shape == (2, 51)


def test_late_fusion_of_a_question_runs_the_encoder_on_image_and_text_apart():
    late = configured_task("coco-qa", "late_with_image_cls_and_pooling_mean")
    tokens = _tokens(late)
    assert set(tokens) == {"image", "text"} and tokens["text"].shape[1] == 1
    assert late.readout == (("image", 0, "image"), ("text", 0, "text"))
    assert ServerModel(late, TINY, 1, False)(tokens).shape == (2, 430)


def test_a_fusion_type_a_task_has_not_is_refused_with_its_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"fusion-type='late_with_image_cls_and_pooling_mean' does not apply to meld"):
        parse_run_config({"dataset": "meld", "fusion-type": "late_with_image_cls_and_pooling_mean"})
    with pytest.raises(ConfigError, match=r"does not apply to flickr30k; choose one of 'default'$"):
        parse_run_config({"dataset": "flickr30k", "fusion-type": "early_with_image_cls_and_pooling_mean"})


@pytest.mark.parametrize(
    ("key", "trained"),
    [
        ("default", {"image", "audio"}),
        ("classifier_only", set()),
        ("classifier_and_image_tokenizer", {"image"}),
        ("classifier_and_audio_tokenizer", {"audio"}),
        ("classifier_and_image_tokenizer_and_audio_tokenizer", {"image", "audio"}),
    ],
)
def test_trainable_params_key_says_which_tokenizers_the_clients_train(key, trained):
    settings = {"dataset": "shapes-av", "trainable-params-key": key, "embedded-pretraining": False}
    client = new_client_model(parse_run_config(settings))
    parts = {name.split(".")[0] for name in trainable_arrays(client)}
    assert parts == trained | {"pre_norm"}  # the pre-LayerNorm always trains, as in the original


def test_a_frozen_tokenizer_keeps_its_weights_through_mpsl_training():
    config = parse_run_config(
        {"dataset": "shapes-av", "trainable-params-key": "classifier_and_image_tokenizer", "batch-size": 100}
    )
    runner = InProcessRunner(config, load_inputs(config), num_clients=2, device=torch.device("cpu"))
    before = {k: v.clone() for k, v in runner.clients[0].model.state_dict().items()}
    runner.run_epoch(0)
    after = runner.clients[0].model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("audio."))
    assert not torch.equal(before["image.pos_embed"], after["image.pos_embed"])


def test_clients_with_nothing_to_train_are_refused_for_mpsl():
    options = {"trainable-params-key": "classifier_only", "use-pre-layer-norm": False}
    with pytest.raises(ConfigError, match="leaves MPSL clients nothing to train"):
        parse_run_config(options)
    assert parse_run_config({**options, "method": "fedavg"}).trainable_tokenizers() == ()


def test_a_1_s_audio_time_dimension_reads_1_s_around_each_moment_in_98_frames(tmp_path):
    task = configured_task("ucf101", audio_time="1s")
    assert (task.audio.num_frames, task.augmentation.window_seconds, task.audio.num_patches) == (98, 1.0, 108)
    assert task.readout == (("image", 0, "image"), ("audio", 0, "audio"))
    video = write_video(tmp_path / "v.avi", (200, 20, 20), [300.0, 600.0, 900.0], seconds=6.0)
    split = build_split(task, [Sample(0, clip=str(video))], tmp_path / "cache", "train")
    fbanks = split.inputs["fbank"].take([0])[0].float()  # moments at 1, 3 and 5 s
    assert fbanks.shape == (3, 98, 128)
    peaks = [int(fbank[10:90].mean(dim=0).argmax()) for fbank in fbanks]
    assert peaks[0] < peaks[1] < peaks[2]  # 1 s windows: 300 Hz around 1 s, 600 Hz around 3 s, 900 Hz around 5 s
    assert configured_task("ucf101").audio.num_frames == 1024 and ucf101.SPEC.augmentation.window_seconds == 10.255
    early = configured_task("kinetics-sounds", "early_with_both_cls_and_pooling_mean", "1s")
    assert early.readout[1] == (FUSED_STREAM, -109, "audio")


@pytest.mark.parametrize("dataset", ["meld", "coco-qa", "shapes-av"])
def test_audio_time_dimension_is_refused_where_the_original_ignores_it(dataset):
    with pytest.raises(ConfigError, match="applies to ucf101 and kinetics-sounds only"):
        parse_run_config({"dataset": dataset, "audio-time-dimension": "1s"})
