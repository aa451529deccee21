"""The user–item graph a version's model propagates over, as torch tensors.

Nodes are users ``0..U-1`` followed by items ``U..U+I-1`` (everything up to the version's next
slice point); edges are the version's *training* interactions in both directions. Mean
aggregation over neighbours (PyG ``SAGEConv``'s default) is one sparse CSR matmul with the
row-normalised adjacency, which is why no graph library is needed. Duplicate interactions count
with their multiplicity, as in the original (uncoalesced) adjacency.

LightGCN propagates with the symmetrically normalised adjacency D^-1/2 A D^-1/2 instead
(``sym_adjacency``: same sparsity pattern, value 1/sqrt(deg(src) deg(dst)) per edge).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from training.data.dataset import InteractionDataset
from training.data.splits import VersionSplit


@dataclass(frozen=True, eq=False)
class Graph:
    num_users: int
    num_items: int
    mean_adjacency: torch.Tensor  # sparse CSR (N, N); row n averages the neighbours of node n
    sym_adjacency: torch.Tensor  # sparse CSR (N, N); D^-1/2 A D^-1/2 (LightGCN's propagation)
    item_bags: dict[str, tuple[torch.Tensor, torch.Tensor]]  # group -> (token indices, bag offsets)

    @property
    def num_nodes(self) -> int:
        return self.num_users + self.num_items


def build_graph(dataset: InteractionDataset, split: VersionSplit, device: torch.device | str = "cpu") -> Graph:
    users, items = split.num_users, split.num_items
    src = np.concatenate([split.train_user, split.train_item + users])
    dst = np.concatenate([split.train_item + users, split.train_user])
    n = users + items
    order = np.lexsort((dst, src))
    src, dst = src[order], dst[order]
    degree = np.bincount(src, minlength=n)
    crow = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(degree, out=crow[1:])
    values = 1.0 / degree[src]  # a node without training edges has no row entries: its mean is 0
    sym_values = 1.0 / np.sqrt(degree[src].astype(np.float64) * degree[dst])

    crow_t, col_t = torch.from_numpy(crow), torch.from_numpy(dst.astype(np.int64))

    def csr(entries: np.ndarray) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse")
            return torch.sparse_csr_tensor(
                crow_t,
                col_t,
                torch.from_numpy(entries.astype(np.float32)),
                size=(n, n),
                device=device,
            )

    bags = {}
    for name, group in dataset.item_attributes.items():
        if len(group.vocabulary) > 0:  # an attribute without any kept token contributes nothing
            tokens, offsets = group.prefix(items)
            bags[name] = (
                torch.from_numpy(tokens).to(device),
                torch.from_numpy(np.ascontiguousarray(offsets)).to(device),
            )
    return Graph(
        num_users=users, num_items=items, mean_adjacency=csr(values), sym_adjacency=csr(sym_values), item_bags=bags
    )
