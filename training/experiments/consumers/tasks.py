"""The paper's five unintended tasks: labels, and which version each part of the protocol uses.

Why this module exists: a consumer team's task is defined by *labels derived from the interaction
timeline*, independently of any embedding. Everything here follows the authors' code exactly
(``embevolve/unintended_tasks/train_model.py``, ``eval_model.py`` and ``split_dynrecdataset`` in
``recsys/utils.py``), on top of :func:`training.data.split_version`, so the label of an object at
version k is computed from the same split the embedding model of version k was trained on:

=========================== ======= ===================================================================
task                        level   label (at version k, split k)
=========================== ======= ===================================================================
``binary-edge-rating``      edge    rating >= 4 (train: split-0 *train* edges; else split-k val edges)
``user-activity``           user    the user has >= 1 validation interaction in (t_k, t_k+1]; every user
                                    of the version's node set is a row (new users included)
``user-positive-activity``  user    max rating among those validation interactions >= 4 (0 if none)
``binary-item-rating-avg``  item    mean rating >= the median of the mean ratings of split 0's train
                                    items; only items with >= 10 ratings; threshold fixed for all k
``binary-item-rating-std``  item    std of the ratings (unbiased, ddof=1, as torch_scatter) >= 1;
                                    only items with >= 10 ratings
=========================== ======= ===================================================================

Item tasks count the ratings of split 0's *train* edges for the training rows and of train ∪ val
edges of split k at version k. Protocol (which embeddings go where; only ver-0 consumers C_0):

* edge and item tasks train on version 0's rows, early-stop on version 0's validation rows and are
  evaluated at versions 1..4;
* activity tasks train on version 0's labels (activity in (t_0, t_1]), early-stop on version 1's and
  are evaluated at versions 2..4 (the notebook slices ``[:, 2:]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from training.data.dataset import InteractionDataset
from training.data.splits import VersionSplit

TaskName = Literal[
    "binary-edge-rating",
    "user-activity",
    "user-positive-activity",
    "binary-item-rating-avg",
    "binary-item-rating-std",
]
TASK_NAMES: tuple[str, ...] = TaskName.__args__  # type: ignore[attr-defined]
Level = Literal["edge", "user", "item"]

#: Rating at or above which an interaction counts as positive (edge and positive-activity tasks).
POSITIVE_RATING = 4.0
#: Item tasks only use items with at least this many ratings.
MIN_ITEM_RATINGS = 10
#: ``binary-item-rating-std``: the code's fixed threshold (its docstring still says "median").
STD_THRESHOLD = 1.0


@dataclass(frozen=True)
class TaskProtocol:
    """Where a task's consumer gets its rows: train and early-stop versions, evaluated versions."""

    name: str
    level: Level
    early_stop_version: int
    first_eval_version: int
    description: str

    def eval_versions(self, num_versions: int) -> list[int]:
        return list(range(self.first_eval_version, num_versions))


PROTOCOLS: dict[str, TaskProtocol] = {
    p.name: p
    for p in (
        TaskProtocol("binary-edge-rating", "edge", 0, 1, "edge rating >= 4"),
        TaskProtocol("user-activity", "user", 1, 2, "user interacts in the next period"),
        TaskProtocol("user-positive-activity", "user", 1, 2, "user rates >= 4 in the next period"),
        TaskProtocol("binary-item-rating-avg", "item", 0, 1, "item mean rating >= version-0 median"),
        TaskProtocol("binary-item-rating-std", "item", 0, 1, "item rating std >= 1"),
    )
}


@dataclass(frozen=True, eq=False)
class Examples:
    """Rows of one task at one version: the objects (dataset indices) and their 0/1 labels.

    Edge rows have both ``users`` and ``items``; user rows only ``users``; item rows only ``items``.
    """

    task: str
    version: int
    level: Level
    labels: np.ndarray  # float32, 0.0 / 1.0
    users: np.ndarray | None = None  # int64 user index per row
    items: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def positive_rate(self) -> float:
        return float(self.labels.mean()) if len(self.labels) else float("nan")

    def features(self, user_emb: np.ndarray, item_emb: np.ndarray) -> np.ndarray:
        """The consumer's input: concat(user, item) for edges, the object's embedding otherwise."""
        if self.level == "edge":
            return np.concatenate([user_emb[self.users], item_emb[self.items]], axis=1)
        if self.level == "user":
            return user_emb[self.users]
        return item_emb[self.items]


class TaskLabels:
    """Labels of the five tasks on one dataset's version splits (``splits[k]`` is version k's)."""

    def __init__(self, dataset: InteractionDataset, splits: Sequence[VersionSplit]):
        if not splits:
            raise ValueError("need at least one version split")
        self.dataset = dataset
        self.splits = list(splits)
        first = self.splits[0]
        train_items, train_ratings = self._item_ratings(first.train_index)
        means, _, _ = _item_statistics(train_items, train_ratings, first.num_items)
        if len(means) == 0:
            raise ValueError(
                f"{dataset.name}: no item has >= {MIN_ITEM_RATINGS} ratings in version 0's training data; "
                "the item tasks are undefined"
            )
        #: ``binary-item-rating-avg`` threshold, fixed from version 0's training split.
        self.avg_threshold = float(np.median(means))

    @property
    def num_versions(self) -> int:
        return len(self.splits)

    def train(self, task: str) -> Examples:
        """Rows the consumer is trained on (version-0 embeddings)."""
        protocol = PROTOCOLS[task]
        if protocol.level == "user":  # activity in (t_0, t_1]: version 0's 'validation' labels
            return self.at(task, 0)
        split = self.splits[0]
        if protocol.level == "edge":
            return self._edges(task, 0, split.train_index, split.train_user, split.train_item)
        return self._items(task, 0, split.train_index)

    def at(self, task: str, version: int) -> Examples:
        """Rows of version ``version``: the early-stopping rows at the protocol's early-stop version,
        the evaluated rows at the later versions."""
        protocol = PROTOCOLS[task]
        split = self.splits[version]
        if protocol.level == "edge":
            return self._edges(task, version, split.val_index, split.val_user, split.val_item)
        if protocol.level == "user":
            return self._users(task, version, split)
        return self._items(task, version, np.concatenate([split.train_index, split.val_index]))

    # ------------------------------------------------------------------------------ per level
    def _edges(self, task: str, version: int, index: np.ndarray, users: np.ndarray, items: np.ndarray) -> Examples:
        labels = (self.dataset.rating[index] >= POSITIVE_RATING).astype(np.float32)
        return Examples(task, version, "edge", labels, users=users.astype(np.int64), items=items.astype(np.int64))

    def _users(self, task: str, version: int, split: VersionSplit) -> Examples:
        users = np.arange(split.num_users, dtype=np.int64)
        if task == "user-activity":
            labels = np.bincount(split.val_user, minlength=split.num_users) > 0
        else:  # max validation rating >= 4; users without validation interactions have max 0
            best = np.zeros(split.num_users, dtype=np.float64)
            np.maximum.at(best, split.val_user, self.dataset.rating[split.val_index].astype(np.float64))
            labels = best >= POSITIVE_RATING
        return Examples(task, version, "user", labels.astype(np.float32), users=users)

    def _items(self, task: str, version: int, index: np.ndarray) -> Examples:
        items, ratings = self._item_ratings(index)
        means, stds, kept = _item_statistics(items, ratings, self.splits[version].num_items)
        if task == "binary-item-rating-avg":
            labels = means >= self.avg_threshold
        else:
            labels = stds >= STD_THRESHOLD
        return Examples(task, version, "item", labels.astype(np.float32), items=kept)

    def _item_ratings(self, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.item[index], self.dataset.rating[index].astype(np.float64)


def _item_statistics(
    items: np.ndarray, ratings: np.ndarray, num_items: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, unbiased std, item index) of every item with >= MIN_ITEM_RATINGS ratings, by item index."""
    counts = np.bincount(items, minlength=num_items)
    mean_all = np.bincount(items, weights=ratings, minlength=num_items) / np.maximum(counts, 1)
    # Two passes (mean, then squared deviations) in float64, not sum(r^2) - n mean^2, whose
    # cancellation can push a std of exactly 1 below the threshold; ddof = 1 as torch_scatter's scatter_std.
    deviations = np.bincount(items, weights=(ratings - mean_all[items]) ** 2, minlength=num_items)
    kept = np.flatnonzero(counts >= MIN_ITEM_RATINGS)
    return mean_all[kept], np.sqrt(deviations[kept] / (counts[kept] - 1)), kept.astype(np.int64)
