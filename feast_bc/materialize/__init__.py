"""Materialization of feast_bc views: one pass, planned once, run by either engine.

* :mod:`.settings` -- :class:`PassSettings`, every pass setting and its default once (the engines'
  feature_store.yaml blocks extend it);
* :mod:`.unit` -- :class:`MaterializationUnit` (the views of one family over one latest file, with
  their windows and dims), :func:`plan_units` (how Feast's tasks group into units) and
  :func:`prepare_unit` (what a pass refuses before reading);
* :mod:`.stream` -- the latest file read once, every requested version computed per batch;
* :mod:`.run` -- :func:`run_pass`, the one pass: per-view, fused and Ray slices are its configurations;
* :mod:`.jobs` -- what a Feast job reports: sampled ids probed before the pass and checked after;
* :mod:`.store_errors` -- online-store errors as one line an operator can act on.

:class:`feast_bc.engine.BCEngine` runs each unit in one pass; :class:`feast_bc.ray_engine.BCRayEngine`
verifies each unit on its driver and runs its row-group slices as Ray tasks.
"""

from __future__ import annotations

from feast_bc.materialize.jobs import checked_job, job_of, probe_windows
from feast_bc.materialize.run import run_pass
from feast_bc.materialize.settings import DEFAULT_SETTINGS, PassSettings
from feast_bc.materialize.store_errors import check_store_config, explain_store_error
from feast_bc.materialize.unit import (
    MaterializationUnit,
    ViewWindow,
    bc_catalog,
    latest_file,
    one_catalog,
    plan_units,
    prepare_unit,
    pushes_held_off,
    refuse_rollback,
    registry_file_reader,
)

__all__ = [
    "DEFAULT_SETTINGS",
    "MaterializationUnit",
    "PassSettings",
    "ViewWindow",
    "bc_catalog",
    "check_store_config",
    "checked_job",
    "explain_store_error",
    "job_of",
    "latest_file",
    "one_catalog",
    "plan_units",
    "prepare_unit",
    "probe_windows",
    "pushes_held_off",
    "refuse_rollback",
    "registry_file_reader",
    "run_pass",
]
