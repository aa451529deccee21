"""Bulk writers that put (ids, vectors) into a Feast online store byte-for-byte as Feast would.

Why not Feast's own write path: it converts every row to protobuf objects in Python and, for
Redis, issues one redis-py call per row (~3k rows/s for 256-d vectors on 2 cores). Every row of a
feast_bc view has the same shape -- the same fields, the same event timestamp, a fixed-length
vector -- so the whole Redis pipeline of a batch can be laid out as one numpy byte matrix: constant
parts broadcast, ids and float bytes dropped into their columns. The encoding (entity key v3,
murmur3 field names, ``feast.types.Value`` and ``google.protobuf.Timestamp`` payloads) is derived
from Feast's own serializers at start-up and checked against them, so readers see exactly what the
stock engine would have written. The Redis writer also reads replies straight off the socket
(:mod:`feast_bc.resp`) and runs on its own thread, so Redis works while the engine computes.

:class:`SqliteBulkWriter` does the same for SQLite (the embedded default) with one ``executemany``
per batch. :class:`ProtoWriter` is the fallback for every other online store (Postgres, ...): it
still streams in bounded batches, but hands Feast protobuf rows to ``online_write_batch``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import numpy as np

from feast_bc.errors import FeastBCError
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE
from feast_bc.resp import Pipeline

#: Rows per pipelined round trip to Redis (~2 KB each at 512-d): bounds client and server buffers.
REDIS_CHUNK_ROWS = 4096


class OnlineWriter(Protocol):
    """Used as a context manager: ``write`` batches inside the block; leaving it without an error
    means everything is stored. ``written`` counts rows actually written (dedup may skip some)."""

    written: int

    def __enter__(self) -> "OnlineWriter": ...

    def __exit__(self, exc_type, exc, tb) -> None: ...

    def write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> None:
        """Write (or queue) one batch."""


def _resp_bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def _value_bytes(**kwargs) -> bytes:
    from feast.protos.feast.types.Value_pb2 import Value

    return Value(**kwargs).SerializeToString()


def _vector_prefix(dim: int) -> bytes:
    """Bytes of a serialized ``Value(float_list_val=...)`` before the packed float32 payload."""
    from feast.protos.feast.types.Value_pb2 import FloatList, Value

    probe = np.arange(1, dim + 1, dtype="<f4")
    data = Value(float_list_val=FloatList(val=probe.tolist())).SerializeToString()
    payload = probe.tobytes()
    if not data.endswith(payload):  # pragma: no cover - protobuf always packs repeated floats
        raise FeastBCError("unexpected protobuf encoding of a float list; cannot use the bulk writer")
    return data[: -len(payload)]


def _timestamp_bytes(ts: datetime) -> bytes:
    from feast import utils
    from google.protobuf.timestamp_pb2 import Timestamp

    proto = Timestamp()
    proto.FromDatetime(utils.make_tzaware(ts))
    return proto.SerializeToString()


def _timestamp_nanos(data: bytes | None) -> int:
    if not data:
        return 0
    from google.protobuf.timestamp_pb2 import Timestamp

    proto = Timestamp()
    proto.ParseFromString(data)
    return proto.seconds * 1_000_000_000 + proto.nanos


class EntityKeys:
    """Feast's serialized entity keys for one join key, without a protobuf call per int64 id.

    In entity key serialization v3 an int64 value is its 8 little-endian bytes at the very end of
    the key, so every key is one constant prefix plus those bytes.
    """

    def __init__(self, join_key: str, id_dtype: str, key_version: int):
        self.join_key, self.id_dtype, self.key_version = join_key, id_dtype, key_version
        self.int_prefix = self.one(0)[:-8] if id_dtype == "int64" else None
        if self.int_prefix is not None and self.one(0x0102030405060708) != self.int_prefix + (0x0102030405060708).to_bytes(8, "little"):
            self.int_prefix = None  # pragma: no cover - a future key layout: take the slow path

    def one(self, value) -> bytes:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        val = Value(int64_val=int(value)) if self.id_dtype == "int64" else Value(string_val=str(value))
        ek = EntityKey(join_keys=[self.join_key], entity_values=[val])
        return serialize_entity_key(ek, entity_key_serialization_version=self.key_version)

    def many(self, ids: np.ndarray, suffix: bytes = b"") -> list[bytes]:
        if self.int_prefix is not None:
            raw = np.asarray(ids, dtype="<i8").tobytes()
            prefix = self.int_prefix
            return [prefix + raw[i : i + 8] + suffix for i in range(0, len(raw), 8)]
        return [self.one(i) + suffix for i in ids]


class RedisBulkWriter:
    """Writes a feast_bc view into Feast's Redis layout with hand-built RESP pipelines.

    Layout (Feast 0.67 ``redis.py``): key = serialized entity key (v3) + project; hash fields
    ``mmh3("<view>:<feature>")`` -> serialized Value, and ``_ts:<view>`` -> serialized Timestamp.
    Unless the store is configured with ``skip_dedup: true``, rows whose stored timestamp is not
    older are left alone, exactly like Feast's own writer.

    Use it as a context manager. ``write`` hands a batch to a background thread that owns one
    connection, so reading parquet and the matmul of the next batch (both release the GIL) overlap
    with Redis executing this one; at most ``queue_batches`` batches wait, which bounds memory.
    Leaving the block waits for every reply; leaving it with an exception stops the thread and
    discards the connection. ``gate`` (if given) is called before the first byte is sent; if it
    raises, nothing is written and ``write``/leaving the block raise its error. Each entity's HSET
    is atomic, so whatever was written is complete.
    """

    def __init__(
        self, repo_config, online_store, feature_view, join_key: str, id_dtype: str, dim: int,
        *, chunk_rows: int = REDIS_CHUNK_ROWS, queue_batches: int = 1, gate: Callable[[], object] | None = None,
        refuse_newer: bool = False,
    ):
        from feast.infra.online_stores.helpers import _mmh3

        from feast.infra.online_stores.redis import RedisType, _versioned_fv_name

        cfg = repo_config.online_store
        if cfg.redis_type != RedisType.redis or getattr(cfg, "client", "redis") != "redis":
            raise FeastBCError("the Redis bulk writer handles standalone Redis with the redis-py client only")
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
        self.vec_prefix = _vector_prefix(dim)
        self.keys = EntityKeys(join_key, id_dtype, repo_config.entity_key_serialization_version)
        self.gate = gate
        self.refuse_newer = refuse_newer
        self.view_name = feature_view.name
        self.written = 0
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(queue_batches)))
        self._thread: threading.Thread | None = None
        self._pipe: Pipeline | None = None
        self._error: BaseException | None = None
        self._abort = threading.Event()

    # --------------------------------------------------------------------------- encoding
    def redis_keys(self, ids: np.ndarray) -> list[bytes]:
        return self.keys.many(ids, suffix=self.project)

    def _keyed_commands(self, ids: np.ndarray, before_key: bytes, after_key: bytes, row_data: np.ndarray | None = None,
                        after_data: bytes = b"") -> bytes:
        """``before_key + $len key + after_key [+ row_data + after_data]`` for every id, as one bytes.

        With int64 ids every record has the same length, so the whole batch is one (n, width)
        uint8 matrix: constant parts broadcast, ids (and vector bytes) dropped into their columns.
        """
        n = len(ids)
        prefix = self.keys.int_prefix
        if prefix is None:
            rows = row_data if row_data is not None else [None] * n
            return b"".join(
                before_key + _resp_bulk(key) + after_key + (b"" if row is None else row.tobytes() + after_data)
                for key, row in zip(self.redis_keys(ids), rows)
            )
        key_len = len(prefix) + 8 + len(self.project)
        parts = [
            (before_key + b"$%d\r\n%s" % (key_len, prefix), None),
            (None, np.asarray(ids, dtype="<i8").view(np.uint8).reshape(n, 8)),
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

    def _hset_payload(self, ids: np.ndarray, vectors: np.ndarray, src_value: bytes, ts_value: bytes) -> bytes:
        value_len = len(self.vec_prefix) + 4 * self.dim
        tail = _resp_bulk(self.ts_field) + _resp_bulk(ts_value)
        if self.src_field is not None:
            tail = _resp_bulk(self.src_field) + _resp_bulk(src_value) + tail
        hset = b"*%d\r\n$4\r\nHSET\r\n" % (6 if self.src_field is None else 8)
        vec_bytes = np.ascontiguousarray(vectors, dtype="<f4").view(np.uint8).reshape(len(ids), 4 * self.dim)
        emb_head = _resp_bulk(self.emb_field) + b"$%d\r\n%s" % (value_len, self.vec_prefix)
        payload = self._keyed_commands(ids, hset, emb_head, vec_bytes, b"\r\n" + tail)
        if self.ttl:
            payload += self._keyed_commands(ids, b"*3\r\n$6\r\nEXPIRE\r\n", _resp_bulk(str(int(self.ttl)).encode()))
        return payload

    def _hmget_payload(self, ids: np.ndarray) -> bytes:
        return self._keyed_commands(ids, b"*3\r\n$5\r\nHMGET\r\n", _resp_bulk(self.ts_field))

    # ----------------------------------------------------------------------------- I/O
    def __enter__(self) -> "RedisBulkWriter":
        return self

    def write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> None:
        """Queue one batch for the writer thread; raises the thread's error if it has failed."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="feast-bc-redis-writer", daemon=True)
            self._thread.start()
        item = (ids, vectors, int(source_version), event_time)
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._thread is None:
            return
        if exc_type is None:
            while self._thread.is_alive():
                try:
                    self._queue.put(_DONE, timeout=0.2)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self._raise_if_failed()
            return
        self._abort.set()
        self._thread.join(timeout=10)
        if self._thread.is_alive() and self._pipe is not None:  # blocked in I/O: cut the connection
            self._pipe.conn.disconnect()
            self._thread.join(timeout=10)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _next_item(self):
        while not self._abort.is_set():
            try:
                return self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    def _run(self) -> None:
        try:
            if self.gate is not None:
                self.gate()  # e.g. the artifact checksums: raises instead of letting anything through
            with Pipeline(self.client) as pipe:
                self._pipe = pipe
                pending = 0  # integer replies of the chunk still in flight
                while (item := self._next_item()) is not None and item is not _DONE:
                    pending = self._write_batch(pipe, pending, *item)
                if item is _DONE:
                    pipe.replies.integers(pending)
                    pipe.clean = True
        except BaseException as exc:  # handed to the producer thread, which raises it
            self._error = exc

    def _write_batch(self, pipe: Pipeline, pending: int, ids, vectors, source_version: int, event_time: datetime) -> int:
        """Send one batch chunk by chunk; return the number of replies still in flight.

        Order on the wire per chunk: [HMGET of this chunk] then its HSETs. The HMGET queues behind
        the previous chunk's HSETs, so Redis never waits for us while we build this chunk.
        """
        ts_value = _timestamp_bytes(event_time)
        src_value = _value_bytes(int64_val=source_version)
        new_nanos = _timestamp_nanos(ts_value)
        per_row = 2 if self.ttl else 1
        for start in range(0, len(ids), self.chunk_rows):
            if self._abort.is_set():
                raise _Aborted()
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
                    self._refuse_newer(runs, ts_value, new_nanos, event_time)
                keep = _keep_mask(runs, ts_value, new_nanos)
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
            stored = _timestamp_nanos(value)
            if stored > new_nanos:
                from datetime import timezone

                from feast_bc.errors import CatalogRollbackError

                when = datetime.fromtimestamp(stored / 1e9, tz=timezone.utc).isoformat()
                raise CatalogRollbackError(
                    f"Redis already holds values of {self.view_name} computed from a version published at {when}, "
                    f"newer than the rows being written (published {event_time.isoformat()}): the catalog or the "
                    "registry was restored from an older state. Redis would keep the newer values and the pin would "
                    "silently serve another version than the catalog's, so materialization stops here (values "
                    "already in Redis are untouched). Restore the newest manifest (and `feast apply`), or publish a "
                    "new version"
                )


_DONE = object()


class _Aborted(Exception):
    """The producer left its ``with`` block with an error; stop writing."""


def _keep_mask(runs: list[tuple[bytes | None, int]], new_ts: bytes, new_nanos: int) -> np.ndarray | None:
    """Rows whose stored timestamp is older than the new one (Feast's dedup rule); None = all rows.

    ``runs`` are (stored timestamp, repeat) in row order; stored timestamps are nearly always one
    of a handful of values (publish times of earlier versions), so each is decoded once.
    """
    verdict: dict[bytes | None, bool] = {None: True, new_ts: False}
    flags = []
    for value, _ in runs:
        ok = verdict.get(value)
        if ok is None:
            ok = verdict[value] = _timestamp_nanos(value) < new_nanos
        flags.append(ok)
    if all(flags):
        return None
    return np.repeat(np.asarray(flags, dtype=bool), [repeat for _, repeat in runs])


class _InlineWriter:
    """Writes in the caller's thread: the gate is passed before the first batch, nothing to drain."""

    def __init__(self, gate: Callable[[], object] | None):
        self.gate = gate
        self.written = 0

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        return None

    def write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> None:
        if self.gate is not None:
            self.gate()
            self.gate = None
        self.written += self._write(ids, vectors, source_version, event_time)

    def _write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> int:
        raise NotImplementedError


class SqliteBulkWriter(_InlineWriter):
    """Writes a feast_bc view into Feast's SQLite table with one ``executemany`` per batch.

    Same table, columns and upsert statement as Feast 0.67's ``SqliteOnlineStore.online_write_batch``
    (which runs one ``execute`` per row after building protobufs in Python); the rows are the
    same tuples, built from the vector bytes directly. Stores with ``vector_enabled`` or the
    OpenAI-compatible ``value_num`` column use the protobuf path instead.
    """

    def __init__(self, repo_config, online_store, feature_view, join_key: str, id_dtype: str, dim: int,
                 *, gate: Callable[[], object] | None = None):
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        cfg = repo_config.online_store
        if getattr(cfg, "vector_enabled", False) or getattr(cfg, "enable_openai_compatible_store", False):
            raise FeastBCError("the SQLite bulk writer does not fill vector or value_num columns")
        super().__init__(gate)
        self.conn = online_store._get_conn(repo_config)
        versioning = getattr(repo_config.registry, "enable_online_feature_view_versioning", False)
        table = _quote_id(_table_id(repo_config.project, feature_view, versioning))
        self.sql = (
            f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
            "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
            "created_ts = excluded.created_ts;"
        )
        self.keys = EntityKeys(join_key, id_dtype, repo_config.entity_key_serialization_version)
        self.dim = dim
        self.vec_prefix = _vector_prefix(dim)
        self.with_source = SOURCE_VERSION_FEATURE in {f.name for f in feature_view.features}

    def _write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> int:
        from feast.utils import to_naive_utc

        ts = to_naive_utc(event_time)
        width = 4 * self.dim
        raw = np.ascontiguousarray(vectors, dtype="<f4").tobytes()
        prefix = self.vec_prefix
        keys = self.keys.many(ids)
        rows = [
            (key, EMBEDDING_FEATURE, prefix + raw[i * width : (i + 1) * width], None, ts, None)
            for i, key in enumerate(keys)
        ]
        if self.with_source:
            src_value = _value_bytes(int64_val=int(source_version))
            src_text = str(int(source_version))
            rows += [(key, SOURCE_VERSION_FEATURE, src_value, src_text, ts, None) for key in keys]
        with self.conn:  # one transaction per batch, like Feast's writer
            self.conn.executemany(self.sql, rows)
        return len(keys)


class ProtoWriter(_InlineWriter):
    """Any online store: Feast protobuf rows through the store's own ``online_write_batch``."""

    def __init__(self, repo_config, online_store, feature_view, join_key: str, id_dtype: str, dim: int,
                 *, gate: Callable[[], object] | None = None):
        super().__init__(gate)
        self.repo_config = repo_config
        self.online_store = online_store
        self.feature_view = feature_view
        self.join_key = join_key
        self.id_dtype = id_dtype
        self.with_source = SOURCE_VERSION_FEATURE in {f.name for f in feature_view.features}

    def _write(self, ids: np.ndarray, vectors: np.ndarray, source_version: int, event_time: datetime) -> int:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import FloatList, Value

        src = Value(int64_val=int(source_version))
        rows = []
        for entity_id, vec in zip(ids.tolist(), vectors):
            val = Value(int64_val=entity_id) if self.id_dtype == "int64" else Value(string_val=entity_id)
            values = {EMBEDDING_FEATURE: Value(float_list_val=FloatList(val=vec))}
            if self.with_source:
                values[SOURCE_VERSION_FEATURE] = src
            rows.append((EntityKey(join_keys=[self.join_key], entity_values=[val]), values, event_time, None))
        self.online_store.online_write_batch(self.repo_config, self.feature_view, rows, progress=None)
        return len(rows)


def writer_for(repo_config, online_store, feature_view, join_key: str, id_dtype: str, dim: int,
               *, gate: Callable[[], object] | None = None, refuse_newer: bool = False) -> OnlineWriter:
    """The fastest writer the online store allows; ``gate`` must pass before anything is written.

    ``refuse_newer``: the Redis writer raises :class:`~feast_bc.errors.CatalogRollbackError` instead
    of silently skipping rows whose stored value is stamped later than the row (Feast's dedup rule).
    SQLite overwrites unconditionally (the pin then serves the catalog's values), as Feast's own
    SQLite writer does."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    bulk = {RedisOnlineStore: RedisBulkWriter, SqliteOnlineStore: SqliteBulkWriter}
    for store_type, writer_type in bulk.items():
        if isinstance(online_store, store_type):
            try:
                extra = {"refuse_newer": refuse_newer} if writer_type is RedisBulkWriter else {}
                return writer_type(repo_config, online_store, feature_view, join_key, id_dtype, dim, gate=gate, **extra)
            except FeastBCError:
                pass  # Redis cluster/sentinel/glide, SQLite vector columns: Feast's own writer
    return ProtoWriter(repo_config, online_store, feature_view, join_key, id_dtype, dim, gate=gate)
