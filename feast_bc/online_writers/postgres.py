"""PostgreSQL (with pgvector for search): a feast_bc view written by one binary COPY per batch.

Feast 0.67's ``PostgreSQLOnlineStore.online_write_batch`` builds protobufs per row, formats every
vector as text (``"[0.1, ...]"``) and sends one ``executemany`` of upserts. This writer sends the
same rows -- same table, same key and value bytes, the same float32 values in ``vector_value`` --
as one binary ``COPY`` into a temporary table and one ``INSERT ... ON CONFLICT DO UPDATE`` from it,
in one transaction per batch. ``event_ts`` is staged as a timestamp without time zone and cast on
insert, exactly as Feast's naive-UTC parameter is, so both writers store the same instant.
"""

from __future__ import annotations

import struct
from datetime import datetime

import numpy as np
from feast.infra.online_stores.helpers import _to_naive_utc
from feast.infra.online_stores.postgres_online_store.postgres import _table_id
from psycopg import sql

from feast_bc.errors import FeastBCError
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE
from feast_bc.online_writers.base import Batch, Check, InlineWriter
from feast_bc.online_writers.encoding import value_bytes, vector_prefix
from feast_bc.online_writers.target import StoreTarget, ViewTarget

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER = struct.pack("!h", -1)
_NULL = struct.pack("!i", -1)
_POSTGRES_EPOCH = datetime(2000, 1, 1)  # binary timestamps count microseconds from here
_COLUMNS = ("entity_key", "feature_name", "value", "value_text", "vector_value", "event_ts", "created_ts")


def _field(data: bytes) -> bytes:
    return struct.pack("!i", len(data)) + data


class PostgresBulkWriter(InlineWriter):
    """Writes a feast_bc view into Feast's PostgreSQL table, one binary COPY + upsert per batch.

    With ``vector_enabled`` the ``vector_value`` column (pgvector ``vector``) holds the embedding,
    which is what ``retrieve_online_documents_v2`` searches; without it the column stays NULL, as
    Feast leaves it. Stores with the OpenAI-compatible ``value_num`` column use Feast's own writer.

    ``guard`` (if given) runs inside each batch's transaction after a transaction-scoped advisory
    lock on the table: the engines pass :meth:`feast_bc.latest_guard.LatestGuard.check`, which is
    what keeps a superseded pass from overwriting a newer one's values (as on SQLite).
    """

    def __init__(
        self, store: StoreTarget, view: ViewTarget, *, before_write: Check | None = None, guard: Check | None = None
    ):
        repo_config, cfg, dim = store.repo_config, store.store_config, view.dim
        if getattr(cfg, "enable_openai_compatible_store", False):
            raise FeastBCError("the PostgreSQL bulk writer does not fill the value_num column")
        super().__init__(before_write)
        self.guard = guard
        self.repo_config = repo_config
        self.online_store = store.online_store
        self.dim = dim
        self.vectors = bool(getattr(cfg, "vector_enabled", False))
        versioning = getattr(repo_config.registry, "enable_online_feature_view_versioning", False)
        table_name = _table_id(repo_config.project, view.feature_view, versioning)
        table = sql.Identifier(table_name)
        self.lock = sql.SQL("SELECT pg_advisory_xact_lock(hashtext({}))").format(sql.Literal(table_name))
        columns = sql.SQL(", ").join(map(sql.Identifier, _COLUMNS))
        updates = sql.SQL(", ").join(
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in _COLUMNS if c not in _COLUMNS[:2]
        )
        self.stage = sql.SQL(
            "CREATE TEMP TABLE feast_bc_stage (entity_key BYTEA, feature_name TEXT, value BYTEA, "
            "value_text TEXT, vector_value {}, event_ts TIMESTAMP, created_ts TIMESTAMP) ON COMMIT DROP"
        ).format(sql.SQL("vector" if self.vectors else "BYTEA"))
        self.upsert = sql.SQL(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM feast_bc_stage "
            "ON CONFLICT (entity_key, feature_name) DO UPDATE SET {updates}"
        ).format(table=table, columns=columns, updates=updates)
        self.keys = store.entity_keys()
        self.with_source = view.with_source
        # the constant parts of an embedding row, around its key and its two copies of the vector
        self.name_field = _field(EMBEDDING_FEATURE.encode())
        self.value_len = struct.pack("!i", len(vector_prefix(dim)) + 4 * dim) + vector_prefix(dim)
        self.vector_head = (
            _NULL + struct.pack("!ihh", 4 + 4 * dim, dim, 0) if self.vectors else _NULL + _NULL
        )  # value_text NULL, then the pgvector binary header (dim, unused) or a NULL column

    def _write(self, batch: Batch) -> int:
        ts = _to_naive_utc(batch.event_time)
        delta = ts - _POSTGRES_EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        tail = _field(struct.pack("!q", micros)) + _NULL  # event_ts, created_ts NULL
        vectors = np.ascontiguousarray(batch.vectors, dtype="<f4")
        little = vectors.tobytes()
        big = vectors.astype(">f4").tobytes() if self.vectors else b""
        width = 4 * self.dim
        count, name, value_len, head = (
            struct.pack("!h", len(_COLUMNS)),
            self.name_field,
            self.value_len,
            self.vector_head,
        )
        keys = self.keys.many(batch.ids)
        parts = [_HEADER]
        for i, key in enumerate(keys):
            lo = i * width
            row = [count, _field(key), name, value_len, little[lo : lo + width], head]
            if self.vectors:
                row.append(big[lo : lo + width])
            row.append(tail)
            parts.append(b"".join(row))
        if self.with_source:
            src = _field(SOURCE_VERSION_FEATURE.encode()) + _field(value_bytes(int64_val=batch.source_version))
            src += _field(str(batch.source_version).encode()) + _NULL + tail
            parts.extend(count + _field(key) + src for key in keys)
        parts.append(_TRAILER)
        with self.online_store._get_conn(self.repo_config) as conn:
            try:  # one transaction per batch, like Feast's writer: all of it or none of it
                with conn.cursor() as cur:
                    if self.guard is not None:
                        # the table's lock first, then the check: no batch of another run lands in
                        # between (feast_bc.latest_guard; SQLite's BEGIN IMMEDIATE does the same)
                        cur.execute(self.lock)
                        self.guard()
                    cur.execute(self.stage)
                    with cur.copy(sql.SQL("COPY feast_bc_stage FROM STDIN (FORMAT BINARY)")) as copy:
                        copy.write(b"".join(parts))
                    cur.execute(self.upsert)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return len(keys)
