"""Redis: feast_bc views written as hand-built RESP pipelines on a background thread.

Feast's own writer issues one redis-py call per row (~3k rows/s for 256-d vectors on 2 cores).
Every row of a feast_bc view has the same shape -- the same fields, the same event timestamp, a
fixed-length vector -- so the whole pipeline of a chunk is laid out as one numpy byte matrix:
constant parts broadcast, ids and float bytes dropped into their columns. Replies are read
straight off the socket (:mod:`feast_bc.resp`), and the I/O runs on the writer thread of
:class:`~feast_bc.online_writers.pipeline.ThreadedWriter`, so Redis works while the engine computes.

This module holds Feast's hash layout of a view (:class:`ViewFields`), what every Redis writer
shares (:class:`RedisHashWriter`), the per-view :class:`RedisBulkWriter` and the timestamp rules
(:func:`keep_mask`, :func:`refuse_newer_values`); :mod:`.redis_family` writes several views of a
family with one HSET per entity.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisType, _versioned_fv_name

from feast_bc.errors import CatalogRollbackError, FeastBCError
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE
from feast_bc.online_writers.base import Batch, Gate
from feast_bc.online_writers.encoding import EntityKeys, timestamp_bytes, timestamp_nanos, value_bytes, vector_prefix
from feast_bc.online_writers.pipeline import ThreadedWriter
from feast_bc.resp import Pipeline

#: Rows per pipelined round trip to Redis (~2 KB each at 512-d): bounds client and server buffers.
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

    def __init__(self, repo_config, feature_view, dim: int):
        view = _versioned_fv_name(feature_view, repo_config)
        self.view_name = feature_view.name
        self.dim = dim
        self.ts_field = f"_ts:{view}".encode()
        self.emb_field = _mmh3(f"{view}:{EMBEDDING_FEATURE}")
        features = {f.name for f in feature_view.features}
        self.src_field = _mmh3(f"{view}:{SOURCE_VERSION_FEATURE}") if SOURCE_VERSION_FEATURE in features else None
        self.vec_prefix = vector_prefix(dim)

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


class RedisHashWriter(ThreadedWriter):
    """What the per-view and the family writer share: the connection, the entity keys, the RESP
    layout of a pipeline of keyed commands, and the HSET of one or more views' fields.

    Use it as a context manager (:class:`~feast_bc.online_writers.pipeline.ThreadedWriter`): the
    writer thread owns one connection; leaving the block with an exception discards it. Each
    entity's HSET is atomic, so whatever was written is complete. Unless the store is configured
    with ``skip_dedup: true``, a view's rows whose stored timestamp is not older are left alone,
    exactly like Feast's own writer; with ``refuse_newer`` a stored value stamped *later* than the
    row is refused instead (:func:`refuse_newer_values`).
    """

    thread_name = "feast-bc-redis-writer"

    def __init__(
        self,
        repo_config,
        online_store,
        join_key: str,
        id_dtype: str,
        *,
        chunk_rows: int,
        queue_batches: int = 1,
        gate: Gate | None = None,
        refuse_newer: bool = False,
    ):
        cfg = repo_config.online_store
        if cfg.redis_type != RedisType.redis or getattr(cfg, "client", "redis") != "redis":
            raise FeastBCError("the Redis bulk writer handles standalone Redis with the redis-py client only")
        super().__init__(queue_batches=queue_batches, gate=gate)
        self.client = online_store._get_client(cfg)
        self.project = repo_config.project.encode()
        self.skip_dedup = bool(cfg.skip_dedup)
        self.ttl = cfg.key_ttl_seconds
        self.chunk_rows = max(1, int(chunk_rows))
        self.keys = EntityKeys(join_key, id_dtype, repo_config.entity_key_serialization_version)
        self.refuse_newer = refuse_newer
        self._pipe: Pipeline | None = None

    # --------------------------------------------------------------------------- encoding
    def redis_keys(self, ids: np.ndarray) -> list[bytes]:
        return self.keys.many(ids, suffix=self.project)

    def _keyed_commands(self, ids: np.ndarray, before_key: bytes, after_key: list) -> bytes:
        """``before_key + $len key + after_key`` for every id, as one bytes; ``after_key`` holds
        constant bytes and (n, width) uint8 matrices (one row per id).

        With int64 ids every record has the same length, so the whole batch is one (n, width)
        uint8 matrix: constant parts broadcast, ids (and vector bytes) dropped into their columns.
        """
        n = len(ids)
        prefix = self.keys.int_prefix
        if prefix is None:
            return b"".join(
                before_key
                + resp_bulk(key)
                + b"".join(part if isinstance(part, bytes) else part[i].tobytes() for part in after_key)
                for i, key in enumerate(self.redis_keys(ids))
            )
        key_len = len(prefix) + 8 + len(self.project)
        parts = [
            before_key + b"$%d\r\n%s" % (key_len, prefix),
            np.asarray(ids, dtype="<i8").view(np.uint8).reshape(n, 8),
            self.project + b"\r\n",
        ]
        for part in after_key:  # adjacent constants become one column block
            if isinstance(part, bytes) and isinstance(parts[-1], bytes):
                parts[-1] += part
            else:
                parts.append(part)
        width = sum(len(p) if isinstance(p, bytes) else p.shape[1] for p in parts)
        out = np.empty((n, width), dtype=np.uint8)
        col = 0
        for part in parts:
            if isinstance(part, bytes):
                if part:
                    out[:, col : col + len(part)] = np.frombuffer(part, dtype=np.uint8)
                col += len(part)
            else:
                out[:, col : col + part.shape[1]] = part
                col += part.shape[1]
        return out.tobytes()

    def _views_hset_payload(self, ids: np.ndarray, views: list[tuple[ViewFields, np.ndarray, bytes, bytes]]) -> bytes:
        """One HSET per id carrying every given view's fields ((fields, vectors, source value,
        timestamp value) per view), plus its EXPIRE when the store sets a TTL."""
        args = 2 + sum(2 * fields.field_count for fields, *_ in views)
        after_key = [part for fields, *values in views for part in fields.hset_parts(*values)]
        payload = self._keyed_commands(ids, b"*%d\r\n$4\r\nHSET\r\n" % args, after_key)
        if self.ttl:
            payload += self._keyed_commands(ids, b"*3\r\n$6\r\nEXPIRE\r\n", [resp_bulk(str(int(self.ttl)).encode())])
        return payload

    def _hmget_payload(self, ids: np.ndarray, views: list[ViewFields]) -> bytes:
        """One HMGET per id of the given views' timestamp fields."""
        fields = b"".join(resp_bulk(v.ts_field) for v in views)
        return self._keyed_commands(ids, b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(views)), [fields])

    # ----------------------------------------------------------------------------- I/O
    def _consume(self, batches: Iterator) -> None:
        with Pipeline(self.client) as pipe:
            self._pipe = pipe
            pending = 0  # integer replies of the chunk still in flight
            for batch in batches:
                pending = self._write_batch(pipe, pending, batch)
            pipe.replies.integers(pending)
            pipe.clean = True

    def _interrupt(self) -> None:
        if self._pipe is not None:  # cut the connection the writer thread waits on
            self._pipe.conn.disconnect()

    def _write_batch(self, pipe: Pipeline, pending: int, batch) -> int:
        """Send one unit of work; return the number of integer replies still in flight."""
        raise NotImplementedError

    def _write_views(
        self,
        pipe: Pipeline,
        pending: int,
        ids: np.ndarray,
        views: list[tuple[ViewFields, np.ndarray]],
        source_version: int,
        event_time: datetime,
        written: list[int],
    ) -> int:
        """Send rows of one or more views (fields, vectors per view) chunk by chunk: per entity one
        HMGET of every view's timestamp field, then one HSET of the fields of every view whose stored
        timestamp is older (Feast's rule, per view). ``written[i]`` grows by the rows written for
        ``views[i]``. Return the number of integer replies still in flight.

        Order on the wire per chunk: [HMGET of this chunk] then its HSETs. The HMGET queues behind
        the previous chunk's HSETs, so Redis never waits for us while we build this chunk's HSETs
        (for every row and view; rebuilt for fewer only when some stored values are not older).
        With ``refuse_newer`` a stored value stamped later than the rows raises before any HSET of
        the chunk is sent.
        """
        fields = [f for f, _ in views]
        everything = list(range(len(views)))
        ts_value = timestamp_bytes(event_time)
        src_value = value_bytes(int64_val=source_version)
        new_nanos = timestamp_nanos(ts_value)
        per_row = 2 if self.ttl else 1
        for start in range(0, len(ids), self.chunk_rows):
            self.check_abort()
            stop = start + self.chunk_rows
            chunk_ids = ids[start:stop]
            chunk_vecs = [vectors[start:stop] for _, vectors in views]
            if not self.skip_dedup:
                pipe.send(self._hmget_payload(chunk_ids, fields))
            payload = self._views_hset_payload(
                chunk_ids, [(f, v, src_value, ts_value) for f, v in zip(fields, chunk_vecs, strict=True)]
            )
            pipe.replies.integers(pending)
            pending = 0
            groups = [(None, everything)]
            if not self.skip_dedup:
                per_view = pipe.replies.field_arrays(len(chunk_ids), len(fields))
                if self.refuse_newer:
                    for view, runs in zip(fields, per_view, strict=True):
                        refuse_newer_values(view.view_name, runs, ts_value, new_nanos, event_time)
                groups = rows_by_views([keep_mask(runs, ts_value, new_nanos) for runs in per_view], len(chunk_ids))
            for rows, members in groups:
                group_ids = chunk_ids
                if rows is not None or members != everything:
                    group_ids = chunk_ids if rows is None else chunk_ids[rows]
                    selected = [chunk_vecs[m] if rows is None else chunk_vecs[m][rows] for m in members]
                    payload = self._views_hset_payload(
                        group_ids, [(fields[m], v, src_value, ts_value) for m, v in zip(members, selected, strict=True)]
                    )
                pipe.send(payload)
                pending += per_row * len(group_ids)
                for m in members:
                    written[m] += len(group_ids)
        return pending


class RedisBulkWriter(RedisHashWriter):
    """Writes one feast_bc view into Feast's Redis layout with hand-built RESP pipelines
    (see :class:`RedisHashWriter` for the contract, :class:`ViewFields` for the layout)."""

    def __init__(
        self,
        repo_config,
        online_store,
        feature_view,
        join_key: str,
        id_dtype: str,
        dim: int,
        *,
        chunk_rows: int = REDIS_CHUNK_ROWS,
        queue_batches: int = 1,
        gate: Gate | None = None,
        refuse_newer: bool = False,
    ):
        super().__init__(
            repo_config,
            online_store,
            join_key,
            id_dtype,
            chunk_rows=chunk_rows,
            queue_batches=queue_batches,
            gate=gate,
            refuse_newer=refuse_newer,
        )
        self.fields = ViewFields(repo_config, feature_view, dim)
        self.dim = dim
        self.view_name = feature_view.name

    def _write_batch(self, pipe: Pipeline, pending: int, batch: Batch) -> int:
        written = [0]
        pending = self._write_views(
            pipe, pending, batch.ids, [(self.fields, batch.vectors)], batch.source_version, batch.event_time, written
        )
        self.written += written[0]
        return pending


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
