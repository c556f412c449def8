"""Loss and metrics of the objectives, checked on cases worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.objectives import RETRIEVAL_COSINE, TEMPERATURE, loss_sum_and_correct, retrieval_recalls
from tasks.spec import CLASSIFICATION, RETRIEVAL


def _outputs(images, captions):
    """[N, 1 + k, D] from image rows and per-image caption lists."""
    return torch.tensor([[image, *caps] for image, caps in zip(images, captions)], dtype=torch.float32)


def test_recalls_match_ranks_counted_by_hand():
    # Similarities (all vectors unit length):   c00  c01  c10  c11  c20  c21
    #                                    img0:   1    0    0   .6   .8    0
    #                                    img1:   0    1    0   .8    0   .6
    #                                    img2:   0    0    1    0   .6   .8
    images = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    captions = [[[1, 0, 0], [0, 1, 0]], [[0, 0, 1], [0.6, 0.8, 0]], [[0.8, 0, 0.6], [0, 0.6, 0.8]]]
    recalls = retrieval_recalls(RETRIEVAL, _outputs(images, captions), ks=(1, 2, 5))
    # image->text: img0's best own caption ranks 1st; img1's (0.8) and img2's (0.8) each have one caption above.
    assert recalls["test_r1_image_to_text"] == pytest.approx(1 / 3)
    assert recalls["test_r2_image_to_text"] == 1.0
    # text->image: c00, c11, c21 rank their own image first; c01, c10, c20 have one image above.
    assert recalls["test_r1_text_to_image"] == pytest.approx(3 / 6)
    # c10 ties img0 at 0, and ties rank in index order (a stable argsort): img0 is above img1 for it
    assert recalls["test_r2_text_to_image"] == pytest.approx(5 / 6) and recalls["test_r5_text_to_image"] == 1.0


def _minus_log_softmax(row, target, scale=1.0):
    scaled = [value / scale for value in row]
    return -(scaled[target] - math.log(sum(math.exp(v) for v in scaled)))


def test_retrieval_loss_is_the_symmetric_in_batch_cross_entropy_of_raw_dot_products_as_the_original():
    # img0 = (2, 0), img1 = (0, 1); captions: c0 = (1, 0) and (0, 3) for img0, c1 = (1, 1) and (0.5, 0) for img1.
    outputs = _outputs([[2, 0], [0, 1]], [[[1, 0], [0, 3]], [[1, 1], [0.5, 0]]]).requires_grad_(True)
    loss_sum, correct = loss_sum_and_correct(RETRIEVAL, outputs, torch.tensor([0, 1]))
    first = _minus_log_softmax([2, 2], 0) + _minus_log_softmax([0, 1], 1)  # image -> caption 0
    first += _minus_log_softmax([2, 0], 0) + _minus_log_softmax([2, 1], 1)  # caption 0 -> image
    second = _minus_log_softmax([0, 1], 0) + _minus_log_softmax([3, 0], 1)
    second += _minus_log_softmax([0, 3], 0) + _minus_log_softmax([1, 0], 1)
    assert float(loss_sum.detach()) == pytest.approx((first + second) / 2, rel=1e-5)
    assert correct == 2  # first captions: img0 ties (2, 2) and argmax takes its own; img1 -> its own (1 > 0)
    # Image->text over all four captions: img0 scores (2, 0, 2, 1), none above its best own (2): found at 1;
    # img1 scores (0, 3, 1, 0), img0's caption (3) above its best own (1): not found at 1. Unnormalised,
    # the long caption (0, 3) decides: cosine scoring would rank img1's captions differently.
    assert retrieval_recalls(RETRIEVAL, outputs.detach(), ks=(1,))["test_r1_image_to_text"] == 0.5


def test_cosine_scoring_normalises_and_divides_by_the_temperature():
    s = 1 / math.sqrt(2)
    outputs = _outputs([[2, 0], [0, 1]], [[[3, 0]], [[s, s]]]).requires_grad_(True)
    loss_sum, correct = loss_sum_and_correct(RETRIEVAL_COSINE, outputs, torch.tensor([0, 1]))

    def minus_log_softmax(row, target):
        return _minus_log_softmax(row, target, TEMPERATURE)

    image_to_text = minus_log_softmax([1, s], 0) + minus_log_softmax([0, s], 1)
    text_to_image = minus_log_softmax([1, 0], 0) + minus_log_softmax([s, s], 1)
    assert float(loss_sum.detach()) == pytest.approx((image_to_text + text_to_image) / 2, rel=1e-5)
    assert correct == 2  # img0 -> cap0 (1 > 0.71), img1 -> cap1 (0.71 > 0)
    loss_sum.backward()
    assert outputs.grad is not None and torch.isfinite(outputs.grad).all()


def test_classification_loss_is_summed_cross_entropy_and_counts_argmax_hits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    loss_sum, correct = loss_sum_and_correct(CLASSIFICATION, logits, torch.tensor([0, 1, 1]))
    expected = sum(-torch.log_softmax(row, 0)[y] for row, y in zip(logits, [0, 1, 1]))
    assert float(loss_sum) == pytest.approx(float(expected)) and correct == 2
