"""Writers that put (ids, vectors) into a Feast online store byte-for-byte as Feast would.

One module per store, in the way Feast lays out ``feast/infra/online_stores/``:

* :mod:`.redis` -- :class:`RedisBulkWriter`: hand-built RESP pipelines on a background thread;
* :mod:`.redis_cluster` -- :class:`RedisClusterBulkWriter`: the same pipelines, one per cluster master;
* :mod:`.sqlite` -- :class:`SqliteBulkWriter`: one ``executemany`` per batch;
* :mod:`.proto` -- :class:`ProtoWriter`: every other store, through its own ``online_write_batch``;

and the pieces they share: :mod:`.base` (the writer protocol, the caller-thread writer),
:mod:`.pipeline` (the threaded pipeline: thread, bounded queue, abort) and :mod:`.encoding`
(Feast's key and value encodings). :func:`writer_for` picks the fastest writer a store allows.
"""

from __future__ import annotations

import logging

from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
from feast.infra.online_stores.sqlite import SqliteOnlineStore

from feast_bc.errors import FeastBCError
from feast_bc.online_writers.base import Gate, OnlineWriter
from feast_bc.online_writers.proto import ProtoWriter
from feast_bc.online_writers.redis import RedisBulkWriter
from feast_bc.online_writers.redis_cluster import RedisClusterBulkWriter
from feast_bc.online_writers.sqlite import SqliteBulkWriter

__all__ = ["OnlineWriter", "ProtoWriter", "RedisBulkWriter", "RedisClusterBulkWriter", "SqliteBulkWriter", "writer_for"]

logger = logging.getLogger(__name__)


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
) -> OnlineWriter:
    """The fastest writer the online store allows; ``gate`` must pass before anything is written.

    ``refuse_newer``: the Redis writer raises :class:`~feast_bc.errors.CatalogRollbackError` instead
    of silently skipping rows whose stored value is stamped later than the row (Feast's dedup rule).
    SQLite overwrites unconditionally (the pin then serves the catalog's values), as Feast's own
    SQLite writer does. Redis Cluster (``redis_type: redis_cluster``) gets the cluster bulk writer
    (same bytes, pipelines per master). A store the bulk writers cannot handle (Redis sentinel or the
    glide client; SQLite with vector columns) gets Feast's own writer, and the log says why."""
    args = (repo_config, online_store, feature_view, join_key, id_dtype, dim)
    try:
        if isinstance(online_store, RedisOnlineStore):
            cls = (
                RedisClusterBulkWriter
                if repo_config.online_store.redis_type == RedisType.redis_cluster
                else RedisBulkWriter
            )
            return cls(*args, gate=gate, refuse_newer=refuse_newer)
        if isinstance(online_store, SqliteOnlineStore):
            return SqliteBulkWriter(*args, gate=gate)
    except FeastBCError as exc:
        logger.info("%s: writing through Feast's own online_write_batch: %s", feature_view.name, exc)
    return ProtoWriter(*args, gate=gate)
