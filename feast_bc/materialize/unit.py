"""What one pass materializes: the unit of work both engines plan the same way.

A unit is one or more feast_bc views of one family that read the same latest file through the same
catalog, each with its own time window and dimension. :func:`plan_units` groups a ``feast
materialize``'s tasks into units (all requested views of a family together when ``fused``, else
one view each); :func:`prepare_unit` resolves what the pass needs and refuses what no pass may
write (a catalog older than the registry's views). :class:`feast_bc.engine.BCEngine` runs each
unit in one pass; :class:`feast_bc.ray_engine.BCRayEngine` cuts it into row-group slices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from feast.infra.offline_stores.file_source import FileSource

from feast_bc.catalog import Catalog
from feast_bc.catalog.location import config_location
from feast_bc.catalog.object_store import is_uri
from feast_bc.catalog.push_log import PushedRows
from feast_bc.errors import CatalogRollbackError
from feast_bc.machine_dirs import mirror_file
from feast_bc.manifest import FamilyManifest
from feast_bc.naming import TAG_DERIVED_FROM, TAG_FAMILY, TAG_LATEST, TAG_PUBLISHED_AT, TAG_VERSION
from feast_bc.online_writers.target import ViewTarget

logger = logging.getLogger(__name__)


class ViewWindow(NamedTuple):
    """One view of the pass: the version it serves and its materialization window (None = open)."""

    version: int
    start: datetime | None
    end: datetime | None

    def holds(self, event_time: datetime) -> bool:
        return (self.start is None or self.start <= event_time) and (self.end is None or event_time <= self.end)


#: The file the profile's registry serves a view from now (None: unknown, or no longer served).
ServedFile = Callable[[], Path | None]


@dataclass(frozen=True)
class MaterializationUnit:
    """The views of one pass and everything the pass reads (see the module docstring).

    ``views[i]`` is materialized over ``windows[i]`` at ``dims[i]`` dimensions; the writer's and the
    stream's view indices are these positions. ``served_file`` reads afresh which latest file the
    profile's registry serves (:class:`~feast_bc.latest_guard.LatestGuard`)."""

    project: str
    catalog: Catalog
    manifest: FamilyManifest
    path: Path
    views: tuple
    windows: tuple[ViewWindow, ...]
    dims: tuple[int, ...]
    served_file: ServedFile | None = None
    pushes: PushedRows | None = None
    """What was pushed for the version of ``path`` (:mod:`feast_bc.catalog.push_log`): the pass
    writes these entities' pushed vectors instead of their published ones."""

    @classmethod
    def over(
        cls,
        spans,
        *,
        project: str,
        catalog: Catalog,
        manifest: FamilyManifest,
        path: Path,
        served_file: ServedFile | None,
        pushes: PushedRows | None,
    ) -> MaterializationUnit:
        """The unit of ``spans`` -- (feature view, window start, window end) per view -- with each
        view's version read from its tag and its dim from ``manifest``: how both the driver
        (:func:`prepare_unit`) and a Ray slice (:mod:`feast_bc.ray_worker`) build one."""
        views = tuple(view for view, _, _ in spans)
        windows = tuple(ViewWindow(int(view.tags[TAG_VERSION]), utc(start), utc(end)) for view, start, end in spans)
        return cls(
            project=project,
            catalog=catalog,
            manifest=manifest,
            path=path,
            views=views,
            windows=windows,
            dims=tuple(manifest.version(w.version).dim for w in windows),
            served_file=served_file,
            pushes=pushes,
        )

    @property
    def family(self) -> str:
        return self.manifest.family

    @property
    def what(self) -> str:
        """The unit in messages: ``family 'item_embedding' (item_embedding_bc0, ...)``."""
        return f"family {self.family!r} ({', '.join(v.name for v in self.views)})"

    @property
    def view_targets(self) -> list[ViewTarget]:
        """(feature view, dim) per view: what the writers are built for."""
        return [ViewTarget(view, dim) for view, dim in zip(self.views, self.dims, strict=True)]


def plan_units(repo_config, registry, tasks: list, *, fused: bool) -> tuple[list[tuple[list[int], Path]], dict]:
    """Group the feast_bc views among ``tasks`` into units: (task indices, latest file) per unit --
    views of one project, family and latest file together when ``fused``, else one each --
    and {task index: error} for views whose family or latest file cannot be told. Tasks of views
    that are not feast_bc views are in neither (Feast's local engine takes them)."""
    units: dict[tuple, tuple[list[int], Path]] = {}
    errors: dict[int, Exception] = {}
    for i, task in enumerate(tasks):
        view = task.feature_view
        if not view.tags.get(TAG_FAMILY):
            continue
        try:
            path = latest_file(repo_config, view, registry, task.project)
        except Exception as exc:  # noqa: BLE001 - the view's job reports it
            errors[i] = exc
            continue
        key = (task.project, view.tags[TAG_FAMILY], str(path.resolve()))
        if not fused:
            key += (i,)
        units.setdefault(key, ([], path))[0].append(i)
    return list(units.values()), errors


def prepare_unit(repo_config, registry, tasks: list, path: Path) -> MaterializationUnit:
    """The unit of ``tasks`` (views of one family reading ``path``), with the refusals every pass
    makes before reading: an unknown family or version, a view registered from a newer latest than
    the catalog holds (:class:`CatalogRollbackError`)."""
    first = tasks[0].feature_view
    catalog = bc_catalog(repo_config)
    manifest = catalog.manifest(first.tags[TAG_FAMILY])
    for task in tasks:
        refuse_rollback(task.feature_view, manifest)
    # the pushes of the version the registry's latest view reads (the catalog's latest, or the one
    # before while `feast apply` has not run since a publish)
    file_version = int(first.tags.get(TAG_LATEST, manifest.latest_version))
    return MaterializationUnit.over(
        [(task.feature_view, task.start_time, task.end_time) for task in tasks],
        project=tasks[0].project,
        catalog=catalog,
        manifest=manifest,
        path=path,
        served_file=registry_file_reader(repo_config, registry, first, tasks[0].project),
        pushes=catalog.pushed(manifest.family, manifest, version=file_version),
    )


@contextmanager
def pushes_held_off(repo_config, tasks: list):
    """While a materialization runs, no push of its families writes the online store on this
    machine (:meth:`~feast_bc.catalog.reader.CatalogReader.online_lock`, shared): taken before the
    pass reads the push log, so every push is either in what the pass writes or written after it."""
    families = sorted({t.feature_view.tags[TAG_FAMILY] for t in tasks if t.feature_view.tags.get(TAG_FAMILY)})
    if not families:
        yield
        return
    try:
        catalog = bc_catalog(repo_config)
    except Exception as exc:  # noqa: BLE001 - the pass reports why the catalog cannot be opened
        logger.debug("pushes not held off: %s", exc)
        yield
        return
    with ExitStack() as stack:
        for family in families:
            stack.enter_context(catalog.online_lock(family, shared=True))
        yield


def latest_file(repo_config, view, registry, project) -> Path:
    """The parquet file the registry's latest view of this family reads (not the catalog's newest)."""
    source_view = view
    if view.tags.get(TAG_DERIVED_FROM):
        source_view = registry.get_any_feature_view(view.tags[TAG_DERIVED_FROM], project)
    source = source_view.batch_source
    if not isinstance(source, FileSource):
        raise TypeError(f"{source_view.name}: feast_bc views read a FileSource, got {type(source).__name__}")
    if is_uri(source.path):
        return mirror_file(source.path)  # a catalog on object storage: its mirror on this machine
    return Path(FileSource.get_uri_for_file_path(repo_config.repo_path, source.path))


def registry_file_reader(repo_config, registry, view, project) -> ServedFile:
    """A function returning the latest file the registry serves ``view`` from *now* (read afresh;
    None once the view is gone): what :class:`~feast_bc.latest_guard.LatestGuard` compares with."""

    def served_file() -> Path | None:
        try:
            fresh = registry.get_any_feature_view(view.name, project, allow_cache=False)
            return latest_file(repo_config, fresh, registry, project)
        except Exception as exc:  # noqa: BLE001 - a view no longer registered serves nothing
            logger.debug("%s: not served by the registry now (%s)", view.name, exc)
            return None

    return served_file


#: The catalog a running materialization opened (:func:`one_catalog`), with the config it is for.
_OPENED: ContextVar[tuple[object, Catalog] | None] = ContextVar("feast_bc_opened_catalog", default=None)


def bc_catalog(repo_config) -> Catalog:
    """The catalog of the repo being materialized (where its ``feast_bc:`` block says; never a path
    the registry recorded, so a moved or mounted repo reads its own) -- the one :func:`one_catalog`
    opened for this materialization, if any."""
    opened = _OPENED.get()
    if opened is not None and opened[0] is repo_config:
        return opened[1]
    return Catalog.for_repo(repo_config.repo_path, config_location(repo_config))


@contextmanager
def one_catalog(repo_config):
    """Inside the block every :func:`bc_catalog` of ``repo_config`` is the same opened catalog: the
    probe, the push lock and every unit of one ``feast materialize`` share it (a catalog on object
    storage is listed once per run, not once per step). Opening errors are left to the pass."""
    try:
        catalog = Catalog.for_repo(repo_config.repo_path, config_location(repo_config))
    except Exception as exc:  # noqa: BLE001 - each step reports it where it opens the catalog
        logger.debug("catalog not opened once for the run: %s", exc)
        yield
        return
    token = _OPENED.set((repo_config, catalog))
    try:
        yield
    finally:
        _OPENED.reset(token)


def refuse_rollback(view, manifest) -> None:
    """The registry's view was generated from a newer latest than the catalog now holds."""
    registered = view.tags.get(TAG_LATEST)
    stamp = view.tags.get(TAG_PUBLISHED_AT)
    newer = registered is not None and int(registered) > manifest.latest_version
    if stamp and not newer:
        try:
            newer = datetime.fromisoformat(stamp) > manifest.latest.created_at
        except ValueError:
            logger.warning(
                "view %s: unreadable %s tag %r; comparing version numbers only", view.name, TAG_PUBLISHED_AT, stamp
            )
    if newer:
        raise CatalogRollbackError(
            f"family {manifest.family!r}: view {view.name} was registered from version {registered} (published "
            f"{stamp or '?'}), but the catalog's latest is version {manifest.latest_version} (published "
            f"{manifest.latest.created_at.isoformat()}): the catalog is older than what Feast serves (a manifest "
            "restored from an old backup?). Nothing was written; put back the newest manifest"
        )


def utc(ts: datetime | None) -> datetime | None:
    """``ts`` as an aware UTC datetime (Feast hands naive UTC or aware times)."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
