"""Writers that put (ids, vectors) into a Feast online store byte-for-byte as Feast would.

One module per store, in the way Feast lays out ``feast/infra/online_stores/``:

* :mod:`.redis` -- :class:`RedisBulkWriter`: hand-built RESP pipelines on a background thread;
* :mod:`.redis_cluster` -- :class:`RedisClusterBulkWriter`: the same pipelines, one per cluster master;
* :mod:`.sqlite` -- :class:`SqliteBulkWriter`: one ``executemany`` per batch;
* :mod:`.postgres` -- :class:`PostgresBulkWriter`: one binary ``COPY`` and upsert per batch (fills
  the pgvector column that ``retrieve_online_documents_v2`` searches);
* :mod:`.proto` -- :class:`ProtoWriter`: every other store, through its own ``online_write_batch``;
* :mod:`.redis_family` -- :class:`RedisFamilyWriter`: several views of a family, one HSET per entity
  (:class:`RedisClusterFamilyWriter` in :mod:`.redis_cluster` for clusters);
* :mod:`.fanout` -- :class:`FanOutWriter`: several views fed from one pass, one per-view writer each;

and the pieces they share: :mod:`.base` (the writer protocol, the caller-thread writer),
:mod:`.pipeline` (the threaded pipeline: thread, bounded queue, abort) and :mod:`.encoding`
(Feast's key and value encodings). :func:`writer_for` picks the fastest writer a store allows;
:func:`views_writer_for` the writer of a pass over one or more views of a family (what the
engines use; every store has one).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from feast_bc.errors import FeastBCError
from feast_bc.online_writers.base import Check, FamilyWriter, OnlineWriter
from feast_bc.online_writers.fanout import FanOutWriter
from feast_bc.online_writers.proto import ProtoWriter
from feast_bc.online_writers.redis import RedisBulkWriter
from feast_bc.online_writers.redis_cluster import RedisClusterBulkWriter, RedisClusterFamilyWriter
from feast_bc.online_writers.redis_family import RedisFamilyWriter
from feast_bc.online_writers.sqlite import SqliteBulkWriter
from feast_bc.online_writers.target import StoreTarget, ViewTarget, is_postgres

__all__ = [
    "Check",
    "FamilyWriter",
    "FanOutWriter",
    "OnlineWriter",
    "ProtoWriter",
    "RedisBulkWriter",
    "RedisClusterBulkWriter",
    "RedisClusterFamilyWriter",
    "RedisFamilyWriter",
    "SqliteBulkWriter",
    "StoreTarget",
    "ViewTarget",
    "views_writer_for",
    "writer_for",
]

logger = logging.getLogger(__name__)


def _is_cluster(store: StoreTarget) -> bool:
    return store.store_config.redis_type == RedisType.redis_cluster


def writer_for(
    store: StoreTarget,
    view: ViewTarget,
    *,
    before_write: Check | None = None,
    refuse_newer: bool = False,
    guard: Check | None = None,
) -> OnlineWriter:
    """The fastest writer the online store allows for one view; ``before_write`` must pass before
    anything is written.

    ``refuse_newer``: the Redis writer raises :class:`~feast_bc.errors.CatalogRollbackError` instead
    of silently skipping rows whose stored value is stamped later than the row (Feast's dedup rule).
    SQLite overwrites unconditionally (the pin then serves the catalog's values), as Feast's own
    SQLite writer does; so does PostgreSQL (one binary COPY per batch, the pgvector column filled
    where ``vector_enabled``). Redis Cluster (``redis_type: redis_cluster``) gets the cluster bulk writer
    (same bytes, pipelines per master). A store the bulk writers cannot handle (Redis sentinel or the
    glide client; SQLite with vector columns) gets Feast's own writer, and the log says why.

    ``guard``: called before each batch; the SQLite and PostgreSQL writers call it inside the batch's
    write transaction (:mod:`feast_bc.latest_guard`). Redis needs no such call (``refuse_newer`` compares
    timestamps per entity, atomically); the other writers rely on the engine's check per part."""
    view = ViewTarget(*view)
    try:
        if isinstance(store.online_store, RedisOnlineStore):
            cls = RedisClusterBulkWriter if _is_cluster(store) else RedisBulkWriter
            return cls(store, view, before_write=before_write, refuse_newer=refuse_newer)
        if isinstance(store.online_store, SqliteOnlineStore):
            return SqliteBulkWriter(store, view, before_write=before_write, guard=guard)
        if is_postgres(store.online_store):  # its module needs psycopg: not imported here
            from feast_bc.online_writers.postgres import PostgresBulkWriter

            return PostgresBulkWriter(store, view, before_write=before_write, guard=guard)
    except FeastBCError as exc:
        logger.info("%s: writing through Feast's own online_write_batch: %s", view.name, exc)
    return ProtoWriter(store, view, before_write=before_write)


def views_writer_for(
    store: StoreTarget,
    views: Sequence[ViewTarget],
    *,
    before_write: Check | None = None,
    refuse_newer: bool = False,
    guard: Check | None = None,
) -> FamilyWriter:
    """The writer of one pass over ``views`` (:class:`ViewTarget` each, one or more) of one family.

    Redis gets :class:`RedisFamilyWriter` (one HMGET and one HSET per entity for all the views), a
    Redis Cluster :class:`RedisClusterFamilyWriter` (the same commands, routed per master). Stores
    that keep each view in its own table (SQLite), the Redis setups the bulk writers refuse
    (sentinel, the glide client) and every other store get a :class:`FanOutWriter` of each view's
    :func:`writer_for` -- the pass still reads and transforms the latest file once, and each view's
    rows are written exactly as a pass of that view alone writes them. Never None: every store has
    a writer, so the engines have one path."""
    views = [ViewTarget(*view) for view in views]
    if isinstance(store.online_store, RedisOnlineStore):
        try:
            cls = RedisClusterFamilyWriter if _is_cluster(store) else RedisFamilyWriter
            return cls(store, views, before_write=before_write, refuse_newer=refuse_newer)
        except FeastBCError as exc:
            names = ", ".join(view.name for view in views)
            logger.info("%s: writing through Feast's own online_write_batch: %s", names, exc)
            return FanOutWriter([ProtoWriter(store, view, before_write=before_write) for view in views])
    options = {"before_write": before_write, "refuse_newer": refuse_newer, "guard": guard}
    return FanOutWriter([writer_for(store, view, **options) for view in views])
