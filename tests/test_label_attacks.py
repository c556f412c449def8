"""Label-inference attacks on real cross-entropy gradients (torch autograd), scored against the true labels.

Every gradient here is what a client would send: ``cross_entropy(..., reduction="sum") / total`` backpropagated
to the logits (paper mode) or, through a real ``nn.Linear`` head, to the features (U-shaped mode). Labels come
from non-uniform distributions, so the majority rate is a real bar to clear.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mpsl_flower.measure.label_attacks import (
    attack_report,
    cosine_attack,
    direct_attack,
    majority_rate,
    matched_accuracy,
    norm_attack,
)

N = 500
C = 10
D = 64
PRIOR_10 = torch.tensor([0.3, 0.2, 0.12, 0.1, 0.08, 0.06, 0.05, 0.04, 0.03, 0.02])  # majority rate about 0.3
PRIOR_BINARY = torch.tensor([0.9, 0.1])  # Li et al.'s setting: positives rare


def _labels(prior: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.multinomial(prior, n, replacement=True, generator=generator)


def _logit_grads(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """dL/dlogits of the summed cross-entropy over the total batch, as the client returns it."""
    logits = logits.detach().clone().requires_grad_(True)
    (F.cross_entropy(logits, labels, reduction="sum") / len(labels)).backward()
    return logits.grad.numpy()


def _head_grads(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(dL/dlogits, dL/dfeatures) through a real linear head: the paper's and the U-shaped mode's view."""
    features = features.detach().clone().requires_grad_(True)
    logits = head(features)
    logits.retain_grad()
    (F.cross_entropy(logits, labels, reduction="sum") / len(labels)).backward()
    return logits.grad.numpy(), features.grad.numpy()


def _head_fitting_the_prior(labels: torch.Tensor, num_classes: int, steps: int, seed: int):
    """A head trained for a few SGD steps on label-independent noise features: all it can learn is the class
    prior, which is what any model learns first. Returns (head, features)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed + 1000)
    head = torch.nn.Linear(16, num_classes)
    features = torch.randn(len(labels), 16, generator=generator)
    optimiser = torch.optim.SGD(head.parameters(), lr=0.5)
    for _ in range(steps):
        optimiser.zero_grad()
        F.cross_entropy(head(features), labels).backward()
        optimiser.step()
    return head, features


# --- direct attack -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_direct_attack_recovers_every_label_from_random_logits(scale):
    generator = torch.Generator().manual_seed(0)
    labels = _labels(PRIOR_10, N, generator)
    grads = _logit_grads(torch.randn(N, C, generator=generator) * scale, labels)
    assert (direct_attack(grads) == labels.numpy()).all()


def test_direct_attack_recovers_labels_a_confident_correct_model_predicts():
    """A margin of 30 makes float32 round p_y to exactly 1 in almost every row (observed 99.6%), so the label's
    entry is 0, not negative, and the others are tiny positives (~1e-13 / total): still the row's minimum."""
    generator = torch.Generator().manual_seed(1)
    labels = _labels(PRIOR_10, N, generator)
    logits = torch.randn(N, C, generator=generator) * 3.0 + 30.0 * F.one_hot(labels, C)
    grads = _logit_grads(logits, labels)
    true_entries = grads[np.arange(N), labels.numpy()]
    assert (true_entries == 0).mean() > 0.9  # the case under test: no negative entry in (nearly) every row
    assert (direct_attack(grads) == labels.numpy()).all()


def test_direct_attack_is_exact_on_every_row_with_a_negative_entry():
    """The one limit: with logit gaps of ~100 float32 softmax saturates, some rows carry only zeros and
    cannot be read. Every row that still has a negative entry is read exactly."""
    generator = torch.Generator().manual_seed(2)
    labels = _labels(PRIOR_10, N, generator)
    grads = _logit_grads(torch.randn(N, C, generator=generator) * 50.0, labels)
    readable = (grads < 0).any(axis=1)
    predicted = direct_attack(grads)
    assert not readable.all()  # saturation does happen at this scale (observed: 25 rows of 500)
    assert (predicted[readable] == labels.numpy()[readable]).all()


# --- scoring -------------------------------------------------------------------------------------------------


def test_matched_accuracy_hand_example():
    # Best matching: cluster 0 -> 5 (2 right), cluster 1 -> 3 (2 right), cluster 2 unmatched to 3 (1 wrong).
    assert matched_accuracy(np.array([0, 0, 1, 1, 2]), np.array([5, 5, 3, 3, 3])) == pytest.approx(0.8)


def test_matched_accuracy_of_a_relabelling_is_one():
    labels = np.random.default_rng(0).integers(0, 7, size=200)
    permutation = np.array([3, 6, 0, 1, 5, 2, 4]) + 100
    assert matched_accuracy(permutation[labels], labels) == 1.0


def test_matched_accuracy_rectangular_tables():
    labels = np.array([0, 0, 0, 1, 1, 2])
    # More clusters than labels: 1 -> 0 (2 right), 2 -> 1 (2), 3 -> 2 (1); cluster 0 is left unmatched (1 wrong).
    assert matched_accuracy(np.array([0, 1, 1, 2, 2, 3]), labels) == pytest.approx(5 / 6)
    # Fewer clusters than labels: 7 -> 0 (3 right), 8 -> 1 (2); label 2 is never predicted.
    assert matched_accuracy(np.array([7, 7, 7, 8, 8, 8]), labels) == pytest.approx(5 / 6)
    # One cluster scores exactly the majority rate.
    assert matched_accuracy(np.zeros(6, dtype=int), labels) == pytest.approx(majority_rate(labels))


def test_majority_rate_hand_example():
    assert majority_rate(np.array([2, 2, 2, 1, 0, 2, 1, 0])) == pytest.approx(4 / 8)
    assert majority_rate(np.array([9])) == 1.0


# --- clustering attacks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cosine_attack_reads_labels_from_feature_gradients_of_a_random_head(seed):
    """U-shaped mode: the server only sees (p - onehot) @ W. With an untrained head p is spread out, each row
    is about -W_y, and rows of one class point the same way. Observed: 1.0 on each of 20 seeds (majority
    about 0.3); the bound leaves margin. (With features 5x larger, i.e. a more confident head, it fell to
    0.79-0.9: the p @ W term then varies more between samples.)"""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    labels = _labels(PRIOR_10, N, generator)
    _, feature_grads = _head_grads(torch.nn.Linear(D, C), torch.randn(N, D, generator=generator), labels)
    accuracy = matched_accuracy(cosine_attack(feature_grads, C, seed=0), labels.numpy())
    assert accuracy >= 0.95
    assert accuracy > majority_rate(labels.numpy()) + 0.5
    # Only directions count: rows rescaled by factors spanning four decades (as confidence or per-client batch
    # totals would rescale them) are read as well. Without normalisation k-means would cluster by magnitude.
    scales = 10.0 ** np.random.default_rng(seed).uniform(-2, 2, size=(N, 1))
    assert matched_accuracy(cosine_attack(feature_grads * scales, C, seed=0), labels.numpy()) >= 0.95


def test_cosine_attack_survives_zero_rows():
    generator = torch.Generator().manual_seed(3)
    labels = _labels(PRIOR_10, 50, generator)
    grads = _logit_grads(torch.randn(50, C, generator=generator), labels)
    grads[:3] = 0.0
    ids = cosine_attack(grads, C, seed=0)
    assert ids.shape == (50,)
    assert np.isfinite(ids).all() and ids.min() >= 0 and ids.max() < C


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_norm_attack_needs_a_learned_prior_in_the_binary_imbalanced_case(seed):
    """Li et al.'s setting, 10% positives. The norm of a row is sqrt(2) |p_1 - y_1|, the same for logits and
    (times |W_1 - W_0|) features. Untrained, p_1 is about 0.5 whatever the label, so the norms say nothing
    and two clusters of them score below the majority rate (observed 0.50-0.64 vs 0.88-0.93 on 30 seeds).
    After 5 SGD steps the head predicts the prior, p_1 is low for everyone, positives get norms near
    sqrt(2) and negatives near 0: observed 1.0 (0.996 at worst) on 30 seeds."""
    labels = _labels(PRIOR_BINARY, N, torch.Generator().manual_seed(seed))
    majority = majority_rate(labels.numpy())

    untrained_head, features = _head_fitting_the_prior(labels, 2, steps=0, seed=seed)
    logit_grads, _ = _head_grads(untrained_head, features, labels)
    assert matched_accuracy(norm_attack(logit_grads, 2, seed=0), labels.numpy()) < majority

    head, features = _head_fitting_the_prior(labels, 2, steps=5, seed=seed)
    logit_grads, feature_grads = _head_grads(head, features, labels)
    for grads in (logit_grads, feature_grads):
        accuracy = matched_accuracy(norm_attack(grads, 2, seed=0), labels.numpy())
        assert accuracy >= 0.98
        assert accuracy > majority + 0.05
    # Binary feature gradients are all collinear with W_1 - W_0, their sign is the label: the cosine attack
    # is exact here whether or not the head learned anything.
    assert matched_accuracy(cosine_attack(feature_grads, 2, seed=0), labels.numpy()) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_norm_attack_does_not_beat_the_majority_with_ten_classes(seed):
    """With ten classes the norm of dL/dlogits only says how confident the model is in the true class;
    classes of similar frequency share norms, and ten norm clusters scored 0.06-0.14 below the majority rate
    on 30 seeds, while the cosine attack on the same head's feature gradients scored 1.0."""
    labels = _labels(PRIOR_10, N, torch.Generator().manual_seed(seed))
    head, features = _head_fitting_the_prior(labels, C, steps=5, seed=seed)
    logit_grads, feature_grads = _head_grads(head, features, labels)
    majority = majority_rate(labels.numpy())
    assert matched_accuracy(norm_attack(logit_grads, C, seed=0), labels.numpy()) < majority
    assert matched_accuracy(cosine_attack(feature_grads, C, seed=0), labels.numpy()) >= 0.95


def test_clustering_attacks_cap_k_at_the_samples_and_distinct_rows():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # k-means warns when asked for more clusters than distinct points
        assert len(set(norm_attack(np.ones((4, 3)), 10, seed=0))) == 1
        assert len(set(cosine_attack(np.eye(3), 10, seed=0))) == 3
        assert norm_attack(np.array([[1.0]]), 10, seed=0).tolist() == [0]


# --- report --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def paper_and_u_shaped_grads():
    generator = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    labels = _labels(PRIOR_10, 200, generator)
    logit_grads, feature_grads = _head_grads(torch.nn.Linear(D, C), torch.randn(200, D, generator=generator), labels)
    return logit_grads, feature_grads, labels.numpy()


def test_attack_report_keys_and_values(paper_and_u_shaped_grads):
    logit_grads, feature_grads, labels = paper_and_u_shaped_grads
    paper = attack_report(logit_grads, labels, C, seed=0, direct=True)
    assert set(paper) == {
        "label_attack_samples",
        "label_attack_majority",
        "label_attack_direct",
        "label_attack_norm",
        "label_attack_cosine",
    }
    assert paper["label_attack_samples"] == 200 and isinstance(paper["label_attack_samples"], int)
    assert paper["label_attack_direct"] == 1.0
    assert paper["label_attack_majority"] == pytest.approx(majority_rate(labels))

    u_shaped = attack_report(feature_grads, labels, C, seed=0, direct=False)
    assert set(u_shaped) == set(paper) - {"label_attack_direct"}
    assert u_shaped["label_attack_cosine"] >= 0.95
    for report in (paper, u_shaped):
        assert all(0.0 <= value <= 1.0 for key, value in report.items() if key != "label_attack_samples")


def test_attack_report_is_deterministic_for_a_seed(paper_and_u_shaped_grads):
    logit_grads, feature_grads, labels = paper_and_u_shaped_grads
    for grads, direct in ((logit_grads, True), (feature_grads, False)):
        assert attack_report(grads, labels, C, 7, direct) == attack_report(grads, labels, C, 7, direct)
    # The attacks' cluster ids themselves, not just their scores.
    assert (cosine_attack(logit_grads, C, 7) == cosine_attack(logit_grads, C, 7)).all()
    assert (norm_attack(logit_grads, C, 7) == norm_attack(logit_grads, C, 7)).all()


@pytest.mark.parametrize(
    ("grads", "labels", "direct", "message"),
    [
        (np.zeros((4, 3, 2)), np.zeros(4, dtype=int), False, "must be 2-D"),
        (np.zeros(4), np.zeros(4, dtype=int), False, "must be 2-D"),
        (np.zeros((4, 3)), np.zeros(5, dtype=int), False, "one label per gradient row"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), False, "N == 0"),
        (np.array([[0.0, np.nan, 0.0], [0.0, 0.0, 0.0]]), np.zeros(2, dtype=int), False, "non-finite"),
        (np.array([[0.0, np.inf, 0.0], [0.0, 0.0, 0.0]]), np.zeros(2, dtype=int), True, "non-finite"),
        (np.zeros((4, 5)), np.zeros(4, dtype=int), True, "one column per class"),
    ],
)
def test_attack_report_rejects_bad_input(grads, labels, direct, message):
    with pytest.raises(ValueError, match=message):
        attack_report(grads, labels, 3, seed=0, direct=direct)


def test_attacks_reject_bad_grads_on_their_own():
    with pytest.raises(ValueError, match="non-finite"):
        direct_attack(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="must be 2-D"):
        norm_attack(np.zeros(3), 2, seed=0)
    with pytest.raises(ValueError, match="N == 0"):
        cosine_attack(np.zeros((0, 2)), 2, seed=0)
    with pytest.raises(ValueError, match="one label per"):
        matched_accuracy(np.zeros(3), np.zeros(2))
