"""Labels, partitions, batch checks and metrics as the original computes them (MPSL research code, `src/`)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import datasets
import pytest
import torch
from support.fixtures_images import write_hf_flickr30k_table, write_karpathy
from support.fixtures_meld import write_meld

from mpsl_flower.config import ConfigError, parse_run_config
from mpsl_flower.models.factory import new_full_model
from mpsl_flower.runs.record import TEST_ACCURACY, TEST_ACCURACY_BATCH_MEAN, is_test_metric
from mpsl_flower.split.evaluation import evaluate
from mpsl_flower.split.model_inputs import load_inputs
from tasks.datasets import flickr30k, meld
from tasks.objectives import retrieval_recalls
from tasks.registry import TASKS
from tasks.spec import RETRIEVAL

SHAPES_CLASSES = TASKS["shapes-qa"].num_classes


# ---- MELD label ids ---------------------------------------------------------------------------


def test_meld_label_ids_are_the_sorted_emotion_names_as_the_original_numbers_them(tmp_path):
    """The original: `sorted(set(targets))` over the emotion names, so anger is 0 and surprise 6."""
    write_meld(tmp_path, per_class=1)
    release = tmp_path / "meld" / "MELD.Raw"
    emotions = []
    for official in ("train", "dev"):  # our train split, in the loader's order
        with open(release / f"{official}_sent_emo.csv", encoding="utf-8", newline="") as handle:
            emotions += [row["Emotion"] for row in csv.DictReader(handle)]
    classes = sorted(set(emotions))
    assert meld.CLASS_NAMES == meld.SPEC.class_names == tuple(classes)
    assert meld.CLASS_NAMES != ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
    assert [s.label for s in meld.samples(tmp_path)["train"]] == [classes.index(e) for e in emotions]


# ---- iid is the Dirichlet partitioner at alpha 1e5 --------------------------------------------


@pytest.mark.parametrize("method", ["mpsl", "fedavg", "fedclip"])
def test_a_batch_not_divisible_by_the_clients_is_refused_with_the_nearest_valid_sizes(method):
    config = parse_run_config({"batch-size": 500, "method": method})
    config.check_num_clients(4)  # 4 x 125 = 500
    with pytest.raises(ConfigError, match=r"batch-size=500 does not split evenly over 3 clients.* 498 or 501"):
        config.check_num_clients(3)  # the original: ceil(500 / 3) * 3 = 501 > 500
    with pytest.raises(ConfigError, match=r"over 7 clients.* 497 or 504"):
        config.check_num_clients(7)


def test_centralized_training_shares_no_batch_and_is_not_refused():
    parse_run_config({"batch-size": 500, "method": "centralized"}).check_num_clients(3)


# ---- the original's accuracy: the mean of per-batch accuracies --------------------------------


def test_the_batch_mean_accuracy_weighs_the_last_partial_batch_as_a_full_one(fast_run_config):
    """The original's test loader: `batch-size` batches, unshuffled, the last one partial; its accuracy
    is the mean of the batches' accuracies."""
    config = parse_run_config(fast_run_config)
    model = new_full_model(config)
    test = load_inputs(config).test.subset(range(130))
    batch = 40  # batches of 40, 40, 40 and 10
    tested = evaluate(model.client, model.server, test, 64, accuracy_batch_size=batch)
    pieces = [test.subset(range(start, min(start + batch, len(test)))) for start in range(0, len(test), batch)]
    per_batch = [evaluate(model.client, model.server, piece, batch)[TEST_ACCURACY] for piece in pieces]
    assert tested[TEST_ACCURACY_BATCH_MEAN] == pytest.approx(sum(per_batch) / len(pieces))
    exact = sum(share * len(piece) for share, piece in zip(per_batch, pieces)) / len(test)
    assert tested[TEST_ACCURACY] == pytest.approx(exact)
    assert tested[TEST_ACCURACY_BATCH_MEAN] != pytest.approx(exact)  # the partial batch tells them apart
    again = evaluate(model.client, model.server, test, 13, accuracy_batch_size=batch)  # only memory use differs
    assert again[TEST_ACCURACY_BATCH_MEAN] == pytest.approx(tested[TEST_ACCURACY_BATCH_MEAN])
    assert is_test_metric(TEST_ACCURACY_BATCH_MEAN)


# ---- recall: ties do not count as hits ----------------------------------------------------------


def _stable_argsort_recalls(outputs: torch.Tensor, ks: tuple[int, ...]) -> dict[str, float]:
    """R@k from a full stable descending argsort and top-k membership, the way the original scores it."""
    image, captions = outputs[:, 0].float(), outputs[:, 1:].float()
    num_images, per_image = captions.shape[:2]
    similarity = image @ captions.reshape(num_images * per_image, -1).T
    owner = torch.arange(num_images).repeat_interleave(per_image)
    by_caption = torch.argsort(similarity.T, dim=1, descending=True, stable=True)
    by_image = torch.argsort(similarity, dim=1, descending=True, stable=True)
    recalls = {}
    for k in ks:
        recalls[f"test_r{k}_text_to_image"] = float((by_caption[:, :k] == owner[:, None]).any(1).float().mean())
        found = (owner[by_image[:, :k]] == torch.arange(num_images)[:, None]).any(1)
        recalls[f"test_r{k}_image_to_text"] = float(found.float().mean())
    return recalls


def test_collapsed_embeddings_recall_at_chance_not_perfectly():
    images, captions = 8, 5
    outputs = torch.ones(images, 1 + captions, 16)  # every image and caption the same embedding
    recalls = retrieval_recalls(RETRIEVAL, outputs)
    assert recalls["test_r1_image_to_text"] == recalls["test_r1_text_to_image"] == 1 / images
    for k in (5, 10):
        assert recalls[f"test_r{k}_text_to_image"] == min(k, images) / images
        assert recalls[f"test_r{k}_image_to_text"] == math.ceil(k / captions) / images


def test_recalls_with_ties_rank_as_a_stable_descending_argsort():
    generator = torch.Generator().manual_seed(3)
    outputs = torch.randint(-1, 2, (30, 6, 3), generator=generator).float()  # few values: many tied scores
    assert retrieval_recalls(RETRIEVAL, outputs) == pytest.approx(_stable_argsort_recalls(outputs, (1, 5, 10)))


# ---- Flickr30K: pairing by file name is the original's pairing by Karpathy imgid ---------------


def test_flickr30k_pairs_by_file_name_as_the_original_pairs_by_imgid(tmp_path):
    """The original reads image `imgid` of the Hugging Face copy (its rows: the annotation table's, in order)
    and the captions of Karpathy entry `imgid`; we open the entry's `filename`. Same pairs, both splits."""
    write_karpathy(tmp_path, "flickr30k", train_images=6, test_images=5)
    table = write_hf_flickr30k_table(tmp_path)
    hf_rows = datasets.load_dataset("csv", data_files=str(table), split="train")
    entries = json.loads((tmp_path / "flickr30k" / "dataset_flickr30k.json").read_text())["images"]
    ours = flickr30k.samples(tmp_path)
    for split in ("train", "test"):
        chosen = [e for e in entries if e["split"] == split and len(e["sentences"]) >= 5]
        theirs = [
            (hf_rows[e["imgid"]]["filename"], tuple(s["raw"] for s in entries[e["imgid"]]["sentences"][:5]))
            for e in chosen
        ]
        assert [(Path(s.image).name, s.texts) for s in ours[split]] == theirs
        assert all((tmp_path / "flickr30k" / "flickr30k-images" / name).is_file() for name, _ in theirs)
