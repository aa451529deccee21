"""A Feast batch engine that materializes feast_bc views in bulk and everything else as usual.

Configure it in ``feature_store.yaml`` (every key and its default: :class:`~feast_bc.materialize.PassSettings`)::

    batch_engine:
      type: feast_bc.engine.BCEngine
      batch_rows: 65536          # most rows per read/transform/write step (a step stays in one row group)
      fused: true                # views of one family in one pass (the default)
      transform_threads: 2       # a batch's views transformed concurrently, one matmul per thread
      blas_threads: 1            # BLAS threads per matmul (its idle helper threads spin)

Feast builds batch engines only for `feast apply` / `feast materialize`, never for reads, so
consumers still need nothing but Feast. The engine is a thin adapter from Feast's tasks to
:mod:`feast_bc.materialize`: it groups the feast_bc views into units (:func:`plan_units`: a family's
views together with ``fused``, else one view each), runs each unit in one pass (:func:`run_pass`:
the latest embeddings parquet streamed row group by row group, each view's window checked exactly
like Feast's file source, the composed transform applied, the fastest writer the online store
allows) and reports one Feast job per view, checked against what the store then reads
(:mod:`feast_bc.materialize.jobs`). All other views go to Feast's local engine. The artifacts are
verified beside the first batches and the writer waits for them, so a tampered family fails before
anything is written. With ``fused`` on Redis every entity's hash gets one HMGET and one HSET for all
the views of its family.
"""

from __future__ import annotations

import logging
from typing import Literal

from feast.infra.common.materialization_job import MaterializationTask
from feast.infra.compute_engines.local.compute import LocalComputeEngine

from feast_bc.feast_compat import install as install_feast_fixes
from feast_bc.materialize import (
    PassSettings,
    check_store_config,
    checked_job,
    explain_store_error,
    job_of,
    one_catalog,
    plan_units,
    prepare_unit,
    probe_windows,
    pushes_held_off,
    run_pass,
)

install_feast_fixes()  # only ever loaded by Feast's apply/materialize: its error hook, the atomic registry write

logger = logging.getLogger(__name__)


class BCEngineConfig(PassSettings):
    """Configuration of :class:`BCEngine` (the ``batch_engine`` block of feature_store.yaml): the
    pass settings and the engine's type."""

    type: Literal["feast_bc.engine.BCEngine"] = "feast_bc.engine.BCEngine"


class BCEngine(LocalComputeEngine):
    """Feast's local engine, with feast_bc views materialized by :func:`feast_bc.materialize.run_pass`."""

    config_class: type[PassSettings] = BCEngineConfig

    def __init__(self, *, repo_config, offline_store, online_store, **settings):
        super().__init__(repo_config=repo_config, offline_store=offline_store, online_store=online_store)
        self.config = self.config_class(**settings)

    @property
    def fused(self) -> bool:
        return self.config.fused

    @property
    def supports_batch(self) -> bool:
        """With ``fused``, Feast hands every view of a ``materialize`` to one :meth:`materialize` call
        (instead of one call per view), so the views of a family can share a pass. Feast then
        records the interval of each view whose job succeeded and raises the first error."""
        return self.fused

    def materialize(self, registry, tasks, **kwargs) -> list:
        """One job per task, in order: the feast_bc views' from their units' passes (every view of a
        unit fails if its pass does), the others' from Feast's local engine; each checked against
        what its sampled ids read afterwards."""
        if isinstance(tasks, MaterializationTask):
            tasks = [tasks]
        with one_catalog(self.repo_config):
            probed = probe_windows(self.repo_config, self.online_store, registry, list(tasks))
            tasks = [task for task, _ in probed]
            with pushes_held_off(self.repo_config, tasks):
                jobs = self._materialize_units(registry, tasks)
        jobs = [
            job if job is not None else self._materialize_one(registry, task, **kwargs)
            for job, task in zip(jobs, tasks, strict=True)
        ]
        return [checked_job(self.repo_config, self.online_store, job, pt) for job, pt in zip(jobs, probed, strict=True)]

    def _materialize_units(self, registry, tasks: list) -> list:
        """The jobs of the feast_bc views among ``tasks`` (None for the others)."""
        jobs: list = [None] * len(tasks)
        units, errors = plan_units(self.repo_config, registry, tasks, fused=self.fused)
        for i, exc in errors.items():
            jobs[i] = job_of(tasks[i], explain_store_error(exc, self.repo_config, tasks[i].feature_view.name))
        for indices, path in units:
            unit_tasks = [tasks[i] for i in indices]
            error = self._run_unit(registry, unit_tasks, path)
            for i in indices:
                jobs[i] = job_of(tasks[i], error)
        return jobs

    def _run_unit(self, registry, tasks: list, path) -> Exception | None:
        """Materialize one unit in one pass; its error (explained), or None."""
        what = ", ".join(task.feature_view.name for task in tasks)
        try:
            check_store_config(self.repo_config)
            unit = prepare_unit(self.repo_config, registry, tasks, path)
            what = unit.what
            written = run_pass(self.repo_config, self.online_store, unit, self.config)
        except Exception as exc:  # noqa: BLE001 - the unit's jobs report it
            return explain_store_error(exc, self.repo_config, what)
        logger.info("%s: one pass wrote %s rows", what, written)
        return None

    def _materialize_one(self, registry, task: MaterializationTask, **kwargs):
        logger.debug("%s is not a feast_bc view: Feast's local engine materializes it", task.feature_view.name)
        return super()._materialize_one(registry, task, **kwargs)
