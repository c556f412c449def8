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
        return loss_sum, int((outputs.detach().argmax(dim=1) == labels).sum())
    image, captions = _scored(objective, outputs)
    targets = torch.arange(len(image), device=outputs.device)
    loss_sum = outputs.new_zeros(())
    for j in range(captions.shape[1]):
        similarity = image @ captions[:, j].T
        per_direction = nn.functional.cross_entropy(similarity, targets, reduction="sum")
        loss_sum = loss_sum + (per_direction + nn.functional.cross_entropy(similarity.T, targets, reduction="sum")) / 2
    first = (image @ captions[:, 0].T).detach()
    return loss_sum, int((first.argmax(dim=1) == targets).sum())


def is_retrieval(objective: str) -> bool:
    return objective in (RETRIEVAL, RETRIEVAL_COSINE)


def _scored(objective: str, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [B, D], captions [B, k, D]) whose dot products are the pair scores of `objective`."""
    embeddings = outputs.float()
    if objective == RETRIEVAL_COSINE:
        embeddings = nn.functional.normalize(embeddings, dim=-1) / TEMPERATURE**0.5
    return embeddings[:, 0], embeddings[:, 1:]


def retrieval_recalls(objective: str, outputs: torch.Tensor, ks: tuple[int, ...] = RECALL_AT) -> dict[str, float]:
    """R@k image->text and text->image over all N images and N*k captions of `outputs` [N, 1 + k, D].

    Image->text: an image counts as found at k when any of its own captions ranks in the top k
    of all captions. Text->image: a caption counts when its image ranks in the top k images.
    """
    image, captions = _scored(objective, outputs)
    num_images, per_image = captions.shape[:2]
    similarity = image @ captions.reshape(num_images * per_image, -1).T  # [images, captions]
    owner = torch.arange(num_images).repeat_interleave(per_image)
    own = owner.unsqueeze(0) == torch.arange(num_images).unsqueeze(1)
    best_own = similarity.masked_fill(~own, float("-inf")).max(dim=1, keepdim=True).values
    image_rank = (similarity > best_own).sum(dim=1)  # captions ranked above the image's best own caption
    caption_score = similarity[owner, torch.arange(len(owner))]
    caption_rank = (similarity > caption_score.unsqueeze(0)).sum(dim=0)  # images ranked above the caption's own
    recalls = {}
    for k in ks:
        recalls[f"test_r{k}_image_to_text"] = float((image_rank < k).float().mean())
        recalls[f"test_r{k}_text_to_image"] = float((caption_rank < k).float().mean())
    return recalls
