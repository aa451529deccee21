"""The own-model setting's versions, as lambda_curve.py and query_mapping.py train and publish them.

``examples/own_model.py``'s product encoder at three versions (dims 16, 24, 32; 3,000 / 4,000 /
5,000 products; ``epochs``, 2x, 3x epochs): version k > 0 is trained jointly with B_k
(``training.BackwardCompatibility`` at ``lam``) against what the catalog holds, then published
with the vectors of the rows its benchmark serves. One place, so the two benchmarks' versions are
the same models for the same (λ, seed).
"""

from __future__ import annotations

import time

import numpy as np
import torch
from own_model import ENTITY, FAMILY, train_version

from training import BackwardCompatibility

SIZES, DIMS = [3000, 4000, 5000], [16, 24, 32]


def fit_version(catalog, features, category, k: int, *, lam: float, seed: int, epochs: int):
    """Version ``k`` trained on its first SIZES[k] products: (model, its BackwardCompatibility --
    None at version 0 --, training seconds)."""
    n, dim = SIZES[k], DIMS[k]
    bc = None if k == 0 else BackwardCompatibility.from_catalog(catalog, FAMILY, new_dim=dim, lam=lam)
    start = time.perf_counter()
    model, _ = train_version(
        features[:n], category[:n], np.arange(n, dtype=np.int64), dim, epochs * (k + 1), bc, seed=100 * seed + k
    )
    return model, bc, time.perf_counter() - start


def embed(model, features, rows: np.ndarray) -> np.ndarray:
    """The model's embeddings of ``rows`` (product ids are row numbers)."""
    with torch.no_grad():
        return model(torch.from_numpy(features[rows]))[0].numpy()


def publish(catalog, bc, rows: np.ndarray, z: np.ndarray) -> None:
    """Version 0 as a first publish, a later version with its B_k through its BackwardCompatibility."""
    if bc is None:
        catalog.publish(FAMILY, ids=rows, vectors=z, entity=ENTITY)
    else:
        bc.publish(catalog, {FAMILY: (rows, z)})
