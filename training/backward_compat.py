"""BC-Aligner for any PyTorch model: the alignment term a team adds to its own training loop.

Why a module and not a strategy: an embedding team has its own model (a two-tower retriever, a
text or image encoder, matrix factorisation) and its own loop. What it needs from the paper is the
alignment term λ·L_align(B_k z_k, z_{k-1}) with a trainable B_k and the frozen older B's (multi-step
as in BC-Aligner), matched to its batches *by entity id*, and a way to publish the result. The five
lines it adds to its loop::

    bc = BackwardCompatibility.from_catalog("feature_repo", "item_embedding", new_dim=128)
    optimizer = torch.optim.Adam([*model.parameters(), *bc.parameters()])   # B_k trains with M_k
    loss = task_loss + bc.loss(batch_ids, z_batch)                          # in every step
    ...
    bc.publish("feature_repo", {"item_embedding": (all_ids, all_vectors)})  # z_k and B_k, via the catalog

The loss of a batch is the paper's: the residual d = z_{k-1} - B_k z_k of every row whose id has a
version-(k-1) embedding, mean over rows and dimensions, also pushed through B_{k-1}, ..., B_{j+1}
into every older space j and averaged over the k spaces (``multi_step``; single-step otherwise).
Rows whose id is new since version k-1 have no target: they are excluded and counted
(:attr:`BackwardCompatibility.excluded`). On the same tensors this is exactly
:func:`training.objectives.multi_step_alignment_loss` (tests/test_backward_compat.py checks it).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from feast_bc import Catalog
from feast_bc.errors import RetiredVersionError
from training.errors import ConfigError, DatasetError
from training.publish import publish_together

log = logging.getLogger(__name__)

#: λ of the paper's experiments (and of the built-in joint strategies).
DEFAULT_LAMBDA = 16.0

Arrays = tuple[np.ndarray, np.ndarray]


class _Targets:
    """One family's version-(k-1) embeddings, looked up by id."""

    def __init__(self, family: str, ids, vectors):
        ids = np.asarray(ids)
        vectors = np.asarray(vectors, dtype=np.float32)
        if ids.ndim != 1 or vectors.ndim != 2 or len(ids) != len(vectors):
            raise DatasetError(
                f"{family}: ids must be 1-D and vectors (n, d) with n = len(ids); got {ids.shape}, {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            raise DatasetError(f"{family}: the previous version's vectors hold NaN or infinite values")
        index = pd.Index(ids)
        if not index.is_unique:
            raise DatasetError(f"{family}: the previous version's ids are not unique")
        self.family, self.index, self.dim = family, index, vectors.shape[1]
        self.vectors = torch.from_numpy(vectors.copy())  # its own memory: arrays read from parquet are read-only

    def rows(self, ids) -> np.ndarray:
        """Row of each id in the targets, -1 where the id is new."""
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        ids = np.asarray(ids)
        if ids.dtype.kind != self.index.dtype.kind and not (ids.dtype.kind in "OUS" and self.index.dtype.kind in "OUS"):
            raise DatasetError(
                f"{self.family}: batch ids are {ids.dtype} but the previous version's ids are {self.index.dtype}"
            )
        return self.index.get_indexer(ids)


def frozen_chain(catalog: Catalog, family: str, manifest=None) -> list[np.ndarray]:
    """B_1, ..., B_latest of ``family`` (version order) as published, starting above the newest
    version whose B was pruned (older versions retired: nothing serves them, nothing to align to)."""
    manifest = manifest or catalog.manifest(family)
    chain: list[np.ndarray] = []
    for v in range(manifest.latest_version, 0, -1):
        try:
            chain.insert(0, catalog.transform(family, v, manifest).weight)
        except RetiredVersionError:
            break
    return chain


class BackwardCompatibility(nn.Module):
    """λ·L_align for a version k of one or more families that share B_k (users and items in the paper).

    Build it with :meth:`from_catalog` (the previous version's embeddings and the frozen older B's
    as the catalog serves them) or :meth:`from_arrays`. It owns the trainable B_k (``nn.Linear``
    without bias, shape (D_{k-1}, D_k)); add :meth:`parameters` to the optimizer of the model.
    """

    def __init__(
        self,
        previous: Mapping[str, Arrays],
        *,
        new_dim: int,
        older_transforms: Sequence[np.ndarray] = (),
        version: int | None = None,
        lam: float = DEFAULT_LAMBDA,
        multi_step: bool = True,
        initial: np.ndarray | None = None,
    ):
        super().__init__()
        if not previous:
            raise ConfigError("BackwardCompatibility needs the previous version's embeddings of at least one family")
        if lam < 0 or not np.isfinite(lam):
            raise ConfigError(f"lam must be a finite number >= 0; got {lam}")
        self.targets = {family: _Targets(family, ids, vectors) for family, (ids, vectors) in previous.items()}
        dims = {t.dim for t in self.targets.values()}
        if len(dims) != 1:
            raise DatasetError(f"families sharing B_k must have one previous dimension; got {sorted(dims)}")
        self.old_dim, self.new_dim = dims.pop(), int(new_dim)
        older = [np.asarray(w, dtype=np.float32) for w in older_transforms]
        expected = self.old_dim
        for w in reversed(older):  # B_{k-1} maps D_{k-1} -> D_{k-2}, and so on down
            if w.ndim != 2 or w.shape[1] != expected:
                raise DatasetError(f"older transforms do not chain from dimension {expected}: got shape {w.shape}")
            expected = w.shape[0]
        self.version = len(older) + 1 if version is None else int(version)
        self.lam, self.multi_step = float(lam), multi_step
        self.transform = nn.Linear(self.new_dim, self.old_dim, bias=False)
        if initial is not None:
            if np.shape(initial) != (self.old_dim, self.new_dim):
                raise DatasetError(
                    f"initial B_k must have shape ({self.old_dim}, {self.new_dim}); got {np.shape(initial)}"
                )
            with torch.no_grad():
                self.transform.weight.copy_(torch.as_tensor(np.asarray(initial, dtype=np.float32)))
        for i, target in enumerate(self.targets.values()):
            self.register_buffer(f"target_{i}", target.vectors)
        for i, w in enumerate(older):
            self.register_buffer(f"older_{i}", torch.from_numpy(w))
        self._older_count = len(older)
        self.matched, self.excluded = 0, 0

    # ------------------------------------------------------------------------------ building
    @classmethod
    def from_arrays(cls, ids, vectors, *, family: str = "embedding", **kwargs) -> BackwardCompatibility:
        """One family from arrays: the previous version's ids and (n, D_{k-1}) vectors."""
        return cls({family: (ids, vectors)}, **kwargs)

    @classmethod
    def from_catalog(
        cls, catalog: Catalog | str | Path, families: str | Sequence[str], *, new_dim: int, **kwargs
    ) -> BackwardCompatibility:
        """The families' latest published version as targets -- with what was pushed into it since its
        publish applied (:mod:`feast_bc.pusher`), i.e. what every pin serves -- and their chains B_{k-1}, ..., B_1 (down to
        the oldest version still holding its B) as the frozen older transforms. The families must be at
        the same version and hold the same older B's, as :func:`training.publish_output` publishes them."""
        catalog = Catalog.locate(catalog)
        families = [families] if isinstance(families, str) else list(families)
        previous, chains, versions = {}, [], set()
        for family in families:
            manifest = catalog.manifest(family)  # clear error for an unknown family
            previous[family] = catalog.latest_embeddings(family, manifest=manifest)
            versions.add(manifest.latest_version)
            chains.append(frozen_chain(catalog, family, manifest))
        if len(versions) != 1:
            raise DatasetError(f"families {families} are at different versions {sorted(versions)}; B_k is shared")
        if any(
            len(c) != len(chains[0]) or any(not np.array_equal(a, b) for a, b in zip(c, chains[0], strict=True))
            for c in chains
        ):
            raise DatasetError(f"families {families} hold different older transforms; build one module per family")
        return cls(previous, new_dim=new_dim, older_transforms=chains[0], version=versions.pop() + 1, **kwargs)

    # ------------------------------------------------------------------------------ training
    def older(self) -> list[torch.Tensor]:
        """B_1, ..., B_{k-1} as frozen tensors on the module's device (version order)."""
        return [getattr(self, f"older_{i}") for i in range(self._older_count)]

    def loss(self, ids, z_new: torch.Tensor, family: str | None = None) -> torch.Tensor:
        """λ·L_align of one batch: ``ids`` (any order, repeats allowed) and their version-k vectors
        ``z_new`` (n, D_k). Ids new since version k-1 are excluded (counted in :attr:`excluded`)."""
        name, target = self._family(family)
        if z_new.ndim != 2 or z_new.shape[1] != self.new_dim:
            raise DatasetError(f"z_new must be (n, {self.new_dim}); got {tuple(z_new.shape)}")
        rows = target.rows(ids)
        if len(rows) != len(z_new):
            raise DatasetError(f"{len(rows)} ids for {len(z_new)} vectors")
        known = rows >= 0
        self.matched += int(known.sum())
        self.excluded += int((~known).sum())
        if not known.any():
            return z_new.sum() * 0.0  # keeps the graph; nothing to align in this batch
        buffer = getattr(self, f"target_{list(self.targets).index(name)}")
        keep = torch.from_numpy(np.flatnonzero(known)).to(z_new.device)
        residual = buffer[torch.from_numpy(rows[known]).to(buffer.device)] - self.transform(z_new[keep])
        total = residual.pow(2).mean()
        if self.multi_step:
            for weight in reversed(self.older()):
                residual = residual @ weight.T
                total = total + residual.pow(2).mean()
            total = total / (self._older_count + 1)
        return self.lam * total

    def _family(self, family: str | None) -> tuple[str, _Targets]:
        if family is None:
            if len(self.targets) != 1:
                raise ConfigError(f"name the family: this module aligns {list(self.targets)}")
            family = next(iter(self.targets))
        if family not in self.targets:
            raise ConfigError(f"unknown family {family!r}; this module aligns {list(self.targets)}")
        return family, self.targets[family]

    def matrix(self) -> np.ndarray:
        """B_k as it will be published: (D_{k-1}, D_k) float32."""
        return self.transform.weight.detach().cpu().numpy().astype(np.float32)

    # ------------------------------------------------------------------------------ publishing
    def publish(
        self,
        catalog: Catalog | str | Path,
        embeddings: Mapping[str, Arrays],
        *,
        metrics: Mapping[str, float] | None = None,
        description: str = "",
        force: bool = False,
    ) -> dict:
        """Publish version k of every family (all its entities' vectors) with this B_k; returns
        ``{family: feast_bc.manifest.VersionRecord}``. ``expected_version`` guards against a concurrent publisher, and
        the repo's publish gate (if declared) judges every family before the first is written;
        ``force`` publishes past it (recorded in the manifest)."""
        catalog = Catalog.locate(catalog)
        unknown = set(embeddings) - set(self.targets)
        if unknown or not embeddings:
            raise ConfigError(
                f"publish the families this module aligned ({list(self.targets)}); got {sorted(embeddings)}"
            )
        weight = self.matrix()
        if not np.isfinite(weight).all():
            raise DatasetError("B_k holds NaN or infinite values; training diverged")
        entries = [
            (family, None, ids, np.asarray(vectors, dtype=np.float32), dict(metrics or {}))
            for family, (ids, vectors) in embeddings.items()
        ]
        publish_together(catalog, self.version, entries, weight, description=description, force=force)
        records = {family: catalog.manifest(family).version(self.version) for family in embeddings}
        if self.excluded:
            log.info(
                "B_%d trained on %d matched rows; %d rows had ids new since version %d",
                self.version,
                self.matched,
                self.excluded,
                self.version - 1,
            )
        return records
