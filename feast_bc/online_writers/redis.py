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
family with one HSET per entity; :mod:`.redis_cluster` sends either writer's chunks to the masters
of a Redis Cluster (its own :meth:`RedisHashWriter._write_chunk`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import NamedTuple

import numpy as np
from feast.infra.online_stores.helpers import _mmh3
from feast.infra.online_stores.redis import RedisType, _versioned_fv_name

from feast_bc.errors import CatalogRollbackError, FeastBCError
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE
from feast_bc.online_writers.base import Batch, Check
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
    #: The ``redis_type``s of Feast's Redis store this writer handles (:mod:`.redis_cluster` takes clusters).
    redis_types: tuple[RedisType, ...] = (RedisType.redis,)
    views: list[ViewFields]

    def __init__(
        self,
        repo_config,
        online_store,
        join_key: str,
        id_dtype: str,
        *,
        chunk_rows: int,
        queue_batches: int = 1,
        before_write: Check | None = None,
        refuse_newer: bool = False,
    ):
        cfg = repo_config.online_store
        client = getattr(cfg, "client", "redis")
        if cfg.redis_type not in self.redis_types or client != "redis":
            raise FeastBCError(
                "the Redis bulk writers handle redis_type redis and redis_cluster with the redis-py client, not "
                f"redis_type {cfg.redis_type.value} with the {client} client"
            )
        super().__init__(queue_batches=queue_batches, before_write=before_write)
        self.client = online_store._get_client(cfg)
        self.project = repo_config.project.encode()
        self.skip_dedup = bool(cfg.skip_dedup)
        self.ttl = cfg.key_ttl_seconds
        self.chunk_rows = max(1, int(chunk_rows))
        self.keys = EntityKeys(join_key, id_dtype, repo_config.entity_key_serialization_version)
        self.refuse_newer = refuse_newer
        self._pipe: Pipeline | None = None
        #: Ask one EXISTS per chunk before paying an HMGET per entity (see :meth:`_write_chunk`).
        self.probe_keys = True

    @property
    def label(self) -> str:
        """The views written, for messages."""
        return ", ".join(v.view_name for v in self.views)

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

    def _write_batch(self, pipe, pending, batch):
        """Send one unit of work; return what is still in flight (see :meth:`_write_chunk`)."""
        raise NotImplementedError

    def _write_views(
        self,
        pipe,
        pending,
        ids: np.ndarray,
        views: list[tuple[int, np.ndarray]],
        source_version: int,
        event_time: datetime,
    ):
        """Send rows of one or more views ((position in ``views``, vectors) each) chunk by chunk
        through :meth:`_write_chunk`; return what is still in flight."""
        stamp = Stamp.of(source_version, event_time)
        members = [m for m, _ in views]
        for start in range(0, len(ids), self.chunk_rows):
            self.check_abort()
            stop = start + self.chunk_rows
            chunk = Rows(ids[start:stop], members, [vectors[start:stop] for _, vectors in views], stamp)
            pending = self._write_chunk(pipe, pending, chunk)
        return pending

    def _write_chunk(self, pipe: Pipeline, pending: int, chunk: Rows) -> int:
        """Send one chunk on the one connection: per entity one HMGET of every view's timestamp
        field, then one HSET of the fields of every view whose stored timestamp is older. ``pending``
        is the number of integer replies still in flight before, the return value after it.

        Order on the wire per chunk: [HMGET of this chunk] then its HSETs. The HMGET queues behind
        the previous chunk's HSETs, so Redis never waits for us while we build this chunk's HSETs
        (for every row and view; rebuilt for fewer only when some stored values are not older).
        With ``refuse_newer`` a stored value stamped later than the rows raises before any HSET of
        the chunk is sent.

        Key probe: while ``probe_keys`` holds, a chunk first asks one ``EXISTS`` of all its keys
        instead of the HMGETs. No hash exists (a family materialized for the first time, new ids):
        nothing stored can be newer, so the HSETs go without an HMGET -- measured, the HMGETs were
        about a sixth of Redis's CPU for a fresh 5-view family. Some exist: the chunk's HMGETs follow, and
        the writer stops probing (the store holds this project's entities; re-materializing after a
        new version finds every key, and the probe would only add a command).
        """
        dedup = not self.skip_dedup
        probing = dedup and self.probe_keys
        if dedup:
            pipe.send(self._exists_payload(chunk) if probing else self._hmget_payload(chunk))
        payload = self._hset_payload(chunk)
        pipe.replies.integers(pending)
        pending = 0
        if probing and pipe.replies.integer():  # some hashes exist: their timestamps decide
            self.probe_keys = probing = False
            pipe.send(self._hmget_payload(chunk))
        groups = [chunk]
        if dedup and not probing:
            groups = self._to_write(chunk, pipe.replies.field_arrays(len(chunk), len(chunk.members)))
        for rows in groups:
            pipe.send(payload if rows is chunk else self._hset_payload(rows))
            pending += self._replies_per_row * len(rows)
            self._count(rows.members, len(rows))
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
        before_write: Check | None = None,
        refuse_newer: bool = False,
    ):
        super().__init__(
            repo_config,
            online_store,
            join_key,
            id_dtype,
            chunk_rows=chunk_rows,
            queue_batches=queue_batches,
            before_write=before_write,
            refuse_newer=refuse_newer,
        )
        self.views = [ViewFields(repo_config, feature_view, dim)]
        self.dim = dim
        self.view_name = feature_view.name

    def _count(self, members: list[int], rows: int) -> None:
        self.written += rows

    def _write_batch(self, pipe, pending, batch: Batch):
        return self._write_views(pipe, pending, batch.ids, [(0, batch.vectors)], batch.source_version, batch.event_time)


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
