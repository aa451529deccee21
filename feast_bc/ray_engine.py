"""feast_bc's engine on Ray: the views of a family materialized by Ray tasks, slice by slice.

Configure it in ``feature_store.yaml`` (``pip install 'feast-bc[ray]'``)::

    batch_engine:
      type: feast_bc.ray_engine.BCRayEngine
      ray_address: null            # null: a local Ray; "auto": the cluster of this node; "ray://head:10001"
      num_workers: 8               # slices in flight at once (default: the cluster's CPUs)
      row_groups_per_task: null    # row groups of the latest file per Ray task (null: about 4 slices per worker)
      batch_rows: 65536            # most rows per read/transform/write step inside a task
      fused: true                  # views of one family share each slice (one HSET per entity on Redis)
      transform_threads: 2         # as in BCEngine: every PassSettings key applies inside each slice
      max_retries: 3               # Ray retries of a slice (worker lost, transient store errors)

It is :class:`~feast_bc.engine.BCEngine` with each unit (:func:`feast_bc.materialize.plan_units`:
with ``fused`` every requested view of one family, else one view) cut into slices of
``row_groups_per_task`` row groups of the family's latest parquet file; the other pass settings
(:class:`~feast_bc.materialize.PassSettings`) apply inside every slice. The driver only plans: it
prepares the unit (:func:`~feast_bc.materialize.prepare_unit`: rollbacks refused), checks that the
registry serves its file, verifies every checksum of the family (``Catalog.verify``) and reads the
file's footer; *then* it submits one Ray task per slice, at most ``num_workers`` in flight. Each
task runs the same pass as BCEngine (:func:`feast_bc.materialize.run_pass`) over its row groups,
writing straight to the online store; no vector passes through the driver. If a family fails its checks on the driver, none of its slices is submitted. A task
writes nothing unless the latest file still has the size and modification time the driver verified.

Per view and entity the online store ends up exactly as with BCEngine: the same batches (they never
span row groups, :mod:`feast_bc.materialize.stream`), the same floats, the same writers, the same
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

import logging
import os
import sqlite3
from collections import deque
from pathlib import Path
from typing import Any, Literal

import pyarrow.parquet as pq
import redis.exceptions as rex
from feast.infra.common.materialization_job import MaterializationTask

from feast_bc.catalog.remote import RemoteCatalog
from feast_bc.engine import BCEngine
from feast_bc.errors import OnlineStoreUnavailableError, WorkerLostError
from feast_bc.latest_guard import LatestGuard
from feast_bc.materialize import (
    PassSettings,
    check_store_config,
    explain_store_error,
    job_of,
    plan_units,
    prepare_unit,
)
from feast_bc.ray_worker import SliceContext, run_slice

logger = logging.getLogger(__name__)

#: Connections tried when a Ray client's per-client server fails to start (``ray://`` only).
CLIENT_CONNECT_ATTEMPTS = 3

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


class BCRayEngineConfig(PassSettings):
    """Configuration of :class:`BCRayEngine` (the ``batch_engine`` block of feature_store.yaml): the pass
    settings (each applies inside every slice task) and Ray's."""

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
    max_retries: int = 3
    """Ray retries of a slice whose worker died or that raised one of :data:`RETRIED_ERRORS`."""
    task_num_cpus: float = 1.0
    """CPUs Ray reserves per slice task. A task keeps up to ``transform_threads`` matmuls plus its
    writer thread busy: on nodes shared with other work, reserve that here (measured with 2 transform
    threads on a 2-core machine: BENCHMARKS.md)."""
    ray_conf: dict[str, Any] = {}
    """Extra keyword arguments of ``ray.init`` (e.g. ``num_cpus``, ``runtime_env``)."""


class BCRayEngine(BCEngine):
    """:class:`~feast_bc.engine.BCEngine` whose feast_bc views are materialized by Ray tasks."""

    config_class = BCRayEngineConfig
    #: The function each Ray task runs (``(SliceContext, row_groups) -> rows written per view``).
    slice_function = staticmethod(run_slice)

    @property
    def supports_batch(self) -> bool:
        """Always: Feast hands every view of a ``materialize`` to one call, so the slices of all of
        them share the workers (and, with ``fused``, the views of a family share each slice)."""
        return True

    def _materialize_units(self, registry, tasks: list) -> list:
        """The jobs of the feast_bc views among ``tasks`` (None for the others): every unit prepared
        and verified on the driver, then all their slices run on Ray."""
        jobs: list = [None] * len(tasks)
        units, errors = plan_units(self.repo_config, registry, tasks, fused=self.fused)
        for i, exc in errors.items():
            jobs[i] = job_of(tasks[i], explain_store_error(exc, self.repo_config, tasks[i].feature_view.name))
        if units:
            for group, error in self._run_units(units, tasks, registry):
                for i in group:
                    jobs[i] = job_of(tasks[i], error)
        return jobs

    # ------------------------------------------------------------------- driver
    def _prepare(self, tasks: list[MaterializationTask], path: Path, registry) -> tuple[SliceContext, int]:
        """The unit's checks (:func:`~feast_bc.materialize.prepare_unit`), the registry guard, the
        checksum gate and the number of row groups of its latest file; raises before anything is
        submitted."""
        import dill

        check_store_config(self.repo_config)
        unit = prepare_unit(self.repo_config, registry, tasks, path)
        LatestGuard(unit.catalog, unit.family, path, unit.served_file, what=unit.what)  # refused before any slice
        unit.catalog.verify(unit.family, unit.manifest)  # every artifact's sha256, the latest file included
        st = os.stat(path)
        groups = pq.ParquetFile(path).metadata.num_row_groups  # the footer only
        settings = PassSettings.model_validate(self.config.model_dump(include=set(PassSettings.model_fields)))
        if isinstance(unit.catalog, RemoteCatalog):  # workers read their own mirror of the bucket
            catalog_location = unit.catalog.location
            latest = Path(path).resolve().relative_to(unit.catalog.root.resolve()).as_posix()
        else:
            catalog_location, latest = str(Path(unit.catalog.root).resolve()), str(path)
        context = SliceContext(
            what=unit.what,
            repo_config=dill.dumps(self.repo_config),
            views=tuple((t.feature_view.to_proto().SerializeToString(), t.start_time, t.end_time) for t in tasks),
            project=unit.project,
            catalog_location=catalog_location,
            manifest=unit.manifest,
            path=latest,
            file_state=(st.st_size, st.st_mtime_ns),
            settings=settings,
            pushes=unit.pushes,
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
            first = _first_line(exc)
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
            _init_ray(ray, options)
        return ray


def _init_ray(ray, options: dict) -> None:
    """``ray.init(**options)``; a Ray client (ray://) is connected again when its server did not start.

    Why: the head's proxy starts one server process per client, and that start can fail (its process
    dies at once, nothing in its log); a new connection gets a new server. Nothing is written before
    Ray is up, so trying again is safe."""
    retry = str(options["address"]).startswith("ray://")
    for attempt in range(1, CLIENT_CONNECT_ATTEMPTS + 1):
        try:
            return ray.init(**options)
        except ConnectionAbortedError as exc:
            if not retry or attempt == CLIENT_CONNECT_ATTEMPTS:
                raise
            logger.warning(
                "Ray client at %s: the server for this client did not start (%s); connecting again (%d/%d)",
                options["address"],
                _first_line(exc) or type(exc).__name__,
                attempt + 1,
                CLIENT_CONNECT_ATTEMPTS,
            )
            ray.shutdown()


def _first_line(exc: Exception) -> str:
    """The first line of an exception's message ('' if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _cause(exc: Exception) -> Exception:
    """The exception a Ray task raised (Ray wraps it in a RayTaskError), else ``exc``."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc
