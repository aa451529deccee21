"""Redis: several views of one family written together, one HMGET and one HSET per entity.

All versions of a family are views over the same entity, so Feast keeps all of them in the same
Redis hash (key = serialized entity key + project). The per-view writer therefore touches every
entity's hash once per view; when one ``feast materialize`` writes k views of a family, this writer
reads every view's ``_ts:<view>`` field with one HMGET per entity and writes every view's fields
with one HSET per entity -- k times fewer commands and round trips, and an entity is never left
with some views new and others old by a failure in the middle.

The timestamp rule stays per view: a view's fields go into an entity's HSET only if its stored
timestamp is older than the row's (Feast's dedup rule); a stored value stamped later than the row
raises (``refuse_newer``) before any HSET of the chunk is sent. Entities whose views disagree
(some already written by an earlier, partial run) get one HSET per distinct set of views to write.
"""

from __future__ import annotations

import numpy as np

from feast_bc.online_writers.base import FamilyPart, Gate
from feast_bc.online_writers.encoding import timestamp_bytes, timestamp_nanos, value_bytes
from feast_bc.online_writers.redis import (
    REDIS_CHUNK_ROWS,
    RedisHashWriter,
    ViewFields,
    keep_mask,
    refuse_newer_values,
)
from feast_bc.resp import Pipeline


class RedisFamilyWriter(RedisHashWriter):
    """Writes several feast_bc views of one family into Feast's Redis layout, one HSET per entity.

    ``views`` are (feature view, dim) in the order :class:`~feast_bc.online_writers.base.FamilyPart`
    indexes them. ``chunk_rows`` defaults to :data:`REDIS_CHUNK_ROWS` divided by the number of
    views, so a chunk carries about as many bytes as the per-view writer's.
    """

    thread_name = "feast-bc-redis-family-writer"

    def __init__(
        self,
        repo_config,
        online_store,
        views: list[tuple[object, int]],
        join_key: str,
        id_dtype: str,
        *,
        chunk_rows: int | None = None,
        queue_batches: int = 1,
        gate: Gate | None = None,
        refuse_newer: bool = False,
    ):
        super().__init__(
            repo_config,
            online_store,
            join_key,
            id_dtype,
            chunk_rows=chunk_rows if chunk_rows is not None else REDIS_CHUNK_ROWS // max(1, len(views)),
            queue_batches=queue_batches,
            gate=gate,
            refuse_newer=refuse_newer,
        )
        self.views = [ViewFields(repo_config, view, dim) for view, dim in views]
        self.written = [0] * len(self.views)

    def write_part(self, part: FamilyPart) -> None:
        """Queue one part for the writer thread; raises the thread's error if it has failed."""
        if part.vectors and len(part.ids):
            self._submit(part)

    def _write_batch(self, pipe: Pipeline, pending: int, part: FamilyPart) -> int:
        """Send one part chunk by chunk; return the number of integer replies still in flight.

        Order on the wire per chunk, as in the per-view writer: the HMGETs of this chunk queue behind
        the previous chunk's HSETs, then this chunk's HSETs once the HMGET replies are checked.
        """
        order = sorted(part.vectors)
        fields = [self.views[i] for i in order]
        ts_value = timestamp_bytes(part.event_time)
        src_value = value_bytes(int64_val=part.source_version)
        new_nanos = timestamp_nanos(ts_value)
        per_row = 2 if self.ttl else 1
        ids = part.ids
        for start in range(0, len(ids), self.chunk_rows):
            self.check_abort()
            stop = start + self.chunk_rows
            chunk_ids = ids[start:stop]
            if not self.skip_dedup:
                pipe.send(self._hmget_payload(chunk_ids, fields))
            pipe.replies.integers(pending)
            pending = 0
            if self.skip_dedup:
                groups = [(None, list(range(len(order))))]
            else:
                per_view = pipe.replies.field_arrays(len(chunk_ids), len(fields))
                if self.refuse_newer:
                    for view, runs in zip(fields, per_view, strict=True):
                        refuse_newer_values(view.view_name, runs, ts_value, new_nanos, part.event_time)
                masks = [keep_mask(runs, ts_value, new_nanos) for runs in per_view]
                groups = _rows_by_views(masks, len(chunk_ids))
            for rows, members in groups:
                group_ids = chunk_ids if rows is None else chunk_ids[rows]
                views = []
                for m in members:
                    vectors = part.vectors[order[m]][start:stop]
                    views.append((fields[m], vectors if rows is None else vectors[rows], src_value, ts_value))
                pipe.send(self._views_hset_payload(group_ids, views))
                pending += per_row * len(group_ids)
                for m in members:
                    self.written[order[m]] += len(group_ids)
        return pending


def _rows_by_views(masks: list[np.ndarray | None], n: int) -> list[tuple[np.ndarray | None, list[int]]]:
    """Rows grouped by the set of views they need written: (row indices or None for every row, the
    views' positions). ``masks`` are each view's :func:`keep_mask` (None = every row); rows needing
    no view are dropped. Nearly always one group (every row, every view)."""
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
