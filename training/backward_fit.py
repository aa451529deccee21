"""Closed-form backward transforms: B_k from paired embeddings (z_k, z_{k-1}) of the same nodes.

Why closed form: once M_k is chosen, the linear B_k that best maps its embeddings onto the
targets is a least-squares problem with an exact solution, cheaper than any number of Adam steps.
Joint training selects a checkpoint by validation recall, and the B_k it carries is whatever SGD
reached by then; refitting B_k on the selected M_k's (published, eval-mode) embeddings removes that
slack.

The objective is the all-node multi-step alignment loss of
:func:`training.objectives.all_nodes_alignment_loss`: users and items weigh the same (mean over
users + mean over items), and the residual is also measured through the frozen chains
B_{j+1}⋯B_{k-1} in every older space j. For an unconstrained linear B_k the minimiser does not
depend on those output-space metrics (each is a fixed positive-definite quadratic form of the same
residual, and least squares solves every output direction independently), so the plain
row-weighted least-squares solution minimises the multi-step loss as well; a tiny ridge keeps the
normal equations well conditioned when embeddings are rank-deficient.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_CHUNK = 65_536


def _gram(z: np.ndarray, y: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """weight * (Z^T Z, Z^T Y) in float64, accumulated in chunks (bounded memory for big tables)."""
    zz = np.zeros((z.shape[1], z.shape[1]))
    zy = np.zeros((z.shape[1], y.shape[1]))
    for start in range(0, len(z), _CHUNK):
        zc = z[start : start + _CHUNK].astype(np.float64)
        zz += zc.T @ zc
        zy += zc.T @ y[start : start + _CHUNK].astype(np.float64)
    return weight * zz, weight * zy


def least_squares_transform(
    new_user: np.ndarray,
    new_item: np.ndarray,
    old_user: np.ndarray,
    old_item: np.ndarray,
    *,
    ridge: float = 1e-6,
) -> np.ndarray:
    """B of shape (D_old, D_new) minimising mean_u ||B z_u - t_u||² + mean_i ||B z_i - t_i||²
    + ridge · tr(G)/D · ||B||² (G the weighted Gram matrix of the new embeddings)."""
    if new_user.shape[1] != new_item.shape[1] or old_user.shape[1] != old_item.shape[1]:
        raise ValueError("users and items must have the same dimensions within a version")
    if len(new_user) != len(old_user) or len(new_item) != len(old_item):
        raise ValueError("new and old embeddings must hold the same nodes (same rows)")
    dim = new_user.shape[1]
    gram, cross = np.zeros((dim, dim)), np.zeros((dim, old_user.shape[1]))
    for z, y in ((new_user, old_user), (new_item, old_item)):
        if len(z):
            g, c = _gram(z, y, 1.0 / len(z))
            gram += g
            cross += c
    gram += ridge * max(np.trace(gram) / dim, 1e-12) * np.eye(dim)
    return np.linalg.solve(gram, cross).T.astype(np.float32)


def alignment_objective(
    transform: np.ndarray,
    new_user: np.ndarray,
    new_item: np.ndarray,
    old_user: np.ndarray,
    old_item: np.ndarray,
    older_transforms: Sequence[np.ndarray] = (),
) -> float:
    """The all-node multi-step alignment loss of ``transform`` (float64, no λ)."""
    weight = transform.astype(np.float64)
    residual_user = old_user.astype(np.float64) - new_user.astype(np.float64) @ weight.T
    residual_item = old_item.astype(np.float64) - new_item.astype(np.float64) @ weight.T

    def node_mse(ru: np.ndarray, ri: np.ndarray) -> float:
        user = float((ru**2).sum(axis=1).mean()) if len(ru) else 0.0
        item = float((ri**2).sum(axis=1).mean()) if len(ri) else 0.0
        return (user + item) / ru.shape[1]

    total = node_mse(residual_user, residual_item)
    for older in reversed(older_transforms):
        older64 = np.asarray(older, dtype=np.float64)
        residual_user, residual_item = residual_user @ older64.T, residual_item @ older64.T
        total += node_mse(residual_user, residual_item)
    return total / (len(older_transforms) + 1)


def relative_residual(
    transform: np.ndarray, new_user: np.ndarray, new_item: np.ndarray, old_user: np.ndarray, old_item: np.ndarray
) -> float:
    """How much of the targets B_k misses, as a fraction of their energy, users and items weighing the
    same: 0.5·(Σ_u ||t_u − B z_u||² / Σ_u ||t_u||² + the same for items). 0 is perfect, 1 is B = 0.

    Why relative and per entity: users' vectors are several times shorter than items' here, so an
    absolute error is dominated by items while the user-level consumers are the most sensitive."""
    weight = transform.astype(np.float64)
    return mapped_relative_residual(
        (new_user.astype(np.float64) @ weight.T, new_item.astype(np.float64) @ weight.T), (old_user, old_item)
    )


def mapped_relative_residual(mapped: tuple[np.ndarray, np.ndarray], old: tuple[np.ndarray, np.ndarray]) -> float:
    """:func:`relative_residual` of vectors already mapped (by any map, e.g. a non-linear adapter)."""
    parts = []
    for m, t in zip(mapped, old, strict=True):
        if len(m):
            t64 = t.astype(np.float64)
            parts.append(float(((t64 - m.astype(np.float64)) ** 2).sum() / max((t64**2).sum(), 1e-30)))
    return float(np.mean(parts)) if parts else 0.0


def refit_transform(
    transform: np.ndarray,
    new: tuple[np.ndarray, np.ndarray],
    old: tuple[np.ndarray, np.ndarray],
    older_transforms: Sequence[np.ndarray] = (),
    *,
    ridge: float = 1e-6,
) -> tuple[np.ndarray, float, float]:
    """(B, objective before, objective after): the least-squares B_k if it lowers the objective on
    these embeddings, else ``transform`` unchanged -- a refit never makes the alignment worse."""
    before = alignment_objective(transform, *new, *old, older_transforms)
    fitted = least_squares_transform(*new, *old, ridge=ridge)
    after = alignment_objective(fitted, *new, *old, older_transforms)
    if after < before:
        return fitted, before, after
    return np.asarray(transform, dtype=np.float32), before, before
