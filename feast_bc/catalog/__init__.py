"""The catalog: a directory holding every embedding family's manifest and artifacts.

:class:`Catalog` is the one handle on it. Reading, verifying and composing are its own
(:class:`~feast_bc.catalog.reader.CatalogReader`); every change goes through a writer with one
job, and the methods below are their entry points:

* :mod:`~feast_bc.catalog.publishing` -- :meth:`Catalog.publish` (validate everything in memory,
  write content-addressed artifacts, then replace the manifest atomically);
* :mod:`~feast_bc.catalog.maintenance` -- :meth:`Catalog.retire`, :meth:`Catalog.set_serving`,
  :meth:`Catalog.drop_family`; :mod:`~feast_bc.catalog.garbage` -- :meth:`Catalog.collect_garbage`.

Where the files are: :mod:`~feast_bc.catalog.layout`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from feast_bc.catalog.garbage import GarbageCollector
from feast_bc.catalog.layout import ARTIFACTS_DIRNAME, CATALOG_DIRNAME, DROPPED_DIRNAME, LOCKS_DIRNAME
from feast_bc.catalog.maintenance import Maintenance
from feast_bc.catalog.publishing import Publisher, PublishRequest
from feast_bc.catalog.reader import CatalogReader
from feast_bc.gate_records import GateDecision, GateFile
from feast_bc.manifest import EntitySpec, FamilyManifest, VersionRecord
from feast_bc.publish_gate import write_gate_file
from feast_bc.registries import RepoRegistries
from feast_bc.transforms import BackwardTransform

__all__ = ["ARTIFACTS_DIRNAME", "CATALOG_DIRNAME", "DROPPED_DIRNAME", "LOCKS_DIRNAME", "Catalog", "PublishRequest"]


class Catalog(CatalogReader):
    """Families of versioned embeddings stored under one directory."""

    def writing(self):
        """Context around a change that is not one family's (the publish gate's limits): nothing on a
        local catalog; a remote one pulls before and pushes after (:mod:`feast_bc.catalog.remote`)."""
        return contextlib.nullcontext()

    def set_gate_limits(self, limits: GateFile | None) -> Path:
        """Replace the publish gate's limits file (None removes it) (:func:`~feast_bc.publish_gate.write_gate_file`)."""
        with self.writing():
            return write_gate_file(self.root, limits)

    def publish(
        self,
        family: str,
        *,
        ids,
        vectors,
        transform: BackwardTransform | np.ndarray | None = None,
        entity: EntitySpec | Mapping | None = None,
        metrics: Mapping[str, float] | None = None,
        expected_version: int | None = None,
        description: str = "",
        force: bool = False,
    ) -> VersionRecord:
        """Publish the next version of ``family``: its embeddings for all entities and B_{k+1}
        (:class:`~feast_bc.catalog.publishing.PublishRequest` says what each argument is). A version
        that breaks the publish gate's limits (:mod:`feast_bc.publish_gate`) is refused with
        :class:`~feast_bc.errors.PublishRefusedError` unless ``force``; the decision is recorded."""
        request = PublishRequest(family, ids, vectors, transform, entity, metrics, expected_version, description)
        return Publisher(self).publish([request], force=force)[0]

    def publish_all(self, requests: Sequence[PublishRequest], *, force: bool = False) -> list[VersionRecord]:
        """Publish the next version of several families together (e.g. users and items sharing one
        B_k): every family is validated and judged by the gate before any is written, so a refusal
        or an invalid family leaves all of them unchanged (:meth:`Publisher.publish
        <feast_bc.catalog.publishing.Publisher.publish>`, the one publish path)."""
        return Publisher(self).publish(list(requests), force=force)

    def check_publish(
        self,
        family: str,
        *,
        ids,
        vectors,
        transform: BackwardTransform | np.ndarray | None = None,
        entity: EntitySpec | Mapping | None = None,
        metrics: Mapping[str, float] | None = None,
        expected_version: int | None = None,
    ) -> GateDecision | None:
        """The publish gate's decision on this publish, without writing (None: no limits declared);
        invalid input raises as :meth:`publish` would (:meth:`~feast_bc.catalog.publishing.Publisher.check`)."""
        request = PublishRequest(family, ids, vectors, transform, entity, metrics, expected_version)
        return Publisher(self).check(request)

    def retire(self, family: str, version: int) -> FamilyManifest:
        """Stop serving ``version`` (:meth:`Maintenance.retire <feast_bc.catalog.maintenance.Maintenance.retire>`)."""
        return Maintenance(self).retire(family, version)

    def set_serving(self, family: str, version: int, mode: str) -> FamilyManifest:
        """Serve ``version`` 'stored' or 'on_read' (:meth:`~feast_bc.catalog.maintenance.Maintenance.set_serving`)."""
        return Maintenance(self).set_serving(family, version, mode)

    def drop_family(self, family: str, *, undo: bool = False) -> dict | None:
        """Remove ``family`` from serving on purpose (returns its tombstone); ``undo`` brings it back
        (:meth:`~feast_bc.catalog.maintenance.Maintenance.drop_family`)."""
        if undo:
            Maintenance(self).undo_drop(family)
            return None
        return Maintenance(self).drop_family(family)

    def collect_garbage(
        self, family: str, *, prune: bool = False, dry_run: bool = False, registries: RepoRegistries | None = None
    ) -> list[Path]:
        """Delete orphaned artifacts and, with ``prune``, what no served version needs any more
        (:meth:`~feast_bc.catalog.garbage.GarbageCollector.collect_garbage`)."""
        return GarbageCollector(self).collect_garbage(family, prune=prune, dry_run=dry_run, registries=registries)
