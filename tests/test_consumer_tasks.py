"""The five unintended tasks on a hand-built timeline: every label asserted exactly.

41 interactions, one per second, so the interaction fraction of position i is i/40 and the slices
(0.5, 0.75, 1.0) give version 0 = positions 0..20 (+ new users' early window-0 interactions),
window 0 = 21..30, window 1 = 31..40. Users are indexed by first appearance (u1..u4 -> 0..3, u5 -> 4,
u7 -> 5, u6 -> 6, u8 -> 7), items A -> 0, B -> 1, C -> 2. Expected values were derived by hand;
the statistics behind them are in the comments.
"""

from __future__ import annotations

import numpy as np
import pytest

from training.data import build_dataset, split_version
from training.experiments.consumers.tasks import PROTOCOLS, TASK_NAMES, TaskLabels

A, B, C = 100, 200, 300
#: positions 0..20: user 1 + i % 4; even positions rate A, odd positions rate B
A_RATINGS = [2, 4, 2, 4, 2, 4, 2, 4, 2, 4, 3]  # 11 ratings: mean 3, unbiased std exactly 1.0 (biased 0.95)
B_RATINGS = [4, 4, 4, 4, 4, 4, 4, 4, 4, 5]  # 10 ratings: mean 4.1, std 0.32
WINDOW_0 = [  # (user, item, rating) at positions 21..30
    (1, C, 5),
    (5, C, 1),
    (2, C, 2),
    (5, B, 4),
    (7, C, 4),
    (1, A, 3),
    (2, B, 3),
    (1, B, 1),
    (2, A, 3),
    (1, C, 2),
]
WINDOW_1 = [  # positions 31..40
    (6, A, 5),
    (3, B, 2),
    (6, B, 2),
    (4, C, 4),
    (3, C, 5),
    (1, A, 2),
    (8, B, 3),
    (4, A, 1),
    (2, C, 3),
    (1, B, 4),
]


def _events():
    first = [(1 + i % 4, A, A_RATINGS[i // 2]) if i % 2 == 0 else (1 + i % 4, B, B_RATINGS[i // 2]) for i in range(21)]
    return first + WINDOW_0 + WINDOW_1


@pytest.fixture(scope="module")
def labels() -> TaskLabels:
    users, items, ratings = zip(*_events(), strict=True)
    dataset = build_dataset(
        "timeline",
        users=users,
        items=items,
        ratings=ratings,
        timestamps=np.arange(41, dtype=np.int64) + 1_000,
        source="hand-built",
    )
    splits = [split_version(dataset, 0.5, 0.75, version=0), split_version(dataset, 0.75, 1.0, version=1)]
    return TaskLabels(dataset, splits)


def test_the_timeline_is_split_as_the_paper_does(labels):
    s0, s1 = labels.splits
    # window 0: u5 has two interactions (first -> train, last -> val); u7 one (-> train)
    np.testing.assert_array_equal(s0.train_index, [*range(21), 22, 25])
    np.testing.assert_array_equal(s0.val_index, [21, 23, 24, 26, 27, 28, 29, 30])
    assert (s0.num_users, s0.num_items, s1.num_users) == (6, 3, 8)
    np.testing.assert_array_equal(s1.val_index, [32, 33, 34, 35, 36, 38, 39, 40])


def test_binary_edge_rating(labels):
    train = labels.train("binary-edge-rating")
    # positions 0..20 (A: 2,4,2,... ; B: 4,...,5), then 22 (rating 1) and 25 (rating 4)
    expected = [0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 1]
    np.testing.assert_array_equal(train.labels, expected)
    np.testing.assert_array_equal(train.users[21:], [4, 5])  # u5, u7
    v0 = labels.at("binary-edge-rating", 0)  # ratings 5, 2, 4, 3, 3, 1, 3, 2
    np.testing.assert_array_equal(v0.labels, [1, 0, 1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(v0.users, [0, 1, 4, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(v0.items, [2, 2, 1, 0, 1, 1, 0, 2])
    v1 = labels.at("binary-edge-rating", 1)  # ratings 2, 2, 4, 5, 2, 1, 3, 4
    np.testing.assert_array_equal(v1.labels, [0, 0, 1, 1, 0, 0, 0, 1])


def test_user_activity(labels):
    # version 0: users 0..5; u1 (0), u2 (1), u5 (4) have validation interactions in window 0
    train = labels.train("user-activity")
    np.testing.assert_array_equal(train.users, range(6))
    np.testing.assert_array_equal(train.labels, [1, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(labels.at("user-activity", 0).labels, train.labels)
    # version 1: users 0..7 (u6 -> 6, u8 -> 7); u8's single interaction is training data, so inactive
    v1 = labels.at("user-activity", 1)
    np.testing.assert_array_equal(v1.users, range(8))
    np.testing.assert_array_equal(v1.labels, [1, 1, 1, 1, 0, 0, 1, 0])


def test_user_positive_activity(labels):
    # max validation rating: u1 5, u2 3, u5 4 (>= 4 counts), others none
    np.testing.assert_array_equal(labels.train("user-positive-activity").labels, [1, 0, 0, 0, 1, 0])
    # u1 max(2, 4), u2 3, u3 max(2, 5), u4 max(4, 1), u6 2
    np.testing.assert_array_equal(labels.at("user-positive-activity", 1).labels, [1, 0, 1, 1, 0, 0, 0, 0])


def test_binary_item_rating_avg(labels):
    # version-0 training items with >= 10 ratings: A (mean 3.0), B (4.1); C has 2 -> threshold 3.55
    assert labels.avg_threshold == pytest.approx(3.55)
    train = labels.train("binary-item-rating-avg")
    np.testing.assert_array_equal(train.items, [0, 1])
    np.testing.assert_array_equal(train.labels, [0, 1])
    v0 = labels.at("binary-item-rating-avg", 0)  # train + val: A 3.0 (13 ratings), B 3.769 (13); C has 5
    np.testing.assert_array_equal(v0.items, [0, 1])
    np.testing.assert_array_equal(v0.labels, [0, 1])
    v1 = labels.at("binary-item-rating-avg", 1)  # A 2.9375 (16), B 3.529 (17) < 3.55: the threshold stays fixed
    np.testing.assert_array_equal(v1.labels, [0, 0])


def test_binary_item_rating_std(labels):
    # training: A's unbiased std is exactly 1.0 -> 1 (a biased std, 0.95, would say 0); B 0.32 -> 0
    np.testing.assert_array_equal(labels.train("binary-item-rating-std").labels, [1, 0])
    np.testing.assert_array_equal(labels.at("binary-item-rating-std", 0).labels, [0, 0])  # 0.913, 0.927
    v1 = labels.at("binary-item-rating-std", 1)  # A 1.124; B 1.0073 (biased 0.977)
    np.testing.assert_array_equal(v1.items, [0, 1])
    np.testing.assert_array_equal(v1.labels, [1, 1])


def test_protocol_versions_and_features(labels):
    assert set(PROTOCOLS) == set(TASK_NAMES) and len(TASK_NAMES) == 5
    assert PROTOCOLS["binary-edge-rating"].eval_versions(5) == [1, 2, 3, 4]
    assert PROTOCOLS["user-activity"].eval_versions(5) == [2, 3, 4]
    assert PROTOCOLS["user-positive-activity"].early_stop_version == 1
    assert PROTOCOLS["binary-item-rating-std"].early_stop_version == 0
    user_emb = np.arange(16, dtype=np.float32).reshape(8, 2)
    item_emb = -np.arange(9, dtype=np.float32).reshape(3, 3)
    edges = labels.at("binary-edge-rating", 0).features(user_emb, item_emb)
    assert edges.shape == (8, 5)
    np.testing.assert_array_equal(edges[2], [8, 9, -3, -4, -5])  # (u5 = index 4, item B = index 1)
    np.testing.assert_array_equal(labels.at("binary-item-rating-avg", 1).features(user_emb, item_emb), item_emb[[0, 1]])
