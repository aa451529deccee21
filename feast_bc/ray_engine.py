"""feast_bc's engine on Ray: the views of a family materialized by Ray tasks, slice by slice.

Configure it in ``feature_store.yaml`` (``pip install 'feast-bc[ray]'``)::

    batch_engine:
      type: feast_bc.ray_engine.BCRayEngine
      ray_address: null            # null: a local Ray; "auto": the cluster of this node; "ray://head:10001"
      num_workers: 8               # slices in flight at once (default: the cluster's CPUs)
      row_groups_per_task: null    # row groups of the latest file per Ray task (null: about 4 slices per worker)
      batch_rows: 65536            # rows read, transformed and written per step inside a task
      fused: true                  # views of one family share each slice (one HSET per entity on Redis)
      max_retries: 3               # Ray retries of a slice (worker lost, transient store errors)

It is :class:`~feast_bc.engine.BCEngine` with the work of each view (or, with ``fused``, of every
requested view of one family) cut into slices of ``row_groups_per_task`` row groups of the family's
latest parquet file. The driver only plans: it resolves the file, refuses rollbacks, verifies every
checksum of the family (``Catalog.verify``, the same gate as :class:`BCEngine`) and reads the
file's footer; *then* it submits one Ray task per slice, at most ``num_workers`` in flight. Each
task opens the parquet file itself, reads its row groups, composes the transforms
(``Catalog.transform_vectors``) and writes its rows straight to the online store with the same
bulk writers as BCEngine (:func:`feast_bc.engine.materialize_bc_slice`); no vector passes through
the driver. If a family fails its checks on the driver, none of its slices is submitted. A task
writes nothing unless the latest file still has the size and modification time the driver verified.

Per view and entity the online store ends up exactly as with BCEngine: the same batches (they never
span row groups, :mod:`feast_bc.family_pass`), the same floats, the same writers, the same
timestamp rule. Retries are safe for the same reason a rerun is: Feast's rule never overwrites a
value stamped later than the row (``refuse_newer`` raises instead), and a value stamped the same is
the same value, so writing a slice twice leaves what writing it once leaves.

Jobs: one per Feast task (view), as Feast expects. A view whose slices all succeeded is
SUCCEEDED (Feast records its interval); if any slice of a view fails, the view's job is ERROR
with that slice's error, and no further slice of it is submitted. Views that are not feast_bc
views go to Feast's local engine, as with BCEngine.

Ray is imported only when a materialization starts (``import feast_bc`` never imports it).
Workers need ``feast_bc`` importable, the catalog at the same path as the driver (shared storage)
and the online store reachable (docs/SCALING.md).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
import redis.exceptions as rex
from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.local.job import LocalMaterializationJob
from feast.repo_config import FeastConfigBaseModel
from pydantic import Field

from feast_bc.catalog import Catalog
from feast_bc.engine import (
    BCEngine,
    bc_catalog,
    check_views,
    checked_job,
    explain_store_error,
    family_unit,
    materialize_bc_slice,
    probe_windows,
    registry_file_reader,
)
from feast_bc.errors import ChecksumMismatchError, OnlineStoreUnavailableError, WorkerLostError
from feast_bc.family_pass import DEFAULT_THREADS, PassThreads
from feast_bc.latest_guard import LatestGuard
from feast_bc.naming import TAG_FAMILY

logger = logging.getLogger(__name__)

#: Errors of a slice that Ray retries (besides a lost worker, which it always retries): the
#: online store went away for a moment, or SQLite stayed locked by another writer.
RETRIED_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    rex.ConnectionError,
    rex.TimeoutError,
    OnlineStoreUnavailableError,
    sqlite3.OperationalError,
)


#: Slices per worker when ``row_groups_per_task`` is not set.
SLICES_PER_WORKER = 4


def slice_row_groups(groups: int, workers: int, per_task: int | None) -> list[tuple[int, ...]]:
    """Row groups ``0..groups-1`` cut into slices of ``per_task`` consecutive groups (None: about
    :data:`SLICES_PER_WORKER` slices per worker, at least one group each)."""
    step = per_task if per_task is not None else -(-groups // (SLICES_PER_WORKER * max(1, workers)))
    step = max(1, int(step))
    return [tuple(range(lo, min(lo + step, groups))) for lo in range(0, groups, step)]


class BCRayEngineConfig(FeastConfigBaseModel):
    """Configuration of :class:`BCRayEngine` (the ``batch_engine`` block of feature_store.yaml)."""

    type: Literal["feast_bc.ray_engine.BCRayEngine"] = "feast_bc.ray_engine.BCRayEngine"
    ray_address: str | None = None
    """None: start a local Ray (unless this process already initialized one, which is then used as
    it is); ``"auto"``: join the cluster this node belongs to; ``"ray://host:10001"``: Ray client."""
    num_workers: int | None = None
    """Slices in flight at once; None: the cluster's CPUs (``ray.cluster_resources()``)."""
    row_groups_per_task: int | None = None
    """Row groups of the latest file per Ray task (feast_bc writes 65,536 rows per row group). None:
    about :data:`SLICES_PER_WORKER` slices per worker. Why not 1: a task ends by waiting for the
    store to acknowledge its last chunk and starts by reading and transforming its first batch, so
    each slice leaves the store idle for about one batch (measured at d=256: ~0.3 s per slice of
    65,536 rows, a fifth of its time with one worker); a few slices per worker still balance the
    load and bound what a retry redoes."""
    batch_rows: int = Field(default=65_536, ge=1)
    """Rows per read/transform/write step inside a task (bounds each worker's memory)."""
    fused: bool = True
    """The views of one family requested together share every slice (one read, one HSET per entity)."""
    max_retries: int = 3
    """Ray retries of a slice whose worker died or that raised one of :data:`RETRIED_ERRORS`."""
    task_num_cpus: float = 1.0
    """CPUs Ray reserves per slice task."""
    blas_threads: int | None = Field(default=1, ge=1)
    """BLAS threads inside a slice task while it transforms (None: as Ray sets them, e.g. OMP_NUM_THREADS)."""
    transform_threads: int = Field(default=2, ge=1)
    """Threads of a slice task that transform the views of a batch concurrently (as in BCEngine). A
    task then keeps up to this many matmuls plus its writer thread busy: on nodes shared with other
    work, reserve that with ``task_num_cpus`` (measured with 2 on a 2-core machine: BENCHMARKS.md)."""
    ray_conf: dict[str, Any] = {}
    """Extra keyword arguments of ``ray.init`` (e.g. ``num_cpus``, ``runtime_env``)."""


@dataclass(frozen=True)
class SliceContext:
    """What every slice of one unit (a view, or the views of a family) needs; put in Ray's object
    store once per unit. Feast objects travel as Feast's own Ray engine ships them: the repo config
    dill-pickled, each view as its protobuf."""

    what: str
    repo_config: bytes
    views: tuple[tuple[bytes, datetime | None, datetime | None], ...]
    catalog_root: str
    manifest: Any
    path: str
    file_state: tuple[int, int]
    batch_rows: int
    project: str = ""
    threads: PassThreads = DEFAULT_THREADS


def run_slice(context: SliceContext, row_groups: tuple[int, ...]) -> list[int]:
    """The Ray task: materialize ``row_groups`` of the latest file for the unit's views; return
    the rows written per view."""
    from feast.feature_view import FeatureView
    from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto

    repo_config, online_store = _store(context.repo_config)
    views = []
    for proto_bytes, start, end in context.views:
        proto = FeatureViewProto()
        proto.ParseFromString(proto_bytes)
        views.append((FeatureView.from_proto(proto, skip_udf=True), start, end))
    path = Path(context.path)

    def still_verified() -> None:
        st = os.stat(path)
        if (st.st_size, st.st_mtime_ns) != context.file_state:
            raise ChecksumMismatchError(
                f"{context.what}: {path} changed after the driver verified its checksum "
                f"(size, mtime_ns {context.file_state} -> {(st.st_size, st.st_mtime_ns)}); nothing of this "
                "slice was written"
            )

    return materialize_bc_slice(
        repo_config,
        online_store,
        views,
        path,
        list(row_groups),
        context.batch_rows,
        catalog=Catalog(context.catalog_root),
        manifest=context.manifest,
        gate=still_verified,
        served_file=registry_file_reader(repo_config, _worker_registry(repo_config), views[0][0], context.project),
        threads=context.threads,
    )


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


class BCRayEngine(BCEngine):
    """:class:`~feast_bc.engine.BCEngine` whose feast_bc views are materialized by Ray tasks."""

    #: The function each Ray task runs (``(SliceContext, row_groups) -> rows written per view``).
    slice_function = staticmethod(run_slice)

    def __init__(self, *, repo_config, offline_store, online_store, **kwargs):
        config = BCRayEngineConfig(**kwargs)
        super().__init__(
            repo_config=repo_config,
            offline_store=offline_store,
            online_store=online_store,
            batch_rows=config.batch_rows,
            fused=config.fused,
            blas_threads=config.blas_threads,
            transform_threads=config.transform_threads,
        )
        self.config = config

    @property
    def supports_batch(self) -> bool:
        """Always: Feast hands every view of a ``materialize`` to one call, so the slices of all of
        them share the workers (and, with ``fused``, the views of a family share each slice)."""
        return True

    def materialize(self, registry, tasks, **kwargs) -> list:
        if isinstance(tasks, MaterializationTask):
            tasks = [tasks]
        probed = probe_windows(self.repo_config, self.online_store, registry, list(tasks))
        jobs = self._materialize_tasks(registry, [task for task, _ in probed], **kwargs)
        return [checked_job(self.repo_config, self.online_store, job, pt) for job, pt in zip(jobs, probed, strict=True)]

    def _materialize_tasks(self, registry, tasks: list, **kwargs) -> list:
        jobs: list = [None] * len(tasks)
        units: dict[tuple, tuple[list[int], Path]] = {}
        for i, task in enumerate(tasks):
            view = task.feature_view
            if not view.tags.get(TAG_FAMILY):
                continue
            try:
                key, path = family_unit(self.repo_config, registry, task)
            except Exception as exc:  # noqa: BLE001 - the view's job reports it
                jobs[i] = _job(task, exc)
                continue
            if not self.fused:
                key += (i,)
            units.setdefault(key, ([], path))[0].append(i)
        if units:
            for group, error in self._run_units(list(units.values()), tasks, registry):
                for i in group:
                    jobs[i] = _job(tasks[i], error)
        return [  # the rest are not feast_bc views: Feast's local engine
            job if job is not None else self._materialize_one(registry, task, **kwargs)
            for job, task in zip(jobs, tasks, strict=True)
        ]

    # ------------------------------------------------------------------- driver
    def _prepare(self, tasks: list[MaterializationTask], path: Path, registry) -> tuple[SliceContext, int]:
        """Checks, the checksum gate and the number of row groups of the unit's latest file; raises
        before anything is submitted."""
        import dill

        views = [task.feature_view for task in tasks]
        family = views[0].tags[TAG_FAMILY]
        what = f"family {family!r} ({', '.join(v.name for v in views)})"
        catalog = bc_catalog(self.repo_config, views[0])
        manifest = catalog.manifest(family)
        check_views(self.repo_config, views, manifest)
        served = registry_file_reader(self.repo_config, registry, views[0], tasks[0].project)
        LatestGuard(catalog, family, path, served, what=what)  # refused here, before any slice is submitted
        catalog.verify(family, manifest)  # every artifact's sha256, the latest file included
        st = os.stat(path)
        groups = pq.ParquetFile(path).metadata.num_row_groups  # the footer only
        context = SliceContext(
            what=what,
            repo_config=dill.dumps(self.repo_config),
            views=tuple((t.feature_view.to_proto().SerializeToString(), t.start_time, t.end_time) for t in tasks),
            project=tasks[0].project,
            catalog_root=str(Path(catalog.root).resolve()),
            manifest=manifest,
            path=str(path),
            file_state=(st.st_size, st.st_mtime_ns),
            batch_rows=self.batch_rows,
            threads=self.threads,
        )
        return context, groups

    def _run_units(
        self, units: list[tuple[list[int], Path]], tasks: list, registry
    ) -> list[tuple[list[int], Exception | None]]:
        """Prepare every unit on the driver, then run all their slices on Ray; per unit, its task
        indices and its first error (None: every slice succeeded)."""
        results: list[tuple[list[int], Exception | None]] = []
        prepared = []
        for group, path in units:
            unit_tasks = [tasks[i] for i in group]
            try:
                context, groups = self._prepare(unit_tasks, path, registry)
            except Exception as exc:
                results.append((group, self._explain(exc, unit_tasks)))
                continue
            prepared.append((group, unit_tasks, context, groups))
        if not prepared:
            return results
        ray = self._ray()
        limit = self.config.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        per_task = self.config.row_groups_per_task
        prepared = [(g, t, c, slice_row_groups(n, limit, per_task)) for g, t, c, n in prepared]
        remote = ray.remote(self.slice_function).options(
            num_cpus=self.config.task_num_cpus,
            max_retries=self.config.max_retries,
            retry_exceptions=list(RETRIED_ERRORS),
        )
        contexts = [ray.put(context) for _, _, context, _ in prepared]
        queue = deque((u, rows) for u, (_, _, _, slices) in enumerate(prepared) for rows in slices)
        errors: dict[int, Exception] = {}
        written = [[0] * len(group) for group, *_ in prepared]
        in_flight: dict = {}
        from tqdm import tqdm

        progress = tqdm(total=len(queue), desc="feast_bc slices", unit="slice", disable=None)
        try:
            while queue or in_flight:
                while queue and len(in_flight) < limit:
                    u, rows = queue.popleft()
                    if u in errors:  # the unit already failed: its remaining slices are not run
                        progress.update(1)
                        continue
                    in_flight[remote.remote(contexts[u], rows)] = (u, rows)
                if not in_flight:
                    break
                done, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in done:
                    u, rows = in_flight.pop(ref)
                    try:
                        counts = ray.get(ref)
                    except Exception as exc:
                        cause = _cause(exc)
                        logger.error("%s: slice of row groups %s failed: %s", prepared[u][2].what, list(rows), cause)
                        errors.setdefault(u, cause)
                    else:
                        written[u] = [a + b for a, b in zip(written[u], counts, strict=True)]
                    progress.update(1)
        finally:
            progress.close()
            for ref in in_flight:  # interrupted (e.g. Ctrl-C): stop what is still running
                ray.cancel(ref)
        for u, (group, unit_tasks, context, slices) in enumerate(prepared):
            error = errors.get(u)
            if error is None:
                logger.info("%s: %s slices on Ray wrote %s rows", context.what, len(slices), written[u])
            results.append((group, None if error is None else self._explain(error, unit_tasks)))
        return results

    def _explain(self, exc: Exception, tasks) -> Exception:
        names = ", ".join(t.feature_view.name for t in tasks)
        from ray import exceptions as ray_errors

        if isinstance(exc, ray_errors.RayError) and not isinstance(exc, ray_errors.RayTaskError):
            # the worker itself is gone (killed, out of memory, its node died), not an error of the slice
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            err = WorkerLostError(
                f"the Ray worker running a slice of {names} died ({type(exc).__name__}: {first}), also on each of its "
                f"{self.config.max_retries} retries (`max_retries`). Every batch stored before is complete (one "
                "HSET per entity on Redis, one transaction per batch on SQLite); the rest keep their previous "
                "values. Find why the workers die (memory: `ray memory`, the node's logs; a killed process), then "
                "run `feast materialize` again"
            )
            err.__cause__ = exc
            return err
        return explain_store_error(exc, self.repo_config, names)

    def _ray(self):
        """Ray, initialized once: a Ray this process already started is used as it is."""
        import ray

        if not ray.is_initialized():
            options = {"include_dashboard": False, **self.config.ray_conf}
            options.setdefault("address", self.config.ray_address or "local")
            ray.init(**options)
        return ray


def _cause(exc: Exception) -> Exception:
    """The exception a Ray task raised (Ray wraps it in a RayTaskError), else ``exc``."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


def _job(task: MaterializationTask, error: Exception | None) -> LocalMaterializationJob:
    view = task.feature_view
    job_id = f"{view.name}-{task.start_time}-{task.end_time}"
    if error is None:
        return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
    return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=error)
