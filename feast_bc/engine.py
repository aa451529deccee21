"""A Feast batch engine that materializes feast_bc views in bulk and everything else as usual.

Configure it in ``feature_store.yaml``::

    batch_engine:
      type: feast_bc.engine.BCEngine
      batch_rows: 65536          # rows read, transformed and written per step (bounds memory)
      fused: true                # views of one family in one pass (the default)
      transform_threads: 2       # a batch's views transformed concurrently, one matmul per thread
      blas_threads: 1            # BLAS threads per matmul (its idle helper threads spin)

Feast builds batch engines only for `feast apply` / `feast materialize`, never for reads, so
consumers still need nothing but Feast. For a view tagged ``bc.family`` the engine streams the
latest embeddings parquet row group by row group (pyarrow, no dask), checks the task's time
window exactly like Feast's file source (inclusive on both ends), tells each row's version from
its event timestamp as the view UDFs do (:mod:`feast_bc.provenance`), applies the composed
transform (``Catalog.transform_vectors``: one float32 matmul per batch, whatever the chain length)
and writes with the fastest writer the online store allows (:mod:`feast_bc.online_writers`). All
other views go to Feast's local engine. The artifacts are verified as in the UDF path -- hashing
runs beside the first batches and the writer waits for it -- so a tampered family fails before
anything is written.

With ``fused`` (the default) the engine asks Feast for all views of a ``materialize`` at once
(``supports_batch``), and two or more views of one family share one pass over the latest file
(:mod:`feast_bc.family_pass`); on Redis every entity's hash then gets one HMGET and one HSET for
all of them. :func:`materialize_bc_view`, one view at a time, stays the reference it must match.

Why ~430 lines in one module: the engine, the three units of work it and
:mod:`feast_bc.ray_engine` run (a view, a family, a slice of row groups) and the translation of
store errors share the same verified pass and rollback check. The units of work would move to
their own module (``materialization``) if a third scheduler appears; the public functions
(:func:`latest_file`, :func:`bc_catalog`, :func:`family_unit`, :func:`check_views`,
:func:`explain_store_error`) are what the Ray engine uses meanwhile.
"""

from __future__ import annotations

import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pyarrow.parquet as pq
import redis.exceptions as rex
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.local.compute import LocalComputeEngine
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.infra.offline_stores.file_source import FileSource
from feast.repo_config import FeastConfigBaseModel
from pydantic import Field

from feast_bc.catalog import Catalog
from feast_bc.errors import (
    CatalogRollbackError,
    ConfigurationError,
    OnlineStoreFullError,
    OnlineStoreUnavailableError,
    StaleOnlineValuesError,
)
from feast_bc.family_pass import DEFAULT_THREADS, PassThreads, ViewWindow, streamed_parts
from feast_bc.feast_compat import install as install_feast_fixes
from feast_bc.feast_compat import sqlite_error_kind
from feast_bc.latest_guard import LatestGuard
from feast_bc.naming import (
    TAG_CATALOG,
    TAG_DERIVED_FROM,
    TAG_FAMILY,
    TAG_LATEST,
    TAG_PUBLISHED_AT,
    TAG_VERSION,
)
from feast_bc.online_probe import LatestSample, ViewProbe
from feast_bc.online_writers import family_writer_for, writer_for
from feast_bc.online_writers.fanout import FanOutWriter
from feast_bc.registries import redis_connection_problem

install_feast_fixes()  # only ever loaded by Feast's apply/materialize: its error hook, the atomic registry write

logger = logging.getLogger(__name__)


class BCEngineConfig(FeastConfigBaseModel):
    """Configuration of :class:`BCEngine` (the ``batch_engine`` block of feature_store.yaml)."""

    type: Literal["feast_bc.engine.BCEngine"] = "feast_bc.engine.BCEngine"
    batch_rows: int = Field(default=65_536, ge=1)
    """Rows per read/transform/write step; peak memory is a few times batch_rows x dim x 4 bytes
    (x the number of views of a fused pass)."""
    fused: bool = True
    """Materialize the views of one family requested by the same ``feast materialize`` together: one
    read of the latest file, one HSET per entity on Redis (:func:`materialize_bc_family`)."""
    blas_threads: int | None = Field(default=1, ge=1)
    """BLAS threads for the transforms while a pass runs (None: BLAS's own default). One, because
    the pass is already concurrent (read + matmul, writer thread, store) and BLAS's idle helper
    threads spin (:func:`feast_bc.family_pass.blas_threads`); raise it where the online store is
    remote and cores would idle."""
    transform_threads: int = Field(default=2, ge=1)
    """Threads that transform the views of a batch concurrently (each matmul on its own thread;
    :func:`feast_bc.family_pass.family_parts`). 1: one view after the other on the reading thread."""


class BCEngine(LocalComputeEngine):
    def __init__(
        self,
        *,
        repo_config,
        offline_store,
        online_store,
        batch_rows: int = 65_536,
        fused: bool = True,
        blas_threads: int | None = 1,
        transform_threads: int = 2,
        **kwargs,
    ):
        kwargs.pop("type", None)
        super().__init__(repo_config=repo_config, offline_store=offline_store, online_store=online_store, **kwargs)
        self.batch_rows = int(batch_rows)
        self.fused = bool(fused)
        self.threads = PassThreads(blas_threads, max(1, int(transform_threads)))

    @property
    def supports_batch(self) -> bool:
        """With ``fused``, Feast hands every view of a ``materialize`` to one :meth:`materialize` call
        (instead of one call per view), so the views of a family can share a pass. Feast then
        records the interval of each view whose job succeeded and raises the first error."""
        return self.fused

    def materialize(self, registry, tasks, **kwargs) -> list:
        """One job per task, in order. With ``fused``, two or more feast_bc views of one family
        (same catalog, same latest file) are materialized by one pass; all their jobs fail if it does."""
        if isinstance(tasks, MaterializationTask):
            tasks = [tasks]
        probed = probe_windows(self.repo_config, self.online_store, registry, list(tasks))
        tasks = [task for task, _ in probed]
        jobs: list = [None] * len(tasks)
        for group in self._fused_groups(registry, tasks) if self.fused else []:
            family_jobs = self._materialize_family(registry, [tasks[i] for i in group], **kwargs)
            for i, job in zip(group, family_jobs, strict=True):
                jobs[i] = job
        jobs = [
            job if job is not None else self._materialize_one(registry, task, **kwargs)
            for job, task in zip(jobs, tasks, strict=True)
        ]
        return [checked_job(self.repo_config, self.online_store, job, pt) for job, pt in zip(jobs, probed, strict=True)]

    def _fused_groups(self, registry, tasks) -> list[list[int]]:
        """Indices of the tasks to fuse: feast_bc views grouped by (family, catalog, latest file),
        groups of two or more. A view whose group cannot be told goes the per-view way (which
        reports its error)."""
        groups: dict[tuple, list[int]] = {}
        for i, task in enumerate(tasks):
            view = task.feature_view
            if not view.tags.get(TAG_FAMILY):
                continue
            try:
                key, _ = family_unit(self.repo_config, registry, task)
            except Exception as exc:  # noqa: BLE001 - reported by the per-view path
                logger.debug("%s: not fused (%s)", view.name, exc)
                continue
            groups.setdefault(key, []).append(i)
        return [group for group in groups.values() if len(group) >= 2]

    def _materialize_family(
        self, registry, tasks: list[MaterializationTask], **kwargs
    ) -> list[LocalMaterializationJob]:
        views = [task.feature_view for task in tasks]
        job_ids = [f"{t.feature_view.name}-{t.start_time}-{t.end_time}" for t in tasks]
        what = f"family {views[0].tags[TAG_FAMILY]!r} ({', '.join(v.name for v in views)})"
        try:
            _check_store_config(self.repo_config)
            written = materialize_bc_family(
                self.repo_config,
                self.online_store,
                [(t.feature_view, t.start_time, t.end_time) for t in tasks],
                self.batch_rows,
                registry,
                tasks[0].project,
                threads=self.threads,
            )
        except Exception as exc:
            exc = explain_store_error(exc, self.repo_config, what)
            return [
                LocalMaterializationJob(job_id=j, status=MaterializationJobStatus.ERROR, error=exc) for j in job_ids
            ]
        if written is None:  # the store has no fused writer (logged): view by view
            return [self._materialize_one(registry, task, **kwargs) for task in tasks]
        logger.info("%s: fused pass wrote %s rows", what, written)
        return [LocalMaterializationJob(job_id=j, status=MaterializationJobStatus.SUCCEEDED) for j in job_ids]

    def _materialize_one(self, registry, task: MaterializationTask, **kwargs) -> LocalMaterializationJob:
        view = task.feature_view
        if not view.tags.get(TAG_FAMILY):
            logger.debug("%s is not a feast_bc view: Feast's local engine materializes it", view.name)
            return super()._materialize_one(registry, task, **kwargs)
        job_id = f"{view.name}-{task.start_time}-{task.end_time}"
        try:
            _check_store_config(self.repo_config)
            materialize_bc_view(
                self.repo_config,
                self.online_store,
                view,
                task.start_time,
                task.end_time,
                self.batch_rows,
                registry,
                task.project,
                threads=self.threads,
            )
        except Exception as exc:
            exc = explain_store_error(exc, self.repo_config, view.name)
            return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=exc)
        return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)


def probe_windows(repo_config, online_store, registry, tasks: list) -> list[tuple]:
    """(task, probe) per task: the probe of each feast_bc view's sample (None where it cannot be
    built: the pass reports why), and the task's window widened to take in the latest's rows when
    their publish time lies before the window's start but the store lacks them
    (:mod:`feast_bc.online_probe`). Feast records the interval it asked for, not this one."""
    samples: dict[str, LatestSample] = {}
    out = []
    for task in tasks:
        view = task.feature_view
        if not view.tags.get(TAG_FAMILY):
            out.append((task, None))
            continue
        try:
            catalog = bc_catalog(repo_config, view)
            manifest = catalog.manifest(view.tags[TAG_FAMILY])
            path = latest_file(repo_config, view, registry, task.project)
            if str(path) not in samples:
                samples[str(path)] = LatestSample(path, manifest)
            probe = ViewProbe(view, catalog, manifest, samples[str(path)])
        except Exception as exc:  # noqa: BLE001 - the pass itself reports what is wrong
            logger.debug("%s: not probed (%s)", view.name, exc)
            out.append((task, None))
            continue
        start = _utc(task.start_time)
        if start is not None and probe.published_at < start:
            try:
                lacking = probe.lacking(repo_config, online_store)
            except Exception as exc:  # noqa: BLE001 - the pass reports the store's error
                logger.debug("%s: probe failed (%s)", view.name, exc)
                lacking = []
            if lacking:
                logger.warning(
                    "%s: the online store lacks version %s's values for %d of %d sampled ids although the window "
                    "starts after their publish time %s (an interval recorded before `feast apply`, by another "
                    "profile sharing the registry, or for another online store): writing them",
                    view.name,
                    probe.source_version,
                    len(lacking),
                    len(probe.ids),
                    probe.published_at.isoformat(),
                )
                task = dataclasses.replace(task, start_time=probe.published_at)
        out.append((task, probe))
    return out


def checked_job(repo_config, online_store, job, probed: tuple):
    """The job, or a failed one when its view's sampled ids do not read what the pass was to write."""
    task, probe = probed
    if probe is None or job.status() != MaterializationJobStatus.SUCCEEDED:
        return job
    try:
        lacking = probe.lacking(repo_config, online_store)
    except Exception as exc:  # noqa: BLE001
        error = explain_store_error(exc, repo_config, task.feature_view.name)
        return LocalMaterializationJob(job_id=job.job_id(), status=MaterializationJobStatus.ERROR, error=error)
    if not lacking:
        return job
    view, end = task.feature_view, _utc(task.end_time)
    what = (
        f"{len(lacking)} of {len(probe.ids)} sampled ids of {view.name} (e.g. {', '.join(lacking[:3])}) do not read "
        f"version {probe.version} computed from version {probe.source_version}"
    )
    if end is not None and probe.published_at > end:
        after = (probe.published_at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
        ahead = probe.published_at - datetime.now(UTC)
        if ahead <= timedelta(0):
            # An explicit END before the publish: Feast's window rule, nothing of it written. Not an
            # error (the pins were stale before this run too), but said, and `feast-bc audit` reports it.
            logger.warning(
                "%s: version %s of %r was published at %s, after this materialization's end %s: none of its "
                "values were written and %d of %d sampled ids read older values or none; run `feast "
                "materialize-incremental %s` (or any later end)",
                view.name,
                probe.source_version,
                view.tags[TAG_FAMILY],
                probe.published_at.isoformat(),
                end.isoformat(),
                len(lacking),
                len(probe.ids),
                after,
            )
            return job
        message = (
            f"{what}: that version of {view.tags[TAG_FAMILY]!r} was published at {probe.published_at.isoformat()}, "
            f"{ahead} in the future of this machine's clock, so no materialization ending now can write it: the "
            "publisher's clock is ahead of this machine's. Fix the clocks; the version becomes materializable once "
            f"this clock passes its publish time (`feast materialize-incremental {after}` writes it now)"
        )
    else:
        message = (
            f"{what} after the materialization wrote them: the online store does not hold what was written. "
            "Run `feast materialize 2000-01-01T00:00:00 <now>` again; `feast-bc audit` shows every pin"
        )
    return LocalMaterializationJob(
        job_id=job.job_id(), status=MaterializationJobStatus.ERROR, error=StaleOnlineValuesError(message)
    )


def _check_store_config(repo_config) -> None:
    """Refuse a Redis profile whose connection string cannot work (e.g. ``$FEAST_BC_REDIS`` unset)
    with one line, instead of the ``KeyError: 'port'`` Feast's Redis client would raise."""
    online = repo_config.online_store
    config = {"type": getattr(online, "type", None), "connection_string": getattr(online, "connection_string", None)}
    problem = redis_connection_problem(config, "online_store of the feature_store yaml")
    if problem:
        raise ConfigurationError(problem)


def explain_store_error(exc: Exception, repo_config, what: str) -> Exception:
    """Turn a raw client error of the online store into one line an operator can act on (``what``:
    the view, or the family and views of a fused pass, being materialized)."""
    store = getattr(repo_config.online_store, "connection_string", None) or repo_config.online_store.type
    where = str(store).split(",")[0]
    if isinstance(exc, rex.ResponseError) and str(exc).startswith("OOM"):
        err = OnlineStoreFullError(
            f"Redis at {where} ran out of memory while materializing {what} ({exc}): it reached its "
            "maxmemory and its eviction policy frees nothing. Every entity written so far is complete (one "
            "HSET per entity; values read are old or new, never partial), the rest keep their previous "
            "values. Free memory (raise maxmemory, or retire versions nobody reads with `feast-bc retire`), "
            "then run `feast materialize` again: it writes exactly what is still missing or older and completes"
        )
    elif isinstance(exc, rex.AuthenticationError) or "WRONGPASS" in str(exc) or "NOAUTH" in str(exc):
        err = OnlineStoreUnavailableError(
            f"Redis at {where} refused the credentials of the connection string while materializing "
            f"{what} ({exc}); fix password/username in feature_store.yaml or $FEAST_BC_REDIS"
        )
    elif isinstance(exc, (rex.ConnectionError, rex.TimeoutError, ConnectionError, TimeoutError)):
        err = OnlineStoreUnavailableError(
            f"Redis at {where} became unreachable while materializing {what} ({exc}). Values "
            "already written are complete per entity; run `feast materialize` again once Redis is back."
        )
    elif sqlite_error_kind(exc) is not None:
        kind, text = sqlite_error_kind(exc), str(exc)
        where = getattr(repo_config.online_store, "path", None) or where
        if kind == "locked":
            err = OnlineStoreUnavailableError(
                f"the SQLite online store {where} is locked by another process while materializing {what} ({text}): "
                "another materialization, or a process holding a write transaction on it. Nothing of this batch was "
                "written; run `feast materialize` again once it is done"
            )
        elif kind == "full":
            err = OnlineStoreFullError(
                f"the SQLite online store {where} could not write while materializing {what} ({text}): its volume is "
                "full, a file size limit was reached, or the disk failed. Every batch written so far is complete (one "
                "transaction per batch), the rest keep their previous values. Free space (or fix the volume), then "
                "run `feast materialize` again"
            )
        else:
            err = OnlineStoreUnavailableError(
                f"the SQLite online store {where} has no table for {what} ({text}): it was torn down, replaced or "
                "deleted under the registry. Run `feast apply` (it creates the tables the registry records again), "
                "then `feast materialize`"
            )
    else:
        return exc
    err.__cause__ = exc
    return err


def latest_file(repo_config, view, registry, project) -> Path:
    """The parquet file the registry's latest view of this family reads (not the catalog's newest)."""
    source_view = view
    if view.tags.get(TAG_DERIVED_FROM):
        source_view = registry.get_any_feature_view(view.tags[TAG_DERIVED_FROM], project)
    source = source_view.batch_source
    if not isinstance(source, FileSource):
        raise TypeError(f"{source_view.name}: feast_bc views read a FileSource, got {type(source).__name__}")
    return Path(FileSource.get_uri_for_file_path(repo_config.repo_path, source.path))


def registry_file_reader(repo_config, registry, view, project):
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


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def bc_catalog(repo_config, view) -> Catalog:
    """The catalog a feast_bc view names (its ``bc.catalog`` tag, else the repo's)."""
    return Catalog(view.tags[TAG_CATALOG]) if view.tags.get(TAG_CATALOG) else Catalog.for_repo(repo_config.repo_path)


def family_unit(repo_config, registry, task) -> tuple[tuple, Path]:
    """(key, latest file) of a feast_bc view's task: views with the same key -- project, family,
    catalog and latest file -- can share one pass over that file."""
    view = task.feature_view
    catalog, path = bc_catalog(repo_config, view), latest_file(repo_config, view, registry, task.project)
    return (task.project, view.tags[TAG_FAMILY], str(Path(catalog.root).resolve()), str(path.resolve())), path


def materialize_bc_view(
    repo_config,
    online_store,
    view,
    start,
    end,
    batch_rows: int,
    registry,
    project,
    *,
    threads: PassThreads = DEFAULT_THREADS,
) -> int:
    """Stream, transform and write one feast_bc view; return the number of rows written.

    The reference path: :func:`materialize_bc_family` must leave the online store exactly as
    calling this once per view does."""
    family = view.tags[TAG_FAMILY]
    version = int(view.tags[TAG_VERSION])
    catalog = bc_catalog(repo_config, view)
    manifest = catalog.manifest(family)
    _refuse_rollback(view, manifest)
    dim = manifest.version(version).dim
    path = latest_file(repo_config, view, registry, project)
    windows = [ViewWindow(version, _utc(start), _utc(end))]

    def make_writer(gate, guard):
        join_key, id_dtype = manifest.entity.join_key, manifest.entity.dtype
        return writer_for(
            repo_config, online_store, view, join_key, id_dtype, dim, gate=gate, refuse_newer=True, guard=guard
        )

    def write(writer, part):
        writer.write(part.ids, part.vectors[0], part.source_version, part.event_time)

    served = registry_file_reader(repo_config, registry, view, project)
    writer = _verified_pass(catalog, manifest, path, windows, batch_rows, make_writer, write, threads, served)
    return writer.written


def materialize_bc_family(
    repo_config,
    online_store,
    views: list[tuple],
    batch_rows: int,
    registry,
    project,
    *,
    threads: PassThreads = DEFAULT_THREADS,
) -> list[int] | None:
    """Materialize several feast_bc views of one family ((view, start, end) each, same catalog and
    latest file) with one pass over the latest file; return the rows written per view, or None
    without writing anything when the online store has no fused writer (the caller goes view by view).

    Per view, exactly what :func:`materialize_bc_view` does: its own window, the version refusals
    (rollback, registry lag), Feast's timestamp rule with ``refuse_newer``. The artifacts'
    checksums pass before the first byte is written. On Redis each entity's hash gets one HMGET and
    one HSET for all the views (:class:`~feast_bc.online_writers.RedisFamilyWriter`); on SQLite each
    view's table is written by its own writer from the shared pass."""
    first = views[0][0]
    family = first.tags[TAG_FAMILY]
    catalog = bc_catalog(repo_config, first)
    manifest = catalog.manifest(family)
    windows, dims = [], []
    for view, start, end in views:
        _refuse_rollback(view, manifest)
        version = int(view.tags[TAG_VERSION])
        dims.append(manifest.version(version).dim)
        windows.append(ViewWindow(version, _utc(start), _utc(end)))
    path = latest_file(repo_config, first, registry, project)
    join_key, id_dtype = manifest.entity.join_key, manifest.entity.dtype
    specs = [(view, dim) for (view, _, _), dim in zip(views, dims, strict=True)]

    def make_writer(gate, guard):
        return family_writer_for(
            repo_config, online_store, specs, join_key, id_dtype, gate=gate, refuse_newer=True, guard=guard
        )

    def write(writer, part):
        writer.write_part(part)

    served = registry_file_reader(repo_config, registry, first, project)
    writer = _verified_pass(catalog, manifest, path, windows, batch_rows, make_writer, write, threads, served)
    return None if writer is None else list(writer.written)


def materialize_bc_slice(
    repo_config,
    online_store,
    views: list[tuple],
    path: Path,
    row_groups: list[int],
    batch_rows: int,
    *,
    catalog: Catalog | None = None,
    manifest=None,
    gate=None,
    served_file=None,
    threads: PassThreads = DEFAULT_THREADS,
) -> list[int]:
    """Materialize the rows of ``row_groups`` of the latest file ``path`` for one or several feast_bc
    views of one family ((view, start, end) each); return the rows written per view. The unit of
    work of a distributed engine (:mod:`feast_bc.ray_engine`): no registry, no checksum hashing.

    The caller has resolved ``path`` (:func:`latest_file`), refused rollbacks and verified the
    family's checksums (``catalog.verify``) *before* calling this; ``gate`` is called before the
    first byte is written (e.g. to check that the file is still the one verified); ``served_file()``
    (None: unknown) the file the profile's registry serves now (:class:`~feast_bc.latest_guard.LatestGuard`:
    the pass stops once neither the catalog nor the registry names ``path``). The transforms
    are still checked by ``Catalog.transform_vectors`` (small files, hashed once per process).

    Per view and row, exactly what :func:`materialize_bc_view` / :func:`materialize_bc_family` write
    for these rows: the same batches (they never span row groups), the same writers with Feast's
    timestamp rule (``refuse_newer``), one HSET per entity for all views on Redis. Where the store
    has no fused writer, each view gets its own writer from the same pass."""
    first = views[0][0]
    catalog = catalog or bc_catalog(repo_config, first)
    manifest = manifest or catalog.manifest(first.tags[TAG_FAMILY])
    windows, specs = [], []
    for view, start, end in views:
        version = int(view.tags[TAG_VERSION])
        windows.append(ViewWindow(version, _utc(start), _utc(end)))
        specs.append((view, manifest.version(version).dim))
    join_key, id_dtype = manifest.entity.join_key, manifest.entity.dtype
    guard = LatestGuard(catalog, manifest.family, path, served_file)
    writer = None
    options = {"gate": gate, "refuse_newer": True, "guard": guard.check}
    if len(specs) > 1:
        writer = family_writer_for(repo_config, online_store, specs, join_key, id_dtype, **options)
    if writer is None:
        writer = FanOutWriter(
            [writer_for(repo_config, online_store, view, join_key, id_dtype, dim, **options) for view, dim in specs]
        )
    with (
        writer,
        streamed_parts(_open_parquet(path), catalog, manifest, windows, batch_rows, row_groups, threads) as parts,
    ):
        for part in parts:
            guard.check()
            writer.write_part(part)
    return list(writer.written)


def check_views(repo_config, views: list, manifest) -> None:
    """What every path refuses before reading: a Redis profile that cannot connect, a view
    registered from a newer latest than the catalog holds (:class:`CatalogRollbackError`)."""
    _check_store_config(repo_config)
    for view in views:
        _refuse_rollback(view, manifest)


def _verified_pass(
    catalog, manifest, path: Path, windows, batch_rows: int, make_writer, write, threads: PassThreads, served_file
):
    """Run :func:`~feast_bc.family_pass.family_parts` into the writer ``make_writer(gate, guard)``
    returns, ``write(writer, part)`` per part; return the writer once everything is stored (None,
    having written nothing, if ``make_writer`` returned None).

    The registry must keep serving ``path`` throughout (``served_file()``, read when the catalog names
    another latest; :class:`~feast_bc.latest_guard.LatestGuard`: checked before the pass, before
    every part, and by the SQLite writer inside each batch's lock).

    Hashing a large latest file takes as long as reading it: it runs beside the first batches, and
    the writer's gate waits for it, so nothing reaches the online store before it passed (the
    hashes are cached per file state, so a caller falling back to another path does not redo them).
    ``threads``: how the pass computes (:class:`~feast_bc.family_pass.PassThreads`)."""
    family = manifest.family
    guard = LatestGuard(catalog, family, path, served_file)
    with ThreadPoolExecutor(1, thread_name_prefix="feast-bc-verify") as pool:
        verified = pool.submit(catalog.verify, family, manifest)
        writer = make_writer(verified.result, guard.check)
        if writer is None:
            return None
        try:
            with (
                writer,
                streamed_parts(_open_parquet(path), catalog, manifest, windows, batch_rows, None, threads) as parts,
            ):
                for part in parts:
                    guard.check()
                    write(writer, part)
        except Exception as exc:
            failed = verified.exception()  # a tampered file explains any later error: report it
            if failed is not None and failed is not exc:
                raise failed from exc
            raise
        verified.result()  # also when the windows held no rows
    return writer


def _refuse_rollback(view, manifest) -> None:
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


def _open_parquet(path: Path) -> pq.ParquetFile:
    """The latest file for streaming. ``pre_buffer=False`` matters: with pyarrow's default,
    ``iter_batches`` buffers every row group's column chunks up front -- the whole table in
    memory (measured: 1.2 GiB of arrow memory for a 1 GiB file, against 0.26 GiB without)."""
    return pq.ParquetFile(path, pre_buffer=False)
