"""Recall@K on a version's validation interactions, as the paper's ``RecallEvaluator``.

For every user with at least one validation interaction: rank all items of the version's node set
by dot product (the paper's sigmoid does not change the order), exclude the user's training
positives, and count how many of the user's validation items are in the top K. Recall = hits /
number of distinct validation items; the reported value is the mean over those users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training.data.splits import VersionSplit

PAPER_RECALL_KS: tuple[int, ...] = (10, 20, 50, 100)
#: The paper's primary K: checkpoints are selected, and the intended task reported, by Recall@50.
PRIMARY_K = 50
_USERS_PER_CHUNK = 1024


class RecallEvaluator:
    def __init__(self, split: VersionSplit, ks: Sequence[int] = PAPER_RECALL_KS):
        self.ks = tuple(sorted(ks))
        self.num_items = split.num_items
        val_keys = np.unique(split.val_user.astype(np.int64) * split.num_items + split.val_item)
        self.users = np.unique(val_keys // split.num_items)
        self._truth = _rows_of(val_keys, self.users, split.num_items)
        train_keys = np.unique(split.train_user.astype(np.int64) * split.num_items + split.train_item)
        self._known = _rows_of(train_keys, self.users, split.num_items)

    @torch.no_grad()
    def evaluate(self, z_user: torch.Tensor, z_item: torch.Tensor) -> dict[int, float]:
        top = min(max(self.ks), self.num_items)
        hits_at: dict[int, list[np.ndarray]] = {k: [] for k in self.ks}
        truth_sizes: list[np.ndarray] = []
        for start in range(0, len(self.users), _USERS_PER_CHUNK):
            rows = slice(start, start + _USERS_PER_CHUNK)
            users = torch.from_numpy(self.users[rows]).to(z_user.device)
            scores = z_user[users] @ z_item.T
            known_r, known_c = self._known.entries(rows)
            scores[
                torch.from_numpy(known_r).to(scores.device), torch.from_numpy(known_c).to(scores.device)
            ] = -torch.inf
            ranked = scores.topk(top, dim=1).indices.cpu().numpy()
            truth_r, truth_c = self._truth.entries(rows)
            is_truth = np.zeros((len(ranked), self.num_items), dtype=bool)
            is_truth[truth_r, truth_c] = True
            hits = np.cumsum(np.take_along_axis(is_truth, ranked, axis=1), axis=1)
            for k in self.ks:
                hits_at[k].append(hits[:, min(k, top) - 1])
            truth_sizes.append(is_truth.sum(axis=1))
        sizes = np.concatenate(truth_sizes)
        return {k: float(np.mean(np.concatenate(hits_at[k]) / sizes)) for k in self.ks}


class _Rows:
    """Item lists of the evaluated users in CSR form (row = position in the evaluated users)."""

    def __init__(self, row: np.ndarray, col: np.ndarray, num_rows: int):
        self.row, self.col = row, col
        self.starts = np.searchsorted(row, np.arange(num_rows + 1))

    def entries(self, rows: slice) -> tuple[np.ndarray, np.ndarray]:
        lo = self.starts[rows.start]
        hi = self.starts[min(rows.stop, len(self.starts) - 1)]
        return self.row[lo:hi] - rows.start, self.col[lo:hi]


def _rows_of(keys: np.ndarray, users: np.ndarray, num_items: int) -> _Rows:
    key_user = keys // num_items
    keep = np.isin(key_user, users)
    row = np.searchsorted(users, key_user[keep])
    return _Rows(row, keys[keep] % num_items, len(users))
