"""Matrix factorisation: the transductive baseline (one free vector per user and per item).

The tables are sized for every user and item of the whole dataset so a model trained at version
k-1 can still be run on version k's larger graph (as the alignment targets require); rows of
objects that had no interaction yet simply keep their initial values.
"""

from __future__ import annotations

import torch
from torch import nn

from training.models.graph import Graph


class MatrixFactorization(nn.Module):
    def __init__(self, dim: int, max_users: int, max_items: int):
        super().__init__()
        self.dim = dim
        self.user_table = nn.Parameter(torch.randn(max_users, dim) * 0.1)
        self.item_table = nn.Parameter(torch.randn(max_items, dim) * 0.1)

    def forward(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        if graph.num_users > len(self.user_table) or graph.num_items > len(self.item_table):
            raise ValueError(
                f"graph has {graph.num_users} users / {graph.num_items} items but the model was built for "
                f"{len(self.user_table)} / {len(self.item_table)}"
            )
        return self.user_table[: graph.num_users], self.item_table[: graph.num_items]
