"""What a Redis writer sends, row by row: Feast's hash fields of a view, a chunk of rows with their
stamp, and Feast's timestamp rule per row (:mod:`.redis`, :mod:`.redis_transport`, :mod:`.redis_cluster`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import _versioned_fv_name

from feast_bc.errors import CatalogRollbackError
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE
from feast_bc.online_writers.encoding import timestamp_bytes, timestamp_nanos, value_bytes, vector_prefix
from feast_bc.online_writers.target import ViewTarget

REDIS_CHUNK_ROWS = 4096


def resp_bulk(data: bytes) -> bytes:
    """One RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


class ViewFields:
    """One view's fields in Feast's Redis hash of an entity, and their bytes in an HSET.

    Feast 0.67 ``redis.py``: ``mmh3("<view>:<feature>")`` -> serialized Value per feature, and
    ``_ts:<view>`` -> serialized Timestamp. Every version of a family is a view over the same entity,
    so all of them live in the same hash (key = serialized entity key + project): the fused family
    writer puts several views' fields into one HSET.
    """

    def __init__(self, repo_config, view: ViewTarget):
        name = _versioned_fv_name(view.feature_view, repo_config)
        self.view_name = view.name
        self.dim = view.dim
        self.ts_field = f"_ts:{name}".encode()
        self.emb_field = _mmh3(f"{name}:{EMBEDDING_FEATURE}")
        self.src_field = _mmh3(f"{name}:{SOURCE_VERSION_FEATURE}") if view.with_source else None
        self.vec_prefix = vector_prefix(view.dim)

    @property
    def field_count(self) -> int:
        return 2 if self.src_field is None else 3

    def hset_parts(self, vectors: np.ndarray, src_value: bytes, ts_value: bytes) -> list:
        """This view's field/value pairs of an HSET, per row: constant bytes and (rows, width) uint8 columns."""
        value_len = len(self.vec_prefix) + 4 * self.dim
        tail = resp_bulk(self.ts_field) + resp_bulk(ts_value)
        if self.src_field is not None:
            tail = resp_bulk(self.src_field) + resp_bulk(src_value) + tail
        vec_bytes = np.ascontiguousarray(vectors, dtype="<f4").view(np.uint8).reshape(len(vectors), 4 * self.dim)
        emb_head = resp_bulk(self.emb_field) + b"$%d\r\n%s" % (value_len, self.vec_prefix)
        return [emb_head, vec_bytes, b"\r\n" + tail]


class Stamp(NamedTuple):
    """What every row of one batch carries: its timestamp and source version bytes."""

    ts_value: bytes
    src_value: bytes
    nanos: int
    event_time: datetime

    @classmethod
    def of(cls, source_version: int, event_time: datetime) -> Stamp:
        ts = timestamp_bytes(event_time)
        return cls(ts, value_bytes(int64_val=source_version), timestamp_nanos(ts), event_time)


@dataclass
class Rows:
    """Rows of one chunk on their way to Redis: their ids, the views to write (positions in the
    writer's ``views``) and each such view's vectors, all sharing one :class:`Stamp`."""

    ids: np.ndarray
    members: list[int]
    vectors: list[np.ndarray]
    stamp: Stamp

    def take(self, index=None, positions: list[int] | None = None) -> Rows:
        """The rows at ``index`` (None: every row), for the views at ``positions`` of ``members``
        (None: every view); a subclass's other fields are kept."""
        positions = range(len(self.members)) if positions is None else positions
        return replace(
            self,
            ids=self.ids if index is None else self.ids[index],
            members=[self.members[p] for p in positions],
            vectors=[self.vectors[p] if index is None else self.vectors[p][index] for p in positions],
        )

    def __len__(self) -> int:
        return len(self.ids)


def refuse_newer_values(view_name: str, runs, new_ts: bytes, new_nanos: int, event_time: datetime) -> None:
    """feast_bc rows carry their version's publish time: a stored value stamped *later* was computed
    from a newer latest than the one being written -- the catalog (or registry) went back in time,
    and Feast's dedup rule would silently keep serving the newer values."""
    for value, _ in runs:
        if value is None or value == new_ts:
            continue
        stored = timestamp_nanos(value)
        if stored > new_nanos:
            when = datetime.fromtimestamp(stored / 1e9, tz=UTC).isoformat()
            raise CatalogRollbackError(
                f"Redis already holds values of {view_name} computed from a version published at {when}, "
                f"newer than the rows being written (published {event_time.isoformat()}): the catalog or the "
                "registry was restored from an older state. Redis would keep the newer values and the pin would "
                "silently serve another version than the catalog's, so materialization stops here (values "
                "already in Redis are untouched). Restore the newest manifest (and `feast apply`), or publish a "
                "new version"
            )


def keep_mask(runs: list[tuple[bytes | None, int]], new_ts: bytes, new_nanos: int) -> np.ndarray | None:
    """Rows whose stored timestamp is older than the new one (Feast's dedup rule); None = all rows.

    ``runs`` are (stored timestamp, repeat) in row order; stored timestamps are nearly always one
    of a handful of values (publish times of earlier versions), so each is decoded once.
    """
    verdict: dict[bytes | None, bool] = {None: True, new_ts: False}
    flags = []
    for value, _ in runs:
        ok = verdict.get(value)
        if ok is None:
            ok = verdict[value] = timestamp_nanos(value) < new_nanos
        flags.append(ok)
    if all(flags):
        return None
    return np.repeat(np.asarray(flags, dtype=bool), [repeat for _, repeat in runs])


def rows_by_views(masks: list[np.ndarray | None], n: int) -> list[tuple[np.ndarray | None, list[int]]]:
    """Rows grouped by the set of views they need written: (row indices or None for every row, the
    views' positions). ``masks`` are each view's :func:`keep_mask` (None = every row); rows needing
    no view are dropped. Nearly always one group: every row, every view."""
    if all(m is None for m in masks):
        return [(None, list(range(len(masks))))]
    keep = np.column_stack([np.ones(n, dtype=bool) if m is None else m for m in masks])
    patterns, inverse = np.unique(keep, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    groups = []
    for p, pattern in enumerate(patterns):
        if not pattern.any():
            continue
        rows = np.flatnonzero(inverse == p)
        groups.append((None if len(rows) == n else rows, np.flatnonzero(pattern).tolist()))
    return groups
