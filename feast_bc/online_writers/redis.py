"""Redis: feast_bc views written as hand-built RESP pipelines on a background thread.

Feast's own writer issues one redis-py call per row (~3k rows/s for 256-d vectors on 2 cores).
Every row of a feast_bc view has the same shape -- the same fields, the same event timestamp, a
fixed-length vector -- so the whole pipeline of a chunk is laid out as one numpy byte matrix:
constant parts broadcast, ids and float bytes dropped into their columns. Replies are read
straight off the socket (:mod:`feast_bc.resp`), and the I/O runs on the writer thread of
:class:`~feast_bc.online_writers.pipeline.ThreadedWriter`, so Redis works while the engine computes.

This module holds Feast's hash layout of a view (:class:`ViewFields`), what every Redis writer
shares (:class:`RedisHashWriter`: the commands of a chunk and the timestamp rule), how a chunk
reaches a single Redis (:class:`NodeTransport`), the per-view :class:`RedisBulkWriter` and the
timestamp rules (:func:`keep_mask`, :func:`refuse_newer_values`); :mod:`.redis_family` writes
several views of a family with one HSET per entity. Which Redis a writer talks to is its
*transport*, composed, not inherited: :class:`NodeTransport` here, and
:class:`~.redis_cluster.ClusterTransport` (one pipeline per master, keys routed by hash slot) for
``redis_type: redis_cluster`` -- either writer with either transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import numpy as np

from feast_bc.errors import FeastBCError
from feast_bc.online_writers.base import Batch, Check
from feast_bc.online_writers.pipeline import ThreadedWriter
from feast_bc.online_writers.redis_rows import (
    REDIS_CHUNK_ROWS,
    Rows,
    Stamp,
    ViewFields,
    keep_mask,
    refuse_newer_values,
    resp_bulk,
    rows_by_views,
)
from feast_bc.online_writers.redis_transport import NodeTransport, Transport
from feast_bc.online_writers.target import StoreTarget, ViewTarget

__all__ = ["REDIS_CHUNK_ROWS", "NodeTransport", "RedisBulkWriter", "RedisHashWriter", "Rows", "ViewFields"]


class RedisHashWriter(ThreadedWriter):
    """What the per-view and the family writers share: the connection, the entity keys, the RESP
    layout of a pipeline of keyed commands, the HSET of one or more views' fields, the timestamp
    rule and the chunk loop.

    ``views`` (set by the subclass) holds the :class:`ViewFields` of every view the writer writes;
    :class:`Rows` name them by position. Use it as a context manager
    (:class:`~feast_bc.online_writers.pipeline.ThreadedWriter`): the writer thread owns one
    connection; leaving the block with an exception discards it. Each entity's HSET is atomic, so
    whatever was written is complete. Unless the store is configured with ``skip_dedup: true``, a
    view's rows whose stored timestamp is not older are left alone, exactly like Feast's own writer;
    with ``refuse_newer`` a stored value stamped *later* than the row is refused instead
    (:func:`refuse_newer_values`).
    """

    thread_name = "feast-bc-redis-writer"
    #: How chunks reach the store (:class:`NodeTransport`; :class:`~.redis_cluster.ClusterTransport`).
    transport_class: type[Transport]
    views: list[ViewFields]

    def __init__(
        self,
        store: StoreTarget,
        *,
        chunk_rows: int,
        queue_batches: int = 1,
        before_write: Check | None = None,
        refuse_newer: bool = False,
    ):
        repo_config, cfg = store.repo_config, store.store_config
        client = getattr(cfg, "client", "redis")
        if cfg.redis_type not in self.transport_class.redis_types or client != "redis":
            raise FeastBCError(
                "the Redis bulk writers handle redis_type redis and redis_cluster with the redis-py client, not "
                f"redis_type {cfg.redis_type.value} with the {client} client"
            )
        super().__init__(queue_batches=queue_batches, before_write=before_write)
        self.client = self.transport_class.connect(store.online_store, cfg)
        self.project = repo_config.project.encode()
        self.skip_dedup = bool(cfg.skip_dedup)
        self.ttl = cfg.key_ttl_seconds
        self.chunk_rows = max(1, int(chunk_rows))
        self.keys = store.entity_keys()
        self.refuse_newer = refuse_newer
        self.transport = self.transport_class(self)

    @property
    def label(self) -> str:
        """The views written, for messages."""
        return ", ".join(v.view_name for v in self.views)

    @property
    def redirected(self) -> int:
        """Rows a Redis Cluster redirected (MOVED/ASK) and that were written again (0 on one node)."""
        return getattr(self.transport, "redirected", 0)

    def _count(self, members: list[int], rows: int) -> None:
        """``rows`` more rows written for each view at ``members``."""
        raise NotImplementedError

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
            np.ascontiguousarray(ids, dtype="<i8").view(np.uint8).reshape(n, 8),
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

    def _hset_payload(self, rows: Rows, command_prefix: bytes = b"") -> bytes:
        """One HSET per row carrying the fields of every view of ``rows``, plus its EXPIRE when the
        store sets a TTL; ``command_prefix`` goes before each command (a cluster's ``ASKING``)."""
        views = [self.views[m] for m in rows.members]
        args = 2 + sum(2 * view.field_count for view in views)
        stamp = rows.stamp
        after_key = [
            part
            for view, vectors in zip(views, rows.vectors, strict=True)
            for part in view.hset_parts(vectors, stamp.src_value, stamp.ts_value)
        ]
        payload = self._keyed_commands(rows.ids, command_prefix + b"*%d\r\n$4\r\nHSET\r\n" % args, after_key)
        if self.ttl:
            payload += self._expire_payload(rows.ids, command_prefix)
        return payload

    def _expire_payload(self, ids: np.ndarray, command_prefix: bytes = b"") -> bytes:
        ttl = resp_bulk(str(int(self.ttl)).encode())
        return self._keyed_commands(ids, command_prefix + b"*3\r\n$6\r\nEXPIRE\r\n", [ttl])

    def _exists_payload(self, rows: Rows) -> bytes:
        """One EXISTS of every key of ``rows``: how many of their hashes exist at all."""
        keys = self._keyed_commands(rows.ids, b"", [])
        return b"*%d\r\n$6\r\nEXISTS\r\n%s" % (1 + len(rows), keys)

    def _hmget_payload(self, rows: Rows, command_prefix: bytes = b"") -> bytes:
        """One HMGET per row of the timestamp fields of the views of ``rows``."""
        fields = b"".join(resp_bulk(self.views[m].ts_field) for m in rows.members)
        head = command_prefix + b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(rows.members))
        return self._keyed_commands(rows.ids, head, [fields])

    @property
    def _replies_per_row(self) -> int:
        return 2 if self.ttl else 1

    # ------------------------------------------------------------------ timestamp rule
    def _to_write(self, rows: Rows, per_view: list[list[tuple[bytes | None, int]]]) -> list[Rows]:
        """What of ``rows`` to HSET, given each of its views' stored timestamps (HMGET runs in row
        order): Feast's rule per view, rows grouped by the set of views they need (nearly always
        ``[rows]`` itself). With ``refuse_newer`` a stored value stamped later than the rows raises."""
        if not len(rows):
            return []
        stamp = rows.stamp
        if self.refuse_newer:
            for m, runs in zip(rows.members, per_view, strict=True):
                refuse_newer_values(self.views[m].view_name, runs, stamp.ts_value, stamp.nanos, stamp.event_time)
        masks = [keep_mask(runs, stamp.ts_value, stamp.nanos) for runs in per_view]
        return [
            rows if index is None and len(positions) == len(rows.members) else rows.take(index, positions)
            for index, positions in rows_by_views(masks, len(rows))
        ]

    # ----------------------------------------------------------------------------- I/O
    def _consume(self, batches: Iterator) -> None:
        self.transport.consume(batches)

    def _interrupt(self) -> None:
        self.transport.interrupt()

    def _write_batch(self, pending, batch):
        """Send one unit of work; return what is still in flight (the transport's :meth:`write_chunk`)."""
        raise NotImplementedError

    def _write_views(
        self,
        pending,
        ids: np.ndarray,
        views: list[tuple[int, np.ndarray]],
        source_version: int,
        event_time: datetime,
    ):
        """Send rows of one or more views ((position in ``views``, vectors) each) chunk by chunk
        through the transport; return what is still in flight."""
        stamp = Stamp.of(source_version, event_time)
        members = [m for m, _ in views]
        for start in range(0, len(ids), self.chunk_rows):
            self.check_abort()
            stop = start + self.chunk_rows
            chunk = Rows(ids[start:stop], members, [vectors[start:stop] for _, vectors in views], stamp)
            pending = self.transport.write_chunk(pending, chunk)
        return pending


class RedisBulkWriter(RedisHashWriter):
    """Writes one feast_bc view into Feast's Redis layout with hand-built RESP pipelines
    (see :class:`RedisHashWriter` for the contract, :class:`ViewFields` for the layout)."""

    transport_class = NodeTransport

    def __init__(
        self,
        store: StoreTarget,
        view: ViewTarget,
        *,
        chunk_rows: int = REDIS_CHUNK_ROWS,
        queue_batches: int = 1,
        before_write: Check | None = None,
        refuse_newer: bool = False,
    ):
        super().__init__(
            store,
            chunk_rows=chunk_rows,
            queue_batches=queue_batches,
            before_write=before_write,
            refuse_newer=refuse_newer,
        )
        self.views = [ViewFields(store.repo_config, view)]
        self.dim = view.dim
        self.view_name = view.name

    def _count(self, members: list[int], rows: int) -> None:
        self.written += rows

    def _write_batch(self, pending, batch: Batch):
        return self._write_views(pending, batch.ids, [(0, batch.vectors)], batch.source_version, batch.event_time)
