"""Redis: a feast_bc view written as hand-built RESP pipelines on a background thread.

Feast's own writer issues one redis-py call per row (~3k rows/s for 256-d vectors on 2 cores).
Every row of a feast_bc view has the same shape -- the same fields, the same event timestamp, a
fixed-length vector -- so the whole pipeline of a chunk is laid out as one numpy byte matrix:
constant parts broadcast, ids and float bytes dropped into their columns. Replies are read
straight off the socket (:mod:`feast_bc.resp`), and the I/O runs on the writer thread of
:class:`~feast_bc.online_writers.pipeline.ThreadedWriter`, so Redis works while the engine computes.
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


class RedisBulkWriter(ThreadedWriter):
    """Writes a feast_bc view into Feast's Redis layout with hand-built RESP pipelines.

    Layout (Feast 0.67 ``redis.py``): key = serialized entity key (v3) + project; hash fields
    ``mmh3("<view>:<feature>")`` -> serialized Value, and ``_ts:<view>`` -> serialized Timestamp.
    Unless the store is configured with ``skip_dedup: true``, rows whose stored timestamp is not
    older are left alone, exactly like Feast's own writer; with ``refuse_newer`` a stored value
    stamped *later* than the row is refused instead (:meth:`_refuse_newer`).

    Use it as a context manager (:class:`~feast_bc.online_writers.pipeline.ThreadedWriter`): the
    writer thread owns one connection; leaving the block with an exception discards it. Each
    entity's HSET is atomic, so whatever was written is complete.
    """

    thread_name = "feast-bc-redis-writer"
    #: The ``redis_type``s of Feast's Redis store this writer handles (:mod:`.redis_cluster` takes clusters).
    redis_types: tuple[RedisType, ...] = (RedisType.redis,)

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
        cfg = repo_config.online_store
        client = getattr(cfg, "client", "redis")
        if cfg.redis_type not in self.redis_types or client != "redis":
            raise FeastBCError(
                "the Redis bulk writers handle redis_type redis and redis_cluster with the redis-py client, not "
                f"redis_type {cfg.redis_type.value} with the {client} client"
            )
        super().__init__(queue_batches=queue_batches, gate=gate)
        self.client = online_store._get_client(cfg)
        self.project = repo_config.project.encode()
        self.skip_dedup = bool(cfg.skip_dedup)
        self.ttl = cfg.key_ttl_seconds
        self.dim = dim
        self.chunk_rows = int(chunk_rows)
        view = _versioned_fv_name(feature_view, repo_config)
        self.ts_field = f"_ts:{view}".encode()
        self.emb_field = _mmh3(f"{view}:{EMBEDDING_FEATURE}")
        features = {f.name for f in feature_view.features}
        self.src_field = _mmh3(f"{view}:{SOURCE_VERSION_FEATURE}") if SOURCE_VERSION_FEATURE in features else None
        self.vec_prefix = vector_prefix(dim)
        self.keys = EntityKeys(join_key, id_dtype, repo_config.entity_key_serialization_version)
        self.refuse_newer = refuse_newer
        self.view_name = feature_view.name
        self._pipe: Pipeline | None = None

    # --------------------------------------------------------------------------- encoding
    def redis_keys(self, ids: np.ndarray) -> list[bytes]:
        return self.keys.many(ids, suffix=self.project)

    def _keyed_commands(
        self,
        ids: np.ndarray,
        before_key: bytes,
        after_key: bytes,
        row_data: np.ndarray | None = None,
        after_data: bytes = b"",
    ) -> bytes:
        """``before_key + $len key + after_key [+ row_data + after_data]`` for every id, as one bytes.

        With int64 ids every record has the same length, so the whole batch is one (n, width)
        uint8 matrix: constant parts broadcast, ids (and vector bytes) dropped into their columns.
        """
        n = len(ids)
        prefix = self.keys.int_prefix
        if prefix is None:
            rows = row_data if row_data is not None else [None] * n
            return b"".join(
                before_key + resp_bulk(key) + after_key + (b"" if row is None else row.tobytes() + after_data)
                for key, row in zip(self.redis_keys(ids), rows, strict=True)
            )
        key_len = len(prefix) + 8 + len(self.project)
        parts = [
            (before_key + b"$%d\r\n%s" % (key_len, prefix), None),
            (None, np.ascontiguousarray(ids, dtype="<i8").view(np.uint8).reshape(n, 8)),
            (self.project + b"\r\n" + after_key, None),
        ]
        if row_data is not None:
            parts += [(None, row_data), (after_data, None)]
        width = sum(len(c) if c is not None else a.shape[1] for c, a in parts)
        out = np.empty((n, width), dtype=np.uint8)
        col = 0
        for const, arr in parts:
            if const is not None:
                if const:
                    out[:, col : col + len(const)] = np.frombuffer(const, dtype=np.uint8)
                col += len(const)
            else:
                out[:, col : col + arr.shape[1]] = arr
                col += arr.shape[1]
        return out.tobytes()

    def _hset_payload(
        self, ids: np.ndarray, vectors: np.ndarray, src_value: bytes, ts_value: bytes, command_prefix: bytes = b""
    ) -> bytes:
        """HSET of every row (then EXPIRE of every row with a TTL); ``command_prefix`` goes before each
        command (a cluster's ``ASKING``)."""
        value_len = len(self.vec_prefix) + 4 * self.dim
        tail = resp_bulk(self.ts_field) + resp_bulk(ts_value)
        if self.src_field is not None:
            tail = resp_bulk(self.src_field) + resp_bulk(src_value) + tail
        hset = command_prefix + b"*%d\r\n$4\r\nHSET\r\n" % (6 if self.src_field is None else 8)
        vec_bytes = np.ascontiguousarray(vectors, dtype="<f4").view(np.uint8).reshape(len(ids), 4 * self.dim)
        emb_head = resp_bulk(self.emb_field) + b"$%d\r\n%s" % (value_len, self.vec_prefix)
        payload = self._keyed_commands(ids, hset, emb_head, vec_bytes, b"\r\n" + tail)
        if self.ttl:
            payload += self._expire_payload(ids, command_prefix)
        return payload

    def _expire_payload(self, ids: np.ndarray, command_prefix: bytes = b"") -> bytes:
        return self._keyed_commands(
            ids, command_prefix + b"*3\r\n$6\r\nEXPIRE\r\n", resp_bulk(str(int(self.ttl)).encode())
        )

    def _hmget_payload(self, ids: np.ndarray, command_prefix: bytes = b"") -> bytes:
        return self._keyed_commands(ids, command_prefix + b"*3\r\n$5\r\nHMGET\r\n", resp_bulk(self.ts_field))

    # ----------------------------------------------------------------------------- I/O
    def _consume(self, batches: Iterator[Batch]) -> None:
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

    def _write_batch(self, pipe: Pipeline, pending: int, batch: Batch) -> int:
        """Send one batch chunk by chunk; return the number of replies still in flight.

        Order on the wire per chunk: [HMGET of this chunk] then its HSETs. The HMGET queues behind
        the previous chunk's HSETs, so Redis never waits for us while we build this chunk.
        """
        ids, vectors = batch.ids, batch.vectors
        ts_value = timestamp_bytes(batch.event_time)
        src_value = value_bytes(int64_val=batch.source_version)
        new_nanos = timestamp_nanos(ts_value)
        per_row = 2 if self.ttl else 1
        for start in range(0, len(ids), self.chunk_rows):
            self.check_abort()
            chunk_ids = ids[start : start + self.chunk_rows]
            chunk_vecs = vectors[start : start + self.chunk_rows]
            if not self.skip_dedup:
                pipe.send(self._hmget_payload(chunk_ids))
            payload = self._hset_payload(chunk_ids, chunk_vecs, src_value, ts_value)
            pipe.replies.integers(pending)
            pending = 0
            if not self.skip_dedup:
                runs = pipe.replies.single_field_arrays(len(chunk_ids))
                if self.refuse_newer:
                    self._refuse_newer(runs, ts_value, new_nanos, batch.event_time)
                keep = keep_mask(runs, ts_value, new_nanos)
                if keep is not None:
                    chunk_ids, chunk_vecs = chunk_ids[keep], chunk_vecs[keep]
                    if len(chunk_ids) == 0:
                        continue
                    payload = self._hset_payload(chunk_ids, chunk_vecs, src_value, ts_value)
            pipe.send(payload)
            pending = per_row * len(chunk_ids)
            self.written += len(chunk_ids)
        return pending

    def _refuse_newer(self, runs, new_ts: bytes, new_nanos: int, event_time: datetime) -> None:
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
                    f"Redis already holds values of {self.view_name} computed from a version published at {when}, "
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
