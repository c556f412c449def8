"""Loss and metrics of the task objectives, shared by MPSL clients, the baselines and evaluation.

Classification: the server returns logits [B, C]; loss cross-entropy; metric accuracy.

Retrieval (Flickr30K, MS-COCO): the server returns embeddings [B, 1 + k, D], the image's
first, then one per caption. For each caption j the loss is
(CE(img . txt_j^T) + CE(txt_j . img^T)) / 2 over the in-batch pairs, summed over the captions;
the test metric is R@1/5/10 in both directions over the whole test split. How pairs are scored:

- `RETRIEVAL` (the original's, the default): raw dot products of the (post-LN) encoder outputs.
- `RETRIEVAL_COSINE` (`retrieval-scoring='cosine'`): L2-normalised embeddings, divided by a fixed
  temperature t = 0.07 (CLIP's initial value). Raw dot products of encoder outputs are in the
  hundreds and saturate the softmax; this keeps the loss informative.
"""

from __future__ import annotations

import torch
from torch import nn

from tasks.spec import RETRIEVAL

RETRIEVAL_COSINE = "retrieval-cosine"

TEMPERATURE = 0.07
RECALL_AT = (1, 5, 10)


def loss_sum_and_correct(objective: str, outputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The summed per-sample loss (differentiable) and the count of correct top-1 predictions.

    For retrieval, "correct" counts images whose nearest caption in the batch (first captions)
    is their own: a training signal, not the test metric.
    """
    if not is_retrieval(objective):
        loss_sum = nn.functional.cross_entropy(outputs, labels, reduction="sum")
        return loss_sum, int(correct_predictions(outputs, labels).sum())
    image, captions = _scored(objective, outputs)
    targets = torch.arange(len(image), device=outputs.device)
    loss_sum = outputs.new_zeros(())
    for j in range(captions.shape[1]):
        similarity = image @ captions[:, j].T
        per_direction = nn.functional.cross_entropy(similarity, targets, reduction="sum")
        loss_sum = loss_sum + (per_direction + nn.functional.cross_entropy(similarity.T, targets, reduction="sum")) / 2
    first = (image @ captions[:, 0].T).detach()
    return loss_sum, int((first.argmax(dim=1) == targets).sum())


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample, whether the top-1 class is the label (bool [B]): what both accuracies count, the exact
    share and the original's mean of per-batch shares."""
    return logits.detach().argmax(dim=1) == labels


def is_retrieval(objective: str) -> bool:
    return objective in (RETRIEVAL, RETRIEVAL_COSINE)


def _scored(objective: str, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B, D], captions [B, k, D]) whose dot products are the pair scores of `objective`."""
    embeddings = outputs.float()
    if objective == RETRIEVAL_COSINE:
        embeddings = nn.functional.normalize(embeddings, dim=-1) / TEMPERATURE**0.5
    return embeddings[:, 0], embeddings[:, 1:]


def _stable_rank(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per row r, the 0-based place of `scores[r, target[r]]` when the row is sorted by descending score with
    ties kept in index order (a stable descending argsort, as the original ranks with `torch.argsort`).

    A tie never counts for the true pair wholesale: collapsed (all-equal) scores rank it by its index,
    so R@1 comes out at chance, 1/N, rather than 1.
    """
    rows = torch.arange(len(scores))
    own = scores[rows, target].unsqueeze(1)
    earlier = torch.arange(scores.shape[1]).unsqueeze(0) < target.unsqueeze(1)
    return ((scores > own) | ((scores == own) & earlier)).sum(dim=1)


def retrieval_recalls(objective: str, outputs: torch.Tensor, ks: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """R@k image->text and text->image over all N images and N*k captions of `outputs` [N, 1 + k, D], ranked as
    `_stable_rank` does.

    Image->text: an image counts as found at k when any of its own captions ranks in the top k
    of all captions. Text->image: a caption counts when its image ranks in the top k images.
    """
    image, captions = _scored(objective, outputs)
    num_images, per_image = captions.shape[:2]
    similarity = image @ captions.reshape(num_images * per_image, -1).T  # [images, captions]
    first_caption = torch.arange(num_images) * per_image
    image_rank = torch.stack([_stable_rank(similarity, first_caption + j) for j in range(per_image)]).amin(dim=0)
    caption_rank = _stable_rank(similarity.T, torch.arange(num_images).repeat_interleave(per_image))
    recalls = {}
    for k in ks:
        recalls[f"test_r{k}_image_to_text"] = float((image_rank < k).float().mean())
        recalls[f"test_r{k}_text_to_image"] = float((caption_rank < k).float().mean())
    return recalls
