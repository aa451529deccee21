"""Backward transforms B_k and the alignment term of joint training.

B_k maps version-k embeddings to version k-1's space. Three honest kinds exist:

* ``learned``    -- ``nn.Linear(D_k, D_{k-1}, bias=False)`` trained jointly or post hoc;
* ``truncation`` -- ``[I 0]``, keep the first D_{k-1} coordinates: what Joint-NoTrans is trained
  for, and what the paper feeds ver-0 consumers for No-BC (meaningless there, which is the point);
* ``identity``   -- same dimension, same space: Fix-M0 (it is the same model) and Finetune-M0
  (the paper feeds the fine-tuned embedding to ver-0 consumers directly).

Every kind is published as a plain matrix, so Feast serves version j as B_{j+1}⋯B_k z_k for all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from training.backward_fit import least_squares_transform, relative_residual
from training.objectives import (
    alignment_metric,
    all_nodes_alignment_loss,
    metric_alignment_loss,
    single_step_alignment_loss,
)

#: Which nodes the alignment term covers at each step: the batch's BPR triples (the paper) or all.
AlignmentNodes = Literal["batch", "all"]


def truncation_matrix(old_dim: int, new_dim: int) -> np.ndarray:
    """[I 0] of shape (old_dim, new_dim): the first old_dim coordinates."""
    return np.eye(old_dim, new_dim, dtype=np.float32)


def chain_to(vectors: np.ndarray, transforms: Sequence[np.ndarray], target: int) -> np.ndarray:
    """Map version-k vectors (k = len(transforms)) to version ``target`` through B_k, ..., B_{target+1}.

    ``transforms[v - 1]`` is B_v. Done in float64 and rounded once, like feast_bc's composition.
    """
    z = vectors.astype(np.float64)
    for weight in reversed(transforms[target:]):
        z = z @ weight.astype(np.float64).T
    return z.astype(np.float32)


class JointAlignment(nn.Module):
    """λ · L_align(B_k z_k, z_{k-1}) for joint training, with frozen targets z_{k-1} = M_{k-1}(G_k).

    ``kind="learned"`` owns a trainable B_k; ``kind="truncation"`` (Joint-NoTrans) has none.
    ``older_transforms`` (B_1..B_{k-1}, frozen) make the loss multi-step (BC-Aligner).
    ``nodes="all"`` aligns every node at every step instead of the batch's triples
    (:func:`training.objectives.all_nodes_alignment_loss`); ``initial`` starts B_k from a given
    matrix (e.g. [I 0] after a warm start) instead of ``nn.Linear``'s random initialisation.
    """

    target_user: torch.Tensor
    target_item: torch.Tensor

    def __init__(
        self,
        *,
        kind: Literal["learned", "truncation"],
        new_dim: int,
        target_user: torch.Tensor,
        target_item: torch.Tensor,
        lam: float,
        older_transforms: Sequence[np.ndarray] = (),
        multi_step: bool = False,
        nodes: AlignmentNodes = "batch",
        initial: np.ndarray | None = None,
    ):
        super().__init__()
        old_dim = target_user.shape[1]
        if kind == "truncation" and new_dim < old_dim:
            raise ValueError(f"truncation needs D_k >= D_(k-1); got {new_dim} < {old_dim}")
        self.kind = kind
        self.lam = lam
        self.multi_step = multi_step
        self.old_dim = old_dim
        self.new_dim = new_dim
        self.nodes = nodes
        self.transform = nn.Linear(new_dim, old_dim, bias=False) if kind == "learned" else None
        if initial is not None:
            if self.transform is None or initial.shape != (old_dim, new_dim):
                raise ValueError(f"initial B_k must be a ({old_dim}, {new_dim}) matrix of a learned transform")
            with torch.no_grad():
                self.transform.weight.copy_(torch.from_numpy(np.asarray(initial, dtype=np.float32)))
        self.register_buffer("target_user", target_user.detach())
        self.register_buffer("target_item", target_item.detach())
        device = target_user.device
        self.older = [torch.from_numpy(np.asarray(w, dtype=np.float32)).to(device) for w in older_transforms]
        # The multi-step loss as one quadratic form, fixed while the older transforms are frozen.
        self.metric = alignment_metric(self.older, old_dim).to(device) if multi_step else None

    def map(self, z: torch.Tensor) -> torch.Tensor:
        return self.transform(z) if self.transform is not None else z[:, : self.old_dim]

    def loss(
        self,
        z_user: torch.Tensor,
        z_item: torch.Tensor,
        users: torch.Tensor,
        positives: torch.Tensor,
        negatives: torch.Tensor,
    ) -> torch.Tensor:
        """λ · L_align on one batch; ``z_user``/``z_item`` are the embeddings of all nodes."""
        mapped = (self.map(z_user), self.map(z_item))
        targets = (self.target_user, self.target_item)
        if self.nodes == "all":
            return self.lam * all_nodes_alignment_loss(mapped, targets, self.older if self.multi_step else ())
        if self.metric is not None:
            return self.lam * metric_alignment_loss(mapped, targets, users, positives, negatives, self.metric)
        return self.lam * single_step_alignment_loss(mapped, targets, users, positives, negatives)

    @torch.no_grad()
    def residual(self, z_user: torch.Tensor, z_item: torch.Tensor, *, refit: bool = False) -> float:
        """:func:`training.backward_fit.relative_residual` of eval-mode embeddings, with the current
        B_k or, with ``refit``, with the least-squares B_k a refit would publish."""
        new = (z_user.cpu().numpy(), z_item.cpu().numpy())
        old = (self.target_user.cpu().numpy(), self.target_item.cpu().numpy())
        weight = least_squares_transform(*new, *old) if refit and self.transform is not None else self.matrix()
        return relative_residual(weight, *new, *old)

    def matrix(self) -> np.ndarray:
        """B_k as published: (D_{k-1}, D_k) float32."""
        if self.transform is None:
            return truncation_matrix(self.old_dim, self.new_dim)
        return self.transform.weight.detach().cpu().numpy().astype(np.float32)
