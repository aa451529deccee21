"""ROC-AUC (rank-based, ties averaged) against its pairwise definition."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.experiments.consumers.metrics import average_ranks, roc_auc


def _pairwise_auc(labels, scores) -> float:
    """P(score of a positive > score of a negative) + 0.5 P(tie), over all pairs."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_hand_computed_values():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)  # sklearn's documented example
    assert roc_auc([1, 0, 1, 0], [3, 2, 1, 0]) == pytest.approx(0.75)
    assert roc_auc([0, 1], [5.0, 5.0]) == pytest.approx(0.5)  # a tie counts half
    assert roc_auc([1, 1, 0, 0], [1, 1, 0, 0]) == 1.0 and roc_auc([0, 0, 1, 1], [1, 1, 0, 0]) == 0.0


def test_matches_the_pairwise_definition_with_many_ties():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        labels = rng.integers(0, 2, n)
        if labels.min() == labels.max():
            labels[0] = 1 - labels[0]
        scores = rng.integers(0, 5, n).astype(float)  # heavy ties
        assert roc_auc(labels, scores) == pytest.approx(_pairwise_auc(labels, scores), abs=1e-12)


def test_average_ranks_share_tied_positions():
    np.testing.assert_array_equal(average_ranks(np.array([10, 20, 10, 30, 20, 10])), [2, 4.5, 2, 6, 4.5, 2])


def test_one_class_gives_nan_and_bad_input_is_refused():
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.3, 0.1]))
    with pytest.raises(ValueError, match="shape"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0, 1], [0.1, float("nan")])
