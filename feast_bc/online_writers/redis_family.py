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

from collections.abc import Sequence

from feast_bc.online_writers.base import Check, FamilyPart
from feast_bc.online_writers.redis import REDIS_CHUNK_ROWS, NodeTransport, RedisHashWriter, ViewFields
from feast_bc.online_writers.target import StoreTarget, ViewTarget


class RedisFamilyWriter(RedisHashWriter):
    """Writes several feast_bc views of one family into Feast's Redis layout, one HSET per entity.

    ``views`` are :class:`~.target.ViewTarget` (feature view, dim) in the order
    :class:`~feast_bc.online_writers.base.FamilyPart` indexes them. ``chunk_rows`` defaults to :data:`REDIS_CHUNK_ROWS` divided by the number of
    views, so a chunk carries about as many bytes as the per-view writer's.
    """

    thread_name = "feast-bc-redis-family-writer"
    transport_class = NodeTransport

    def __init__(
        self,
        store: StoreTarget,
        views: Sequence[ViewTarget],
        *,
        chunk_rows: int | None = None,
        queue_batches: int = 1,
        before_write: Check | None = None,
        refuse_newer: bool = False,
    ):
        super().__init__(
            store,
            chunk_rows=chunk_rows if chunk_rows is not None else REDIS_CHUNK_ROWS // max(1, len(views)),
            queue_batches=queue_batches,
            before_write=before_write,
            refuse_newer=refuse_newer,
        )
        self.views = [ViewFields(store.repo_config, ViewTarget(*view)) for view in views]
        self.written = [0] * len(self.views)

    def write_part(self, part: FamilyPart) -> None:
        """Queue one part for the writer thread; raises the thread's error if it has failed."""
        if part.vectors and len(part.ids):
            self._submit(part)

    def _count(self, members: list[int], rows: int) -> None:
        for m in members:
            self.written[m] += rows

    def _write_batch(self, pending, part: FamilyPart):
        views = sorted(part.vectors.items())
        return self._write_views(pending, part.ids, views, part.source_version, part.event_time)
