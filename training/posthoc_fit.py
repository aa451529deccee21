"""Post-hoc backward transforms for models that cannot be retrained jointly.

A team publishes version k of an embedding it trained on its own; B_k is then fit on frozen
embeddings: the new vectors z_k and the previous version's z_{k-1} of the entities both hold
(matched by id; entities new in version k have no target). Four methods:

* ``least-squares`` (default) -- closed-form ridge least squares, exact and the fastest. For an
  unconstrained linear B it is also the optimum of the paper's *multi-step* loss: each older space
  measures the same residual through a fixed linear map, and least squares solves every output
  direction independently (training/backward_fit.py has the argument), so no separate closed-form
  multi-step method exists;
* ``procrustes`` -- the orthogonal B (equal dimensions only) closest in least squares: it keeps
  lengths and angles, so it cannot shrink what it does not explain (Drift-Adapter's baseline);
* ``sgd`` and ``sgd-multi-step`` -- the paper's Posthoc-Lin-SLoss / Posthoc-Lin-MLoss: Adam on
  mini-batches of the matched entities, the B with the lowest full-data MSE kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from training.backward_fit import least_squares_transform
from training.errors import DatasetError

FitMethod = Literal["least-squares", "procrustes", "sgd", "sgd-multi-step"]
FIT_METHODS: tuple[str, ...] = ("least-squares", "procrustes", "sgd", "sgd-multi-step")


def match_by_id(old_ids, new_ids) -> tuple[np.ndarray, np.ndarray]:
    """(rows in old, rows in new) of the ids present in both, in the new table's order."""
    old_ids, new_ids = np.asarray(old_ids), np.asarray(new_ids)
    if (old_ids.dtype.kind in "iu") != (new_ids.dtype.kind in "iu"):
        raise DatasetError(f"the new ids are {new_ids.dtype} but the previous version's are {old_ids.dtype}")
    index = pd.Index(old_ids)
    if not pd.Index(new_ids).is_unique:
        raise DatasetError("the new embeddings repeat ids; each entity must appear once")
    rows = index.get_indexer(new_ids)
    known = np.flatnonzero(rows >= 0)
    if len(known) == 0:
        raise DatasetError("no id of the new embeddings occurs in the previous version: nothing to fit B_k on")
    return rows[known], known


def procrustes_transform(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """The orthogonal B (D, D) minimising Σ ||B z - t||²: B = U Vᵀ from the SVD of Σ t zᵀ = U S Vᵀ."""
    if new.shape[1] != old.shape[1]:
        raise DatasetError(
            f"procrustes needs equal dimensions; the new version has {new.shape[1]}, the previous {old.shape[1]} "
            "(use least-squares)"
        )
    u, _, vt = np.linalg.svd(old.astype(np.float64).T @ new.astype(np.float64))
    return (u @ vt).astype(np.float32)


def sgd_transform(
    new: np.ndarray,
    old: np.ndarray,
    *,
    older_transforms: Sequence[np.ndarray] = (),
    multi_step: bool = False,
    epochs: int = 200,
    batch_size: int = 4096,
    learning_rate: float = 1e-3,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """The paper's post-hoc B: ``nn.Linear`` without bias trained by Adam on mini-batches of the matched
    entities (multi-step through ``older_transforms`` when asked); keeps the B with the lowest full MSE."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    z = torch.from_numpy(np.asarray(new, dtype=np.float32)).to(device)
    t = torch.from_numpy(np.asarray(old, dtype=np.float32)).to(device)
    older = [torch.from_numpy(np.asarray(w, dtype=np.float32)).to(device) for w in older_transforms]
    transform = nn.Linear(z.shape[1], t.shape[1], bias=False).to(device)
    optimizer = torch.optim.Adam(transform.parameters(), lr=learning_rate)
    best, best_weight = math.inf, None
    for _ in tqdm(range(epochs), desc="fit B (sgd)", disable=not progress, leave=False, unit="epoch"):
        order = torch.randperm(len(z), generator=generator).to(device)
        for start in range(0, len(z), batch_size):
            rows = order[start : start + batch_size]
            residual = t[rows] - transform(z[rows])
            loss = residual.pow(2).mean()
            if multi_step:
                for weight in reversed(older):
                    residual = residual @ weight.T
                    loss = loss + residual.pow(2).mean()
                loss = loss / (len(older) + 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            mse = float((t - transform(z)).pow(2).mean())
        if mse < best:
            best, best_weight = mse, transform.weight.detach().cpu().numpy().copy()
    return best_weight.astype(np.float32)


def fit_backward_transform(
    new: np.ndarray,
    old: np.ndarray,
    *,
    method: str = "least-squares",
    older_transforms: Sequence[np.ndarray] = (),
    ridge: float = 1e-6,
    **sgd_options,
) -> np.ndarray:
    """B_k (D_{k-1}, D_k) mapping the rows of ``new`` onto the same entities' rows of ``old``."""
    new, old = np.asarray(new), np.asarray(old)
    if new.ndim != 2 or old.ndim != 2 or len(new) != len(old):
        raise DatasetError(f"new and old must be (n, d) arrays of the same entities; got {new.shape} and {old.shape}")
    for name, array in (("new", new), ("previous", old)):
        if not np.isfinite(array).all():
            raise DatasetError(f"the {name} embeddings hold NaN or infinite values")
    if method == "least-squares":
        empty = (np.zeros((0, new.shape[1]), np.float32), np.zeros((0, old.shape[1]), np.float32))
        return least_squares_transform(new, empty[0], old, empty[1], ridge=ridge)
    if method == "procrustes":
        return procrustes_transform(new, old)
    if method in ("sgd", "sgd-multi-step"):
        return sgd_transform(
            new, old, older_transforms=older_transforms, multi_step=method == "sgd-multi-step", **sgd_options
        )
    raise DatasetError(f"unknown method {method!r}; choose one of {', '.join(FIT_METHODS)}")
