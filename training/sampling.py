"""BPR training triples, drawn afresh every epoch as in the paper's ``RecDatasetNegsamling``.

Each epoch draws as many (user, positive) pairs as there are training interactions, *with
replacement and every user equally likely* (an interaction of user u has weight 1/deg(u)), which
matches the per-user averaging of Recall@K. Drawing a user uniformly and then one of its
interactions uniformly is the same distribution and needs no weight vector. Each pair gets a
uniformly drawn negative item, redrawn while it is one of the user's training positives.
With ``negatives > 1`` each pair gets that many negatives (shape (n, negatives)), drawn the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from training.errors import TrainingError

_MAX_REDRAW_ROUNDS = 1000


class BPRSampler:
    def __init__(self, train_user: np.ndarray, train_item: np.ndarray, num_items: int, rng: np.random.Generator):
        self.num_items = num_items
        self.num_samples = len(train_user)
        self.rng = rng
        order = np.argsort(train_user, kind="stable")
        self._items_by_user = train_item[order]
        self._users, self._starts, self._counts = np.unique(train_user[order], return_index=True, return_counts=True)
        # Sorted (user, item) keys of every positive, for O(log E) membership tests.
        self._positive_keys = np.unique(train_user.astype(np.int64) * num_items + train_item)

    def sample_epoch(self, negatives_per_pair: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.num_samples
        which = self.rng.integers(len(self._users), size=n)
        offset = (self.rng.random(n) * self._counts[which]).astype(np.int64)
        users = self._users[which]
        positives = self._items_by_user[self._starts[which] + offset]
        if negatives_per_pair == 1:  # the paper's draw, unchanged
            negatives = self._negatives_for(users)
        else:
            negatives = self._negatives_for(np.repeat(users, negatives_per_pair)).reshape(n, negatives_per_pair)
        return torch.from_numpy(users), torch.from_numpy(positives), torch.from_numpy(negatives)

    def _negatives_for(self, users: np.ndarray) -> np.ndarray:
        negatives = self.rng.integers(self.num_items, size=len(users))
        redraw = np.flatnonzero(self._is_positive(users, negatives))
        for _ in range(_MAX_REDRAW_ROUNDS):
            if len(redraw) == 0:
                break
            negatives[redraw] = self.rng.integers(self.num_items, size=len(redraw))
            redraw = redraw[self._is_positive(users[redraw], negatives[redraw])]
        else:
            raise TrainingError("cannot draw negative items: some user interacted with (almost) every item")
        return negatives

    def _is_positive(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users.astype(np.int64) * self.num_items + items
        pos = np.searchsorted(self._positive_keys, keys)
        pos = np.minimum(pos, len(self._positive_keys) - 1)
        return self._positive_keys[pos] == keys
