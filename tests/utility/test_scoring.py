"""AUC, balanced accuracy and the subject bootstrap against brute force and scikit-learn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from oasis_vqvae import scoring


def pair_count_auc(scores, positive, weights):
    """Brute force: weighted share of (positive, negative) pairs ordered right, ties 1/2."""
    good = total = 0.0
    for i, j in itertools.product(range(len(scores)), repeat=2):
        if positive[i] and not positive[j]:
            pair = weights[i] * weights[j]
            total += pair
            good += pair * (1.0 if scores[i] > scores[j] else 0.5 if scores[i] == scores[j] else 0)
    return good / total


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_the_pair_count_with_ties_and_weights(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 40) / 5.0  # many ties
    positive = rng.random(40) < 0.4
    weights = rng.integers(0, 4, (3, 40)).astype(float)
    got = scoring.weighted_auc(scores, positive, weights)
    want = [pair_count_auc(scores, positive, w) for w in weights]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert scoring.auc(scores, positive) == pytest.approx(roc_auc_score(positive, scores))


def test_weights_count_repeated_examples():
    rng = np.random.default_rng(1)
    scores, positive = rng.random(12), np.arange(12) % 3 == 0
    counts = rng.integers(0, 3, 12)
    repeated = scoring.auc(np.repeat(scores, counts), np.repeat(positive, counts))
    assert scoring.weighted_auc(scores, positive, counts[None].astype(float))[0] == pytest.approx(
        repeated
    )


def test_a_replicate_without_one_class_is_nan_and_left_out_of_intervals():
    weights = np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 1.0]])  # row 1 drops the only positive
    got = scoring.weighted_auc(np.array([0.9, 0.1, 0.2]), np.array([True, False, False]), weights)
    assert got[0] == 1.0 and np.isnan(got[1])
    assert scoring.interval(np.array([np.nan, 0.5, 0.7])) == pytest.approx((0.505, 0.695))


def test_multiclass_auc_and_balanced_accuracy_match_scikit_learn():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 60)
    probs = rng.dirichlet([1, 1, 1], 60) + np.eye(3)[labels] * 0.3
    probs /= probs.sum(axis=1, keepdims=True)
    ones = np.ones((1, 60))
    auc = scoring.multiclass_auc(probs, labels, ones)[0]
    assert auc == pytest.approx(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))
    accuracy = scoring.balanced_accuracy(probs, labels, ones)[0]
    assert accuracy == pytest.approx(balanced_accuracy_score(labels, probs.argmax(axis=1)))
    binary = probs[:, :2] / probs[:, :2].sum(axis=1, keepdims=True)
    assert scoring.multiclass_auc(binary, labels % 2, ones)[0] == pytest.approx(
        roc_auc_score(labels % 2, binary[:, 1])
    )


def test_subject_bootstrap_rows_draw_every_subject_count_times():
    weights = scoring.subject_bootstrap(7, 50, seed=3)
    assert weights.shape == (51, 7)
    assert (weights[0] == 1).all() and (weights.sum(axis=1) == 7).all()
    np.testing.assert_array_equal(weights, scoring.subject_bootstrap(7, 50, seed=3))
