"""Queries from a new model into an old version's space: for retrievers whose index stays on version j.

A similar-items service or candidate retriever built on version j keeps a vector index of version-j
vectors. When the embedding team ships version k, re-embedding and re-indexing the corpus is what
vector databases do (a second collection, then an alias swap); the cheaper path -- Drift-Adapter's
setting -- keeps the index and maps each *query*, embedded by the new model, into version j.
:class:`QueryMapper` does that with the very matrix materialization applies to version j's pin
(B_{j+1}o...oB_k composed once, every artifact verified), so a mapped query lives where the pin's
values live. ``benchmarks/query_mapping.py`` measures its recall against searching with the query's
true version-j vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from feast_bc.catalog import Catalog
from feast_bc.errors import DimensionMismatchError
from feast_bc.transforms import as_matrix


class QueryMapper:
    """Maps vectors of version ``source`` (default: the latest) of ``family`` into version ``target``."""

    def __init__(self, where: str | Path | Catalog, family: str, target: int, source: int | None = None):
        self.catalog = Catalog.locate(where)
        self.family = family
        self.manifest = self.catalog.verify(family)
        self.source = self.manifest.latest_version if source is None else source
        self.target = target
        self.in_dim = self.manifest.version(self.source).dim
        self.out_dim = self.manifest.version(target).dim
        self.transform = (
            None if self.source == target else self.catalog.composed(family, self.source, target, self.manifest)
        )

    def map(self, vectors) -> np.ndarray:
        """(n, d_source) query vectors -> (n, d_target) float32 (one vector: shape (d_source,) -> (d_target,))."""
        single = np.ndim(vectors) == 1
        mat = as_matrix(np.atleast_2d(np.asarray(vectors)), what="query vectors")
        if mat.shape[1] != self.in_dim:
            raise DimensionMismatchError(
                f"{self.family}: query vectors have dimension {mat.shape[1]}, version {self.source} has {self.in_dim}"
            )
        out = mat if self.transform is None else self.transform.transform(mat)
        return out[0] if single else out
