"""Test-set evaluation: aggregated client tokenizers feeding the server model."""

from __future__ import annotations

import torch

from mpsl_flower.config import RunConfig
from mpsl_flower.models.server_model import ServerModel
from mpsl_flower.models.tokenizers import ClientModel
from mpsl_flower.runs.record import TEST_ACCURACY, TEST_ACCURACY_BATCH_MEAN, TEST_LOSS
from tasks.augment import input_generator
from tasks.data import SplitData
from tasks.objectives import correct_predictions, is_retrieval, loss_sum_and_correct, retrieval_recalls


def evaluation_draws(config: RunConfig, epoch: int) -> tuple | None:
    """The key of the test inputs' random choices after `epoch` (1-based), or None for the
    deterministic inputs (`test-time-augmentation=false`). Every method and every client model
    evaluated after one epoch sees the same draws."""
    return (config.seed, "test", epoch) if config.test_time_augmentation else None


@torch.no_grad()
def evaluate(
    client_model: ClientModel,
    server_model: ServerModel,
    split: SplitData,
    batch_size: int,
    draws: tuple | None = None,
    accuracy_batch_size: int | None = None,
) -> dict[str, float]:
    """Mean loss and accuracy of the split model on `split`; retrieval adds R@1/5/10 both ways.

    Classification adds the original's accuracy, `TEST_ACCURACY_BATCH_MEAN` (`batch_mean_accuracy`) over
    batches of `accuracy_batch_size`: the original's test loader batch, its `--batch_size`, our `batch-size`
    (None: `batch_size`). It is computed from the same predictions, so `batch_size` only sets memory use.

    A task that draws its inputs at each step (`tasks.augment`) draws the test inputs from the
    key `draws` (`evaluation_draws`); None reads the deterministic ones.
    For retrieval the loss is the in-batch contrastive loss of `batch_size` batches, and
    `test_accuracy` is the mean of R@1 image->text and text->image over the whole split.
    """
    device = next(server_model.parameters()).device
    client_model.eval()
    server_model.eval()
    loss_sum, hits, outputs = 0.0, [], []
    for start in range(0, len(split), batch_size):
        rows = range(start, min(start + batch_size, len(split)))
        batch = split.select(rows, None if draws is None else input_generator(*draws, start))
        streams = {name: tokens.to(device) for name, tokens in client_model(batch.inputs).items()}
        batch_outputs = client_model.head(server_model(streams).cpu())  # the identity unless the head is here
        batch_loss, _ = loss_sum_and_correct(server_model.objective, batch_outputs, batch.labels)
        loss_sum += float(batch_loss)
        if is_retrieval(server_model.objective):
            outputs.append(batch_outputs)
        else:
            hits.append(correct_predictions(batch_outputs, batch.labels))
    metrics = {TEST_LOSS: loss_sum / len(split)}
    if not is_retrieval(server_model.objective):
        hits = torch.cat(hits)
        metrics[TEST_ACCURACY] = int(hits.sum()) / len(hits)
        metrics[TEST_ACCURACY_BATCH_MEAN] = batch_mean_accuracy(hits, accuracy_batch_size or batch_size)
    else:
        recalls = retrieval_recalls(server_model.objective, torch.cat(outputs))
        metrics.update(recalls)
        metrics[TEST_ACCURACY] = (recalls["test_r1_image_to_text"] + recalls["test_r1_text_to_image"]) / 2
    return metrics


def batch_mean_accuracy(hits: torch.Tensor, batch_size: int) -> float:
    """The original's test accuracy: the mean over consecutive `batch_size` batches (its unshuffled test
    loader, `drop_last=False`) of each batch's share of hits, so the last, partial batch weighs as much as
    a full one. Differs from the per-sample share only when `len(hits)` is not a multiple of `batch_size`."""
    shares = [int(chunk.sum()) / len(chunk) for chunk in hits.split(batch_size)]
    return sum(shares) / len(shares)
