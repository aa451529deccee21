"""SQLite (the embedded default): a feast_bc view written with one ``executemany`` per batch."""

from __future__ import annotations

import numpy as np
from feast.infra.online_stores.sqlite import _quote_id, _table_id
from feast.utils import to_naive_utc

from feast_bc.errors import FeastBCError
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE
from feast_bc.online_writers.base import Batch, Check, InlineWriter
from feast_bc.online_writers.encoding import value_bytes, vector_prefix
from feast_bc.online_writers.target import StoreTarget, ViewTarget


class SqliteBulkWriter(InlineWriter):
    """Writes a feast_bc view into Feast's SQLite table with one ``executemany`` per batch.

    Same table, columns and upsert statement as Feast 0.67's ``SqliteOnlineStore.online_write_batch``
    (which runs one ``execute`` per row after building protobufs in Python); the rows are the
    same tuples, built from the vector bytes directly. Stores with ``vector_enabled`` or the
    OpenAI-compatible ``value_num`` column use the protobuf path instead.

    ``guard`` (if given) runs before each batch inside its transaction, after the database's write
    lock is taken: the engines pass :meth:`feast_bc.latest_guard.LatestGuard.check`, which is what
    keeps a superseded pass from overwriting a newer one's values on SQLite.
    """

    def __init__(
        self, store: StoreTarget, view: ViewTarget, *, before_write: Check | None = None, guard: Check | None = None
    ):
        repo_config, cfg = store.repo_config, store.store_config
        if getattr(cfg, "vector_enabled", False) or getattr(cfg, "enable_openai_compatible_store", False):
            raise FeastBCError("the SQLite bulk writer does not fill vector or value_num columns")
        super().__init__(before_write)
        self.guard = guard
        self.conn = store.online_store._get_conn(repo_config)
        versioning = getattr(repo_config.registry, "enable_online_feature_view_versioning", False)
        table = _quote_id(_table_id(repo_config.project, view.feature_view, versioning))
        self.sql = (
            f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
            "created_ts = excluded.created_ts;"
        )
        self.keys = store.entity_keys()
        self.dim = view.dim
        self.vec_prefix = vector_prefix(view.dim)
        self.with_source = view.with_source

    def _write(self, batch: Batch) -> int:
        ts = to_naive_utc(batch.event_time)
        width = 4 * self.dim
        raw = np.ascontiguousarray(batch.vectors, dtype="<f4").tobytes()
        prefix = self.vec_prefix
        keys = self.keys.many(batch.ids)
        rows = [
            (key, EMBEDDING_FEATURE, prefix + raw[i * width : (i + 1) * width], None, ts, None)
            for i, key in enumerate(keys)
        ]
        if self.with_source:
            src_value = value_bytes(int64_val=batch.source_version)
            src_text = str(batch.source_version)
            rows += [(key, SOURCE_VERSION_FEATURE, src_value, src_text, ts, None) for key in keys]
        with self.conn:  # one transaction per batch, like Feast's writer
            if self.guard is not None and not self.conn.in_transaction:
                # the write lock first, then the check: no batch of another run lands in between
                # (feast_bc.latest_guard); a raising guard rolls the empty transaction back
                self.conn.execute("BEGIN IMMEDIATE")
                self.guard()
            self.conn.executemany(self.sql, rows)
        return len(keys)
