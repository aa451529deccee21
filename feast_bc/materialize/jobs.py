"""What a Feast materialization job of a feast_bc view reports: probed before, checked after.

Feast records a view's interval when its job SUCCEEDED, so a job must not succeed while the view's
pin reads something else than the pass was to write. Before the pass, :func:`probe_windows` reads
a sample of each view's ids (:mod:`feast_bc.online_probe`) and widens a window that would skip the
latest's rows the store lacks; after it, :func:`checked_job` reads them again and turns a job whose
sample is still stale into an ERROR that says why and what to run. Both engines call both.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime, timedelta

from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask
from feast.infra.compute_engines.local.job import LocalMaterializationJob

from feast_bc.errors import StaleOnlineValuesError
from feast_bc.materialize.store_errors import explain_store_error
from feast_bc.materialize.unit import bc_catalog, latest_file, utc
from feast_bc.naming import TAG_FAMILY, TAG_LATEST
from feast_bc.online_probe import LatestSample, ViewProbe

logger = logging.getLogger(__name__)


def job_of(task: MaterializationTask, error: Exception | None = None) -> LocalMaterializationJob:
    """The job of ``task``: SUCCEEDED, or ERROR with ``error``."""
    view = task.feature_view
    job_id = f"{view.name}-{task.start_time}-{task.end_time}"
    if error is None:
        return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.SUCCEEDED)
    return LocalMaterializationJob(job_id=job_id, status=MaterializationJobStatus.ERROR, error=error)


def probe_windows(repo_config, online_store, registry, tasks: list) -> list[tuple]:
    """(task, probe) per task: the probe of each feast_bc view's sample (None where it cannot be
    built: the pass reports why), and the task's window widened to take in the latest's rows when
    their publish time lies before the window's start but the store lacks them
    (:mod:`feast_bc.online_probe`). Feast records the interval it asked for, not this one."""
    samples: dict[str, LatestSample] = {}
    manifests: dict[str, object] = {}  # read once per family here; the pass reads its own afresh
    out = []
    catalog = None  # opened once (on a remote catalog, opening is a LIST of the bucket)
    for task in tasks:
        view = task.feature_view
        if not view.tags.get(TAG_FAMILY):
            out.append((task, None))
            continue
        try:
            catalog = catalog or bc_catalog(repo_config)
            family = view.tags[TAG_FAMILY]
            if family not in manifests:
                manifests[family] = catalog.manifest(family)
            manifest = manifests[family]
            path = latest_file(repo_config, view, registry, task.project)
            if str(path) not in samples:
                file_version = int(view.tags.get(TAG_LATEST, manifest.latest_version))
                pushes = catalog.pushed(manifest.family, manifest, version=file_version)
                samples[str(path)] = LatestSample(path, manifest, pushes=pushes)
            probe = ViewProbe(view, catalog, manifest, samples[str(path)])
        except Exception as exc:  # noqa: BLE001 - the pass itself reports what is wrong
            logger.debug("%s: not probed (%s)", view.name, exc)
            out.append((task, None))
            continue
        start = utc(task.start_time)
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
    view, end = task.feature_view, utc(task.end_time)
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
