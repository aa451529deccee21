"""Writers that put (ids, vectors) into a Feast online store byte-for-byte as Feast would.

One module per store, in the way Feast lays out ``feast/infra/online_stores/``:

* :mod:`.redis` -- :class:`RedisBulkWriter`: hand-built RESP pipelines on a background thread;
* :mod:`.redis_cluster` -- :class:`RedisClusterBulkWriter`: the same pipelines, one per cluster master;
* :mod:`.sqlite` -- :class:`SqliteBulkWriter`: one ``executemany`` per batch;
* :mod:`.proto` -- :class:`ProtoWriter`: every other store, through its own ``online_write_batch``;
* :mod:`.redis_family` -- :class:`RedisFamilyWriter`: several views of a family, one HSET per entity
  (:class:`RedisClusterFamilyWriter` in :mod:`.redis_cluster` for clusters);
* :mod:`.fanout` -- :class:`FanOutWriter`: several views fed from one pass, one per-view writer each;

and the pieces they share: :mod:`.base` (the writer protocol, the caller-thread writer),
:mod:`.pipeline` (the threaded pipeline: thread, bounded queue, abort) and :mod:`.encoding`
(Feast's key and value encodings). :func:`writer_for` picks the fastest writer a store allows;
:func:`family_writer_for` the writer of a fused family pass, if the store has one.
"""

from __future__ import annotations

import logging

from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from feast_bc.errors import FeastBCError
from feast_bc.online_writers.base import FamilyWriter, Gate, OnlineWriter
from feast_bc.online_writers.fanout import FanOutWriter
from feast_bc.online_writers.proto import ProtoWriter
from feast_bc.online_writers.redis import RedisBulkWriter
from feast_bc.online_writers.redis_cluster import RedisClusterBulkWriter, RedisClusterFamilyWriter
from feast_bc.online_writers.redis_family import RedisFamilyWriter
from feast_bc.online_writers.sqlite import SqliteBulkWriter

__all__ = [
    "FamilyWriter",
    "FanOutWriter",
    "OnlineWriter",
    "ProtoWriter",
    "RedisBulkWriter",
    "RedisClusterBulkWriter",
    "RedisClusterFamilyWriter",
    "RedisFamilyWriter",
    "SqliteBulkWriter",
    "family_writer_for",
    "writer_for",
]

logger = logging.getLogger(__name__)


def _is_cluster(repo_config) -> bool:
    return repo_config.online_store.redis_type == RedisType.redis_cluster


def writer_for(
    repo_config,
    online_store,
    feature_view,
    join_key: str,
    id_dtype: str,
    dim: int,
    *,
    gate: Gate | None = None,
    refuse_newer: bool = False,
    guard: Gate | None = None,
) -> OnlineWriter:
    """The fastest writer the online store allows; ``gate`` must pass before anything is written.

    ``refuse_newer``: the Redis writer raises :class:`~feast_bc.errors.CatalogRollbackError` instead
    of silently skipping rows whose stored value is stamped later than the row (Feast's dedup rule).
    SQLite overwrites unconditionally (the pin then serves the catalog's values), as Feast's own
    SQLite writer does. Redis Cluster (``redis_type: redis_cluster``) gets the cluster bulk writer
    (same bytes, pipelines per master). A store the bulk writers cannot handle (Redis sentinel or the
    glide client; SQLite with vector columns) gets Feast's own writer, and the log says why.

    ``guard``: called before each batch; the SQLite writer calls it inside the batch's write
    transaction (:mod:`feast_bc.latest_guard`). Redis needs no such call (``refuse_newer`` compares
    timestamps per entity, atomically); the other writers rely on the engine's check per part."""
    args = (repo_config, online_store, feature_view, join_key, id_dtype, dim)
    try:
        if isinstance(online_store, RedisOnlineStore):
            cls = RedisClusterBulkWriter if _is_cluster(repo_config) else RedisBulkWriter
            return cls(*args, gate=gate, refuse_newer=refuse_newer)
        if isinstance(online_store, SqliteOnlineStore):
            return SqliteBulkWriter(*args, gate=gate, guard=guard)
    except FeastBCError as exc:
        logger.info("%s: writing through Feast's own online_write_batch: %s", feature_view.name, exc)
    return ProtoWriter(*args, gate=gate)


def family_writer_for(
    repo_config,
    online_store,
    views: list[tuple[object, int]],
    join_key: str,
    id_dtype: str,
    *,
    gate: Gate | None = None,
    refuse_newer: bool = False,
    guard: Gate | None = None,
) -> FamilyWriter | None:
    """The writer of a fused pass over several views ((feature view, dim) each) of one family, or
    None (the log says why) when the store has none: the engine then materializes view by view.

    Redis gets :class:`RedisFamilyWriter` (one HMGET and one HSET per entity for all the views), a
    Redis Cluster :class:`RedisClusterFamilyWriter` (the same commands, routed per master); SQLite a :class:`FanOutWriter` of :class:`SqliteBulkWriter` (its tables are per view). The
    other stores, and the Redis/SQLite setups the bulk writers refuse, keep the per-view path."""
    names = ", ".join(view.name for view, _ in views)
    try:
        if isinstance(online_store, RedisOnlineStore):
            cls = RedisClusterFamilyWriter if _is_cluster(repo_config) else RedisFamilyWriter
            return cls(repo_config, online_store, views, join_key, id_dtype, gate=gate, refuse_newer=refuse_newer)
        if isinstance(online_store, SqliteOnlineStore):
            return FanOutWriter(
                [
                    SqliteBulkWriter(repo_config, online_store, view, join_key, id_dtype, dim, gate=gate, guard=guard)
                    for view, dim in views
                ]
            )
    except FeastBCError as exc:
        logger.info("%s: no fused family writer (%s); materializing view by view", names, exc)
        return None
    logger.info(
        "%s: no fused family writer for online store %s; materializing view by view",
        names,
        type(online_store).__name__,
    )
    return None
