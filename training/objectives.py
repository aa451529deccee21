"""The losses, exactly as the authors' code computes them (docs/TRAINING.md has the algebra).

A mini-batch is a set of BPR triples (user u, positive item i, negative item j), given as index
tensors into the full-graph embeddings.

The alignment losses take the embeddings of *all* nodes and select the batch rows after mapping.
That is the same number as mapping the batch rows (B_k and the frozen chains are linear maps
applied row by row, so they commute with row selection), but it maps each node once instead of
3 x batch rows: on MovieLens 100K at batch 8192 that is 2,625 rows instead of 24,576, and the
mapping would otherwise cost more than the GNN itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def bpr_loss(z_user: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor, l2_weight: float) -> torch.Tensor:
    """Intended-task loss: mean softplus(<u,j> - <u,i>) + l2_weight * (||Z_u||² + ||Z_i||² + ||Z_j||²) / (2B).

    The L2 term is on the batch's *embeddings* (an explicit loss term), not optimizer weight decay.
    ``z_neg`` of shape (B, N, D) holds N negatives per pair: the ranking term is the mean over all
    B x N pairs and the negatives' L2 the mean over their N, so N = 1 is the paper's loss.
    """
    z_neg = z_neg if z_neg.ndim == 3 else z_neg.unsqueeze(1)
    pos = (z_user * z_pos).sum(dim=1)
    neg = (z_user.unsqueeze(1) * z_neg).sum(dim=2)
    ranking = F.softplus(neg - pos.unsqueeze(1)).mean()
    l2 = 0.5 * (z_user.pow(2).sum() + z_pos.pow(2).sum() + z_neg.pow(2).sum() / z_neg.shape[1]) / len(z_user)
    return ranking + l2_weight * l2


class _GatheredScores(torch.autograd.Function):
    """scores[b, n] = <queries[b], table[index[b, n]]>, with a backward that never builds (B, N, D).

    Why: with N negatives per pair the plain gather-multiply-sum builds the (B, N, D) negatives,
    their gradient, the L2 term's gradient and their sum, then scatters them back into the table:
    on MovieLens 100K at batch 2048, N = 8 and d = 448 that was half of a LightGCN step (40 of 75
    ms). Here the backward is one batched product for the queries and one sparse (table rows x
    batch) product for the table, summing each row's contributions in a fixed order (deterministic).
    """

    @staticmethod
    def forward(ctx, queries: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        rows = table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[1])
        ctx.save_for_backward(queries, rows, index)
        ctx.table_rows = table.shape[0]
        return torch.bmm(rows, queries.unsqueeze(2)).squeeze(2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        queries, rows, index = ctx.saved_tensors
        grad_queries = grad_table = None
        if ctx.needs_input_grad[0]:
            grad_queries = torch.bmm(grad.unsqueeze(1), rows).squeeze(1)
        if ctx.needs_input_grad[1]:
            flat = index.reshape(-1)
            order = torch.argsort(flat, stable=True)
            crow = torch.zeros(ctx.table_rows + 1, dtype=torch.int64, device=flat.device)
            torch.cumsum(torch.bincount(flat, minlength=ctx.table_rows), 0, out=crow[1:])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse")
                per_row = torch.sparse_csr_tensor(
                    crow, order // index.shape[1], grad.reshape(-1)[order], size=(ctx.table_rows, len(queries))
                )
            grad_table = per_row @ queries
        return grad_queries, grad_table, None


def bpr_loss_gathered(
    z_user: torch.Tensor, z_pos: torch.Tensor, z_items: torch.Tensor, negatives: torch.Tensor, l2_weight: float
) -> torch.Tensor:
    """:func:`bpr_loss` with the negatives given as indices into ``z_items`` (all items' embeddings).

    The same number and gradients as ``bpr_loss(z_user, z_pos, z_items[negatives], l2_weight)``
    (tests/test_training_losses.py), computed without a (B, N, D) gradient: the ranking term
    through :class:`_GatheredScores`, the negatives' L2 term as a count-weighted sum over items (an
    item drawn c times counts c times), like the alignment losses' :func:`_batch_row_sum`.
    """
    negatives = negatives if negatives.ndim == 2 else negatives.unsqueeze(1)
    pos = (z_user * z_pos).sum(dim=1)
    neg = _GatheredScores.apply(z_user, z_items, negatives)
    ranking = F.softplus(neg - pos.unsqueeze(1)).mean()
    counts = torch.bincount(negatives.reshape(-1), minlength=z_items.shape[0]).to(z_items.dtype)
    neg_l2 = counts @ z_items.pow(2).sum(dim=1)
    l2 = 0.5 * (z_user.pow(2).sum() + z_pos.pow(2).sum() + neg_l2 / negatives.shape[1]) / len(z_user)
    return ranking + l2_weight * l2


def _batch_mse(
    residual_user: torch.Tensor,
    residual_item: torch.Tensor,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
) -> torch.Tensor:
    """mean(d_u²) + mean(d_i²) + mean(d_j²), each mean over the batch rows and all dimensions."""
    squares = (residual_user.pow(2).sum(dim=1), residual_item.pow(2).sum(dim=1))
    return _batch_row_sum(*squares, users, positives, negatives) / residual_user.shape[1]


def _batch_row_sum(
    user_values: torch.Tensor,
    item_values: torch.Tensor,
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
) -> torch.Tensor:
    """Σ over the batch's (u, i, j) rows of value(u) + value(i) + value(j), divided by the batch size,
    from one value per node.

    Computed as a count-weighted sum over nodes (a node drawn c times in the batch counts c
    times), which is the same number without gathering 3 x batch rows and scattering their
    gradients back.
    """
    user_counts = torch.bincount(users, minlength=len(user_values)).to(user_values.dtype)
    item_counts = torch.bincount(positives, minlength=len(item_values)).to(item_values.dtype)
    item_counts = item_counts + torch.bincount(negatives, minlength=len(item_values)).to(item_values.dtype)
    return (user_counts @ user_values + item_counts @ item_values) / len(users)


def single_step_alignment_loss(
    mapped: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor],
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
) -> torch.Tensor:
    """Σ over (u, i, j) of MSE(B_k z_k, z_{k-1}) -- ``torch.nn.MSELoss`` of each batch part.

    ``mapped`` = (B_k z_k of all users, of all items); ``targets`` = z_{k-1} of the same nodes.
    """
    return _batch_mse(targets[0] - mapped[0], targets[1] - mapped[1], users, positives, negatives)


def multi_step_alignment_loss(
    mapped: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor],
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    older_transforms: Sequence[torch.Tensor],
) -> torch.Tensor:
    """BC-Aligner's loss: the residual d = z_{k-1} - B_k z_k, also pushed through the frozen chains
    B_{j+1}∘…∘B_{k-1} to every older space j, so that the ver-j embedding derived from version k
    matches the one derived from version k-1 for *every* j, not only j = k-1.

    ``older_transforms`` are the weights of B_1..B_{k-1} (version order; B_j has shape
    (D_{j-1}, D_j)). Each term is a mean over the batch and that space's D_j dimensions; the sum
    over the k spaces is divided by k. Computed through :func:`alignment_metric` (callers that
    keep the chain fixed over many steps precompute it and call :func:`metric_alignment_loss`).
    """
    metric = alignment_metric(older_transforms, targets[0].shape[1]).to(targets[0])
    return metric_alignment_loss(mapped, targets, users, positives, negatives, metric)


def alignment_metric(older_transforms: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """G = (1/k) Σ_j P_j^T P_j / D_j over the k spaces j < k (P_{k-1} = I, P_j = B_{j+1}⋯B_{k-1}).

    Why: the multi-step loss of a residual d sums ||P_j d||² / D_j over the spaces, which is the
    one quadratic form d^T G d. Pushing every residual through the chain costs Σ_j D_j x D_{k-1}
    per node and step; with G, fixed while B_1..B_{k-1} are frozen, it is D_{k-1}² (ml-100k, v4:
    the alignment term's forward + backward 30 -> 21 ms per step). Built in float64, returned in
    the transforms' dtype (float32 if there are none).
    """
    dtype = older_transforms[0].dtype if older_transforms else torch.float32
    device = older_transforms[0].device if older_transforms else None
    chain = torch.eye(dim, dtype=torch.float64, device=device)
    metric = chain / dim
    for weight in reversed(older_transforms):
        chain = weight.to(torch.float64) @ chain
        metric = metric + chain.T @ chain / chain.shape[0]
    return (metric / (len(older_transforms) + 1)).to(dtype)


def metric_alignment_loss(
    mapped: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor],
    users: torch.Tensor,
    positives: torch.Tensor,
    negatives: torch.Tensor,
    metric: torch.Tensor,
) -> torch.Tensor:
    """:func:`multi_step_alignment_loss` with its :func:`alignment_metric` ``metric`` given: the
    sum of d^T G d over the batch's (u, i, j) rows, divided by the batch size."""
    residual_user, residual_item = targets[0] - mapped[0], targets[1] - mapped[1]
    user_form = ((residual_user @ metric) * residual_user).sum(dim=1)
    item_form = ((residual_item @ metric) * residual_item).sum(dim=1)
    return _batch_row_sum(user_form, item_form, users, positives, negatives)


def _node_mse(residual_user: torch.Tensor, residual_item: torch.Tensor) -> torch.Tensor:
    """mean over users of ||d_u||²/D + mean over items of ||d_i||²/D: users and items weigh the same."""
    dim = residual_user.shape[1]
    user = residual_user.pow(2).sum(dim=1).mean() if len(residual_user) else residual_user.sum()
    item = residual_item.pow(2).sum(dim=1).mean() if len(residual_item) else residual_item.sum()
    return (user + item) / dim


def all_nodes_alignment_loss(
    mapped: tuple[torch.Tensor, torch.Tensor],
    targets: tuple[torch.Tensor, torch.Tensor],
    older_transforms: Sequence[torch.Tensor] = (),
) -> torch.Tensor:
    """The multi-step alignment loss over *every* node instead of the batch's BPR triples.

    Why: the training step already embeds every node (full-graph propagation), so aligning all of
    them costs one more matrix product, and it removes the sampling noise and the 2:1 item weight
    (by popularity) of the batch version: a user's alignment counts as much as an item's, whatever
    the BPR sampler drew. Same structure as :func:`multi_step_alignment_loss` (residual pushed
    through the frozen chains, one mean-square per space, divided by the number of spaces); with no
    ``older_transforms`` it is the single-step loss.
    """
    residual_user, residual_item = targets[0] - mapped[0], targets[1] - mapped[1]
    total = _node_mse(residual_user, residual_item)
    for weight in reversed(older_transforms):
        residual_user, residual_item = residual_user @ weight.T, residual_item @ weight.T
        total = total + _node_mse(residual_user, residual_item)
    return total / (len(older_transforms) + 1)
