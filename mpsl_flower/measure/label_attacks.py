"""Label-inference attacks an honest-but-curious split-learning server can run on the gradients it receives.

What the server sees. In split learning each client returns the gradient of its loss with respect to the
tensor the server sent it, and the loss is a cross-entropy over the client's labels, which the server is
never given:

* Paper mode (the head is on the server, the client computes the loss): the server sends logits ``z`` [N, C]
  and receives ``dL/dz = (softmax(z) - onehot(y)) / total_batch``. Every entry of a row is ``>= 0`` except
  the true class's, ``p_y - 1 <= 0``: the label is written in the gradient's sign pattern.
* U-shaped mode (the head ``W`` [C, D] is on the client): the server sends features ``h`` [N, D] and only sees
  ``dL/dh = (softmax(z) - onehot(y)) @ W / total_batch``. The sign pattern is mixed by ``W``, but each row is
  ``p @ W - W_y`` (scaled), dominated by ``-W_y`` whenever ``p`` is spread out, so rows of one class point
  in about the same direction and rows of different classes do not.

The attacks and what each one assumes:

* `direct_attack` (dL/dlogits only): the label is the index of the row's smallest entry. Exact on every row
  with a negative entry, and on rows where float32 rounds ``p_y`` to 1 (entry 0) while the other entries stay
  positive. It fails only when float32 also underflows other classes' probabilities to 0 (logit gaps of about
  100): their zeros tie with the label's, and the gradient alone cannot tell them apart. (The server, which
  sent the logits, could break such ties with the row's largest logit; this module uses the gradient only.)
* `norm_attack` (Li et al. 2022, "Label Leakage and Protection in Two-party Split Learning", ICLR): the norm
  of a row grows with ``1 - p_y``. Once the model has learned the class prior (a few steps suffice), a rare
  class gets a low ``p_y`` and hence large gradients, a frequent one small gradients, so norms separate the
  classes by frequency. That is Li et al.'s binary setting with rare positives, where it is near perfect. It
  carries no label information while the predictions are independent of the labels (random logits, no
  prior learned), and with C classes of similar frequency the norms overlap: it is a binary, imbalanced
  attack; for C classes we cluster the 1-D norms into ``min(C, N)`` groups and let matching score it.
* `cosine_attack` (Li et al.'s direction attack): rows of the same class point the same way. In the binary
  case every dL/dh row is ``(p_1 - y_1) (W_1 - W_0)``, so the sign of the cosine with any positive row is the
  label. For C classes we cluster the L2-normalised rows with k-means (on unit vectors squared Euclidean
  distance is ``2 - 2 cos``, so k-means groups by cosine similarity).

The clustering attacks return cluster ids, not labels: the server learns which samples share a label, and
names the groups from side knowledge (one known sample per class, or the class prior). To score them
without assuming that knowledge, `matched_accuracy` maps clusters to labels by the best one-to-one matching
(Hungarian algorithm on the contingency table), which is an upper bound on what naming can achieve from the
partition alone. The bar any attack must clear is `majority_rate`, the accuracy of always guessing the most
frequent label, which needs no gradient at all: on imbalanced data a high raw accuracy can be worthless.

Only numpy, scipy and scikit-learn are used, so the module can score gradients recorded anywhere.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans

from mpsl_flower.runs import record

KMEANS_N_INIT = 10  # fixed (not "auto") so that a seed alone decides the result
NORMALISE_EPS = 1e-12  # floor on row norms in the cosine attack: a zero row stays zero instead of NaN


def _check_grads(grads: np.ndarray) -> np.ndarray:
    grads = np.asarray(grads)
    if grads.ndim != 2:
        raise ValueError(
            f"grads must be 2-D [N, C] or [N, D] (one row per sample), got shape {grads.shape}; "
            "flatten each sample's gradient to one row, e.g. grads.reshape(len(grads), -1)"
        )
    if grads.shape[0] == 0:
        raise ValueError("grads has no rows (N == 0): pass the gradients of at least one sample")
    if not np.all(np.isfinite(grads)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(grads), axis=1)))
        raise ValueError(
            f"grads has non-finite entries (NaN or inf) in {bad} of {grads.shape[0]} rows; "
            "drop those rows or fix the overflow that produced them before attacking"
        )
    return grads.astype(np.float64, copy=False)


def _check_labels(labels: np.ndarray, n: int, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one id per sample), got shape {labels.shape}")
    if len(labels) != n:
        raise ValueError(
            f"{name} has {len(labels)} entries but there are {n} samples; "
            "pass exactly one label per gradient row, in the same order"
        )
    return labels


def _check_num_classes(num_classes: int) -> int:
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    return int(num_classes)


def _kmeans_ids(points: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Cluster ids from k-means with k = min(num_classes, N, distinct points).

    Capping k by the number of distinct points keeps k-means from placing empty or duplicate centres
    (and warning) when, say, every norm is equal; the cap cannot lose information, since identical
    points must share a cluster anyway.
    """
    distinct = len(np.unique(points, axis=0))
    k = min(num_classes, len(points), distinct)
    if k == 1:
        return np.zeros(len(points), dtype=np.int64)
    kmeans = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed)
    return kmeans.fit_predict(points).astype(np.int64)


def direct_attack(output_grads: np.ndarray) -> np.ndarray:
    """Label per row [N, C] of dL/dlogits: the index of the row's smallest (only negative) entry.

    ``softmax(z) - onehot(y)`` is negative only at ``y``; when float32 rounds ``p_y`` to 1 that entry is 0
    and the others are tiny but positive, so the minimum is still ``y``. Only when other probabilities
    underflow to exactly 0 too (logit gaps of ~100) do zeros tie, and argmin then returns the first of them.
    Returns int64 labels [N].
    """
    grads = _check_grads(output_grads)
    return np.argmin(grads, axis=1).astype(np.int64)


def norm_attack(grads: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Li et al. 2022 (ICLR, "Label Leakage and Protection in Two-party Split Learning") norm scoring,
    generalised to C classes: cluster the rows' L2 norms (1-D k-means, k = min(num_classes, N)); returns
    cluster ids [N].

    Works when the gradient norm depends on the label, i.e. once the model predicts the class prior:
    rare classes then have large norms. It is an attack for the binary imbalanced case; with random
    (label-independent) predictions, or several classes of similar frequency, the norms do not separate.
    """
    grads = _check_grads(grads)
    num_classes = _check_num_classes(num_classes)
    norms = np.linalg.norm(grads, axis=1).reshape(-1, 1)
    return _kmeans_ids(norms, num_classes, seed)


def cosine_attack(grads: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """Li et al.'s direction (cosine-similarity) attack as clustering: k-means on the L2-normalised rows
    (so distance is 1 - cosine), k = min(num_classes, N); returns cluster ids [N].

    Rows are divided by ``max(norm, eps)``, so an all-zero row (a saturated sample) stays at the origin
    rather than turning into NaN; it then joins whichever cluster is nearest.
    """
    grads = _check_grads(grads)
    num_classes = _check_num_classes(num_classes)
    norms = np.linalg.norm(grads, axis=1, keepdims=True)
    unit = grads / np.maximum(norms, NORMALISE_EPS)
    return _kmeans_ids(unit, num_classes, seed)


def matched_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy after the best one-to-one matching of predicted ids (clusters) to labels
    (scipy.optimize.linear_sum_assignment on the contingency table; rectangular tables allowed).

    Cluster ids are arbitrary names, so only the partition is scored. With more clusters than labels the
    unmatched clusters count as wrong; with fewer, the unmatched labels are never predicted. Either way a
    single cluster scores exactly `majority_rate`, the floor an attack must beat.
    """
    predicted = np.asarray(predicted)
    if predicted.ndim != 1:
        raise ValueError(f"predicted must be 1-D (one id per sample), got shape {predicted.shape}")
    if len(predicted) == 0:
        raise ValueError("predicted is empty (N == 0): pass at least one sample")
    labels = _check_labels(labels, len(predicted))
    pred_ids, pred_index = np.unique(predicted, return_inverse=True)
    label_ids, label_index = np.unique(labels, return_inverse=True)
    table = np.zeros((len(pred_ids), len(label_ids)), dtype=np.int64)
    np.add.at(table, (pred_index, label_index), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(predicted))


def majority_rate(labels: np.ndarray) -> float:
    """The accuracy of always guessing the most frequent label: what an attack must beat.

    On imbalanced data (Li et al.'s 10% positives) a raw accuracy of 0.9 is therefore no leak at all.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (one id per sample), got shape {labels.shape}")
    if len(labels) == 0:
        raise ValueError("labels is empty (N == 0): pass at least one label")
    _, counts = np.unique(labels, return_counts=True)
    return float(counts.max() / len(labels))


def attack_report(grads: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, direct: bool) -> dict[str, float]:
    """Every attack that applies, scored, under the epoch record's `LABEL_ATTACK_*` keys: the samples (int N),
    the majority rate, the direct attack's accuracy (only when direct=True, i.e. grads are dL/dlogits with C
    columns; plain accuracy, no matching), and the norm and cosine attacks' matched accuracies.

    The labels are used only to score: no attack sees them. Compare every accuracy with
    "label_attack_majority"; the clustering scores are upper bounds (best naming of the clusters).
    """
    grads = _check_grads(grads)
    labels = _check_labels(labels, grads.shape[0])
    num_classes = _check_num_classes(num_classes)
    if direct and grads.shape[1] != num_classes:
        raise ValueError(
            f"direct=True needs dL/dlogits with one column per class ({num_classes}), got {grads.shape[1]} "
            "columns; pass direct=False for gradients w.r.t. features (U-shaped mode), or the right num_classes"
        )
    report: dict[str, float] = {
        record.LABEL_ATTACK_SAMPLES: int(grads.shape[0]),
        record.LABEL_ATTACK_MAJORITY: majority_rate(labels),
    }
    if direct:
        report[record.LABEL_ATTACK_DIRECT] = float(np.mean(direct_attack(grads) == labels))
    report[record.LABEL_ATTACK_NORM] = matched_accuracy(norm_attack(grads, num_classes, seed), labels)
    report[record.LABEL_ATTACK_COSINE] = matched_accuracy(cosine_attack(grads, num_classes, seed), labels)
    return report
