"""Scoring a classifier on the real test split: AUC, balanced accuracy, bootstrap over subjects.

Every score takes ``weights`` ``(B, N)``: how often each test example counts in each of ``B``
bootstrap replicates (one row of ones: the plain score). Resampling *subjects* with
replacement gives every slice of a drawn subject its subject's count, so the intervals
reflect that slices of one subject are not independent (Yagis et al. 2021).

AUC is the Mann-Whitney statistic: the share of (positive, negative) pairs the scores order
correctly, ties counting one half, computed from ranks in O(N log N) (tested against the
pair count). Several classes: the mean of the one-vs-rest AUCs (macro average), as
scikit-learn's ``roc_auc_score(multi_class="ovr")``.
"""

from __future__ import annotations

import numpy as np

CHUNK = 256
"""Bootstrap replicates scored at once (memory: CHUNK x N floats per array)."""


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC ``(B,)`` of ``scores`` ``(N,)`` for ``positive`` ``(N,)`` bool labels, per weight row.

    ``weights`` is ``(B, N)``; NaN where a replicate has no positive or no negative weight.
    """
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # tie groups
    out = []
    for begin in range(0, len(weights), CHUNK):
        w = np.asarray(weights[begin : begin + CHUNK], np.float64)[:, order]
        pos, neg = w * positive[order], w * ~positive[order]
        below = np.concatenate([np.zeros((len(w), 1)), np.cumsum(neg, axis=1)], axis=1)[:, starts]
        tied = np.add.reduceat(neg, starts, axis=1)
        pos_group = np.add.reduceat(pos, starts, axis=1)
        numerator = (pos_group * (below + 0.5 * tied)).sum(axis=1)
        pairs = pos.sum(axis=1) * neg.sum(axis=1)
        out.append(np.where(pairs > 0, numerator / np.where(pairs > 0, pairs, 1.0), np.nan))
    return np.concatenate(out) if out else np.zeros(0)


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Plain binary AUC of ``scores`` ``(N,)`` against ``positive`` ``(N,)`` bool."""
    return float(weighted_auc(scores, positive, np.ones((1, len(scores))))[0])


def multiclass_auc(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC ``(B,)`` of class probabilities ``(N, K)`` for int ``labels`` ``(N,)``.

    Two classes: the AUC of class 1's probability. More: the mean one-vs-rest AUC.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.shape[1] == 2:
        return weighted_auc(probs[:, 1], labels == 1, weights)
    per_class = [weighted_auc(probs[:, k], labels == k, weights) for k in range(probs.shape[1])]
    return np.mean(per_class, axis=0)


def balanced_accuracy(probs: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean per-class recall ``(B,)`` of the most probable class; NaN if a class is absent."""
    predicted = np.argmax(probs, axis=1)
    recalls = []
    for k in range(probs.shape[1]):
        members = (labels == k).astype(np.float64)
        total = weights @ members
        hits = weights @ (members * (predicted == k))
        recalls.append(np.where(total > 0, hits / np.where(total > 0, total, 1.0), np.nan))
    return np.mean(recalls, axis=0)


def subject_bootstrap(subjects: int, replicates: int, seed: int) -> np.ndarray:
    """Subject counts ``(1 + replicates, subjects)``; row 0 is all ones (the plain estimate).

    The other rows are draws of ``subjects`` subjects with replacement.
    """
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(subjects, np.full(subjects, 1.0 / subjects), size=replicates)
    return np.concatenate([np.ones((1, subjects)), draws]).astype(np.float64)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``values`` (NaN replicates left out)."""
    tail = 100.0 * (1.0 - level) / 2.0
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)
