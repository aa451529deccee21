"""The paper's embedding model: a PinSAGE-style GNN over the user–item graph (no PyG).

Faithful to ``recsys/models/pinsage.py``:

* users are inductive: every user starts from **one shared learnable vector**, so a new user's
  embedding comes only from the items it interacted with;
* items start from their attributes: the sum over attribute groups of a mean ``EmbeddingBag``
  (an item without tokens starts from zeros);
* each layer is PyG's ``SAGEConv`` with mean aggregation, ``W_neigh · mean(neighbours) + b +
  W_self · x``, followed by BatchNorm, with ReLU between layers and none after the last;
* all embeddings are recomputed on the full graph at every call (every training step).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from training.models.graph import Graph


class ItemAttributeEncoder(nn.Module):
    def __init__(self, dim: int, vocabulary_sizes: Mapping[str, int]):
        super().__init__()
        self.dim = dim
        self.bags = nn.ModuleDict(
            {name: nn.EmbeddingBag(size, dim, mode="mean") for name, size in vocabulary_sizes.items() if size > 0}
        )

    def forward(self, graph: Graph) -> torch.Tensor:
        x = torch.zeros(graph.num_items, self.dim, device=graph.mean_adjacency.device)
        for name, bag in self.bags.items():
            values, offsets = graph.item_bags[name]
            x = x + bag(values, offsets)
        return x


class SAGELayer(nn.Module):
    """PyG ``SAGEConv(dim, dim)`` with mean aggregation and root weight."""

    def __init__(self, dim: int):
        super().__init__()
        self.neighbours = nn.Linear(dim, dim, bias=True)
        self.root = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, mean_adjacency: torch.Tensor) -> torch.Tensor:
        return self.neighbours(mean_adjacency @ x) + self.root(x)


class PinSAGE(nn.Module):
    def __init__(self, dim: int, num_layers: int, vocabulary_sizes: Mapping[str, int]):
        super().__init__()
        self.dim = dim
        self.num_layers = num_layers
        self.user_input = nn.Parameter(torch.randn(1, dim) * 0.1)  # nn.Embedding(1, dim), std 0.1
        self.item_encoder = ItemAttributeEncoder(dim, vocabulary_sizes)
        self.layers = nn.ModuleList(SAGELayer(dim) for _ in range(num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(dim) for _ in range(num_layers))

    def forward(self, graph: Graph) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of all users and all items of ``graph``."""
        x = torch.cat([self.user_input.expand(graph.num_users, -1), self.item_encoder(graph)])
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            x = norm(layer(x, graph.mean_adjacency))
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x[: graph.num_users], x[graph.num_users :]
