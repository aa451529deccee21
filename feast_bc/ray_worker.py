"""What runs inside a Ray task of :class:`feast_bc.ray_engine.BCRayEngine`: one slice of a unit.

The driver puts a :class:`SliceContext` per unit in Ray's object store; each task rebuilds the
unit's views from their protobufs, takes the worker's cached repo config, online store and (lazy)
registry, and runs :func:`feast_bc.materialize.run_pass` over its row groups, gated on the latest
file still being the one the driver verified. Kept apart from the engine so that the driver's
scheduling and what a worker process imports and caches read separately.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from feast_bc.catalog import Catalog
from feast_bc.catalog.object_store import is_uri
from feast_bc.errors import ChecksumMismatchError
from feast_bc.materialize import MaterializationUnit, PassSettings, registry_file_reader, run_pass


@dataclass(frozen=True)
class SliceContext:
    """What every slice of one unit needs; put in Ray's object store once per unit. Feast objects
    travel as Feast's own Ray engine ships them: the repo config dill-pickled, each view as its
    protobuf (with its window); the catalog by its location, the manifest the driver verified. A
    catalog on object storage is read from the worker's own mirror (:func:`_slice_catalog`), so a
    worker node needs neither the repo nor the driver's files."""

    what: str
    repo_config: bytes
    views: tuple[tuple[bytes, datetime | None, datetime | None], ...]
    catalog_location: str  # a local catalog's root, or a remote catalog's URI
    manifest: Any
    path: str  # the latest file: the driver's path (local), its key in the catalog (remote)
    file_state: tuple[int, int]  # (size, mtime_ns) the driver verified (local catalogs)
    settings: PassSettings
    project: str = ""
    pushes: Any = None  # the unit's pushed rows (PushedRows), read on the driver under its push lock


def run_slice(context: SliceContext, row_groups: tuple[int, ...]) -> list[int]:
    """The Ray task: :func:`~feast_bc.materialize.run_pass` over ``row_groups`` of the unit's latest
    file, gated on the file still being the one the driver verified; the rows written per view."""
    from feast.feature_view import FeatureView
    from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto

    repo_config, online_store = _store(context.repo_config)
    spans = []
    for proto_bytes, start, end in context.views:
        proto = FeatureViewProto()
        proto.ParseFromString(proto_bytes)
        spans.append((FeatureView.from_proto(proto, skip_udf=True), start, end))
    catalog, path, file_state = _slice_catalog(context)
    verifier = "this worker" if is_uri(context.catalog_location) else "the driver"
    first = spans[0][0]
    unit = MaterializationUnit.over(
        spans,
        project=context.project,
        catalog=catalog,
        manifest=context.manifest,
        path=path,
        served_file=registry_file_reader(repo_config, _worker_registry(repo_config), first, context.project),
        pushes=context.pushes,
    )

    def still_verified() -> None:
        st = os.stat(path)
        if (st.st_size, st.st_mtime_ns) != file_state:
            raise ChecksumMismatchError(
                f"{context.what}: {path} changed after {verifier} verified its checksum "
                f"(size, mtime_ns {file_state} -> {(st.st_size, st.st_mtime_ns)}); nothing of this "
                "slice was written"
            )

    return run_pass(
        repo_config, online_store, unit, context.settings, row_groups=list(row_groups), before_write=still_verified
    )


_remote_catalogs: dict[str, Catalog] = {}


def _slice_catalog(context: SliceContext) -> tuple[Catalog, Path, tuple[int, int]]:
    """(catalog, latest file, its verified (size, mtime_ns)) for a slice. A local catalog is the
    driver's, verified by the driver. A remote one is this process's mirror of it: the family is
    pulled once (the latest file and the transforms downloaded once per node, whose workers share
    the mirror) and verified against the driver's manifest once per process (hashes are cached)."""
    if not is_uri(context.catalog_location):
        return Catalog(context.catalog_location), Path(context.path), context.file_state
    from feast_bc.catalog.remote import RemoteCatalog

    family = context.manifest.family
    with _stores_lock:
        catalog = _remote_catalogs.get(context.catalog_location)
        if catalog is None:
            catalog = RemoteCatalog(context.catalog_location, families=[family])
            _remote_catalogs[context.catalog_location] = catalog
        path = catalog.root / context.path
        if not path.is_file():
            catalog.pull([family])
    catalog.verify(family, context.manifest)
    st = os.stat(path)
    return catalog, path, (st.st_size, st.st_mtime_ns)


class _WorkerRegistry:
    """The profile's registry inside a worker, built on first use: a slice reads it only while the
    catalog names another latest than its file (:class:`~feast_bc.latest_guard.LatestGuard`)."""

    def __init__(self, repo_config):
        self.repo_config = repo_config
        self._registry = None

    def get_any_feature_view(self, name: str, project: str, allow_cache: bool = False):
        if self._registry is None:
            from feast import FeatureStore

            self._registry = FeatureStore(repo_path=str(self.repo_config.repo_path), config=self.repo_config).registry
        return self._registry.get_any_feature_view(name, project, allow_cache=allow_cache)


_stores: dict[str, tuple] = {}
_stores_lock = threading.Lock()
_registries: dict[int, _WorkerRegistry] = {}


def _worker_registry(repo_config) -> _WorkerRegistry:
    """One lazy registry per repo config in a worker (:func:`_store` keeps one config per profile)."""
    with _stores_lock:
        return _registries.setdefault(id(repo_config), _WorkerRegistry(repo_config))


def _store(config_bytes: bytes) -> tuple:
    """(repo config, online store) of a pickled repo config, once per worker process: a worker
    running many slices reuses the store's client and its connection pool."""
    key = hashlib.sha256(config_bytes).hexdigest()
    with _stores_lock:
        if key not in _stores:
            import dill
            from feast.infra.passthrough_provider import PassthroughProvider

            repo_config = dill.loads(config_bytes)
            _stores[key] = (repo_config, PassthroughProvider(repo_config).online_store)
        return _stores[key]
