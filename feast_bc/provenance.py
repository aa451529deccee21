"""Which published version a row of embeddings comes from: its event timestamp says.

Every row of version v carries v's publish time (``created_at``, microseconds, unique and strictly
increasing per version) as its event timestamp. The timestamp therefore names the version without
storing an extra feature online, and it is the one thing every materialization path sees: the view
UDFs get a Feast dataframe (join key, timestamp, embedding) and :class:`feast_bc.engine.BCEngine`
reads the parquet file. Both ask :func:`version_groups`.

A timestamp after the catalog's latest version means the catalog went back in time (a manifest
restored from an old backup); one matching no version means the registry reads a file the catalog
does not know. Both are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from feast_bc.errors import CatalogRollbackError, RegistryLagError
from feast_bc.manifest import FamilyManifest

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def version_published_at(manifest: FamilyManifest, micros: int) -> int:
    """The version whose rows carry the event timestamp ``micros`` (microseconds since the epoch)."""
    for rec in manifest.versions:
        if _micros(rec.created_at) == micros:
            return rec.version
    when = _EPOCH + timedelta(microseconds=micros)
    if micros > _micros(manifest.latest.created_at):
        raise CatalogRollbackError(
            f"family {manifest.family!r}: rows published at {when} are newer than the catalog's latest version "
            f"{manifest.latest_version}: the catalog is older than what Feast serves (a manifest restored from an "
            "old backup?); put back the newest manifest"
        )
    raise RegistryLagError(
        f"family {manifest.family!r}: rows with event time {when} match no published version of the catalog; "
        "was the catalog replaced? run `feast apply`"
    )


def version_groups(micros: np.ndarray, manifest: FamilyManifest) -> list[tuple[int, datetime, np.ndarray | None]]:
    """Rows grouped by the published version they come from, oldest first.

    ``micros`` are the rows' event timestamps (int64 microseconds since the epoch); each group is
    (version, its publish time, row indices -- or None when the group is every row). A feast_bc
    file holds one version with one publish time, so this is normally a single group.
    """
    return [
        (version_published_at(manifest, stamp), event_time, rows)
        for stamp, event_time, rows in timestamp_groups(micros)
    ]


def timestamp_groups(micros: np.ndarray) -> list[tuple[int, datetime, np.ndarray | None]]:
    """Rows grouped by event timestamp, oldest first: (microseconds, as a datetime, row indices or None
    for every row). The fused engine pass decides each view's time window per group before it asks
    which version a group is (:func:`version_published_at`), exactly as a per-view pass that filters
    by window first would."""
    micros = np.asarray(micros, dtype=np.int64)
    if len(micros) == 0:
        return []
    first = int(micros[0])
    if (micros == first).all():
        return [(first, _EPOCH + timedelta(microseconds=first), None)]
    return [(int(t), _EPOCH + timedelta(microseconds=int(t)), np.flatnonzero(micros == t)) for t in np.unique(micros)]


def _micros(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
