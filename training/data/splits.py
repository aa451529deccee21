"""The paper's version protocol: time = fraction of interactions, and the per-version split.

Version k trains on interactions up to fraction ``t_k`` and is evaluated on ``(t_k, t_{k+1}]``
(slices 0.5, 0.6, ..., 1.0 by default, so 5 versions). Following ``split_dynrecdataset`` of the
authors' code:

* train = every interaction with fraction <= t_k, plus the new users' interactions in
  (t_k, t_{k+1}] except the last one of each new user who has more than one there (a new user
  with exactly one interaction keeps it in train);
* validation = every (t_k, t_{k+1}] interaction of users that existed at t_k, plus that last
  interaction of each new user with more than one;
* the node set is every user and item up to t_{k+1}, so new items (known only through their
  attributes) are ranked too.

Fractions are ``np.linspace(0, 1, E)`` over the time-sorted interactions, compared with ``<=``
exactly as in the original, so the split is the paper's bit for bit given the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from training.data.dataset import InteractionDataset
from training.errors import DatasetError

PAPER_TIME_SLICES: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def interaction_fractions(num_interactions: int) -> np.ndarray:
    """Position of each (time-sorted) interaction as a fraction in [0, 1]."""
    return np.linspace(0.0, 1.0, num_interactions)


@dataclass(frozen=True, eq=False)
class VersionSplit:
    """Train/validation interactions and node counts of one version."""

    version: int
    time_train: float
    time_next: float
    num_users: int  # users up to time_next: the node set (and the published embeddings)
    num_items: int
    num_users_existing: int  # users up to time_train
    num_items_existing: int
    train_index: np.ndarray  # positions in the dataset's interaction arrays
    val_index: np.ndarray
    train_user: np.ndarray
    train_item: np.ndarray
    val_user: np.ndarray
    val_item: np.ndarray

    @property
    def num_train(self) -> int:
        return len(self.train_index)

    @property
    def num_val(self) -> int:
        return len(self.val_index)

    def summary(self) -> str:
        return (
            f"version {self.version} (train <= {self.time_train:g}, validate on ({self.time_train:g}, {self.time_next:g}]): "
            f"{self.num_users} users ({self.num_users - self.num_users_existing} new), "
            f"{self.num_items} items ({self.num_items - self.num_items_existing} new), "
            f"{self.num_train} train / {self.num_val} validation interactions"
        )


def split_version(dataset: InteractionDataset, time_train: float, time_next: float, version: int = 0) -> VersionSplit:
    if not 0.0 <= time_train < time_next <= 1.0:
        raise DatasetError(f"version {version}: need 0 <= time_train < time_next <= 1, got {time_train}, {time_next}")
    fraction = interaction_fractions(dataset.num_interactions)
    upto_train = np.flatnonzero(fraction <= time_train)
    upto_next = fraction <= time_next
    if len(upto_train) == 0:
        raise DatasetError(
            f"{dataset.name}: no interactions up to fraction {time_train} -- too few interactions for version {version}"
        )
    users_existing = int(dataset.user[upto_train].max()) + 1
    items_existing = int(dataset.item[upto_train].max()) + 1
    num_users = int(dataset.user[upto_next].max()) + 1
    num_items = int(dataset.item[upto_next].max()) + 1

    window = np.flatnonzero((fraction > time_train) & upto_next)  # in time order
    window_user = dataset.user[window]
    is_new = window_user >= users_existing
    # Last window interaction of every user: scan the reversed window, first hit per user.
    reversed_users = window_user[::-1]
    _, first_in_reversed = np.unique(reversed_users, return_index=True)
    last_position = len(window) - 1 - first_in_reversed
    counts = np.bincount(window_user, minlength=num_users)
    last_of_multi_new = last_position[
        (window_user[last_position] >= users_existing) & (counts[window_user[last_position]] > 1)
    ]
    to_val = ~is_new
    to_val[last_of_multi_new] = True

    train_index = np.concatenate([upto_train, window[~to_val]])
    val_index = window[to_val]
    if len(val_index) == 0:
        raise DatasetError(
            f"{dataset.name}: version {version} has no validation interactions in ({time_train}, {time_next}]"
        )
    return VersionSplit(
        version=version,
        time_train=time_train,
        time_next=time_next,
        num_users=num_users,
        num_items=num_items,
        num_users_existing=users_existing,
        num_items_existing=items_existing,
        train_index=train_index,
        val_index=val_index,
        train_user=dataset.user[train_index],
        train_item=dataset.item[train_index],
        val_user=dataset.user[val_index],
        val_item=dataset.item[val_index],
    )


def version_splits(dataset: InteractionDataset, time_slices=PAPER_TIME_SLICES) -> list[VersionSplit]:
    """One split per consecutive pair of slice points (5 for the paper's slices)."""
    return [split_version(dataset, t, t_next, version=k) for k, (t, t_next) in enumerate(pairwise(time_slices))]
