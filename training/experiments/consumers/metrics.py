"""ROC-AUC, the metric of every unintended task (the paper uses sklearn's ``roc_auc_score``).

Computed from ranks (the Mann-Whitney U statistic) with tied scores given their average rank, which
is exactly ``roc_auc_score`` for binary labels; numpy only, so the project needs no scikit-learn.
"""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (scipy's ``rankdata('average')``)."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # boundaries of runs of equal values in sorted order
    starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
    ends = np.concatenate([starts[1:], [len(values)]])
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for 0/1 ``labels``; NaN when only one class occurs.

    NaN rather than an exception: a task can legitimately lack one class at some version of a small
    dataset, and the report shows that instead of aborting a long run.
    """
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = average_ranks(scores)[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))
