"""The Redis bulk writer stores exactly what Feast's own Redis writer stores, chunk after chunk.

The engine tests cover whole materializations of small families (one chunk). Here the writer runs
with tiny chunks over thousands of rows against a real Redis, beside Feast's ``online_write_batch``
on the same rows, through the cases that take different paths: keys missing, older, newer and
equal to the new timestamp in one chunk (mixed dedup replies), ``skip_dedup``, ``key_ttl_seconds``,
an error reply from Redis, and an exception in the producer. Then the writer chosen for each
store, and why it falls back to Feast's own writer.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import delete_project_keys, redis_url, unique_project

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = T1 + timedelta(days=1, microseconds=5)
T3 = T2 + timedelta(days=1)
DIM = 16


def _setup(project: str, **store_options):
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.repo_config import RepoConfig
    from feast.types import Array, Float32, Int64

    from feast_bc.repo import redis_url_to_connection_string

    cfg = RepoConfig(
        project=project,
        provider="local",
        registry="unused-registry.db",
        online_store=RedisOnlineStoreConfig(
            connection_string=redis_url_to_connection_string(redis_url()), **store_options
        ),
        entity_key_serialization_version=3,
    )
    view = FeatureView(
        name="item_embedding_bc0",
        entities=[Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)],
        schema=[Field(name="embedding", dtype=Array(Float32)), Field(name="source_version", dtype=Int64)],
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
    )
    return cfg, RedisOnlineStore(), view


def _targets(setup):
    """(StoreTarget, ViewTarget) of a ``_setup`` (config, store, view): int64 item ids, DIM floats."""
    from feast_bc.online_writers import StoreTarget, ViewTarget

    cfg, store, view = setup
    return StoreTarget(cfg, store, "item_id", "int64"), ViewTarget(view, DIM)


def _writers(store_options: dict, chunk_rows: int):
    from feast_bc.online_writers import ProtoWriter, RedisBulkWriter

    bulk_project, stock_project = unique_project("bulk"), unique_project("stock")
    bulk = _setup(bulk_project, **store_options)
    stock = _setup(stock_project, **store_options)

    def make_bulk():
        return RedisBulkWriter(*_targets(bulk), chunk_rows=chunk_rows)

    def make_stock():
        return ProtoWriter(*_targets(stock))

    return (bulk_project, make_bulk), (stock_project, make_stock)


def _stored(project: str) -> dict:
    import redis

    client = redis.Redis.from_url(redis_url())
    suffix = project.encode()
    return {
        key[: -len(suffix)]: client.hgetall(key)
        for key in client.scan_iter(count=1000)
        if key.endswith(suffix) and client.type(key) == b"hash"
    }


def _write(make, ids, vectors, source_version, when) -> int:
    with make() as writer:
        for start in range(0, len(ids), 700):  # several batches, each spanning several chunks
            writer.write(ids[start : start + 700], vectors[start : start + 700], source_version, when)
    return writer.written


@pytest.mark.redis
@pytest.mark.parametrize("skip_dedup", [False, True])
def test_bulk_writer_stores_what_feast_stores_across_chunks(redis_available, skip_dedup):
    rng = np.random.default_rng(3)
    (bulk_project, bulk), (stock_project, stock) = _writers({"skip_dedup": skip_dedup}, chunk_rows=97)
    ids = np.arange(2500, dtype=np.int64) * 3 + 1
    try:
        # Before: rows 0..999 at T1 (older), rows 2000..2099 at T3 (newer), the rest missing.
        old = rng.normal(size=(2500, DIM)).astype(np.float32)
        for make in (bulk, stock):
            _write(make, ids[:1000], old[:1000], 1, T1)
            _write(make, ids[2000:2100], old[2000:2100], 3, T3)
        new = rng.normal(size=(2500, DIM)).astype(np.float32)
        written = _write(bulk, ids, new, 2, T2)
        _write(stock, ids, new, 2, T2)

        got, want = _stored(bulk_project), _stored(stock_project)
        assert got == want  # same keys, same fields, same bytes
        assert len(got) == 2500
        expected_written = 2500 if skip_dedup else 2400
        assert written == expected_written

        # A rerun at the same instant: Feast's rule skips equal timestamps unless skip_dedup.
        again = _write(bulk, ids, new, 2, T2)
        assert again == (2500 if skip_dedup else 0)
        assert _stored(bulk_project) == want
    finally:
        delete_project_keys(redis_url(), bulk_project)
        delete_project_keys(redis_url(), stock_project)


@pytest.mark.redis
def test_bulk_writer_sets_the_key_ttl_like_feast(redis_available):
    import redis

    (bulk_project, bulk), (stock_project, stock) = _writers({"key_ttl_seconds": 3600}, chunk_rows=50)
    ids = np.arange(300, dtype=np.int64)
    vectors = np.random.default_rng(0).normal(size=(300, DIM)).astype(np.float32)
    try:
        assert _write(bulk, ids, vectors, 0, T1) == 300
        _write(stock, ids, vectors, 0, T1)
        assert _stored(bulk_project) == _stored(stock_project)
        client = redis.Redis.from_url(redis_url())
        ttls = [client.ttl(k) for k in client.scan_iter(count=1000) if k.endswith(bulk_project.encode())]
        assert len(ttls) == 300 and all(3500 < t <= 3600 for t in ttls)
    finally:
        delete_project_keys(redis_url(), bulk_project)
        delete_project_keys(redis_url(), stock_project)


@pytest.mark.redis
@pytest.mark.parametrize("skip_dedup", [False, True])
def test_an_error_reply_is_raised_and_the_connection_is_not_reused(redis_available, skip_dedup):
    import redis

    (bulk_project, bulk), _ = _writers({"skip_dedup": skip_dedup}, chunk_rows=64)
    ids = np.arange(1000, dtype=np.int64)
    vectors = np.ones((1000, DIM), dtype=np.float32)
    probe = bulk()
    client = redis.Redis.from_url(redis_url())
    blocker = probe.redis_keys(ids[500:501])[0]
    client.set(blocker, b"not a hash")  # HMGET and HSET on this key fail with WRONGTYPE
    try:
        with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
            _write(bulk, ids, vectors, 0, T1)
        # Every other entity either has its complete hash or nothing.
        stored = _stored(bulk_project)
        assert len(stored) < 999 and all(len(fields) == 3 for fields in stored.values())
        # The failed connection was discarded, so the pool still answers plainly.
        assert probe.client.ping() is True
        client.delete(blocker)
        assert _write(bulk, ids, vectors, 0, T1) == (1000 if skip_dedup else 1000 - len(stored))
    finally:
        client.delete(blocker)
        delete_project_keys(redis_url(), bulk_project)


@pytest.mark.redis
def test_an_exception_in_the_producer_stops_the_writer_thread(redis_available):
    (bulk_project, bulk), _ = _writers({}, chunk_rows=64)
    ids = np.arange(5000, dtype=np.int64)
    vectors = np.ones((5000, DIM), dtype=np.float32)
    try:
        with pytest.raises(RuntimeError, match="producer failed"):
            with bulk() as writer:
                writer.write(ids[:2500], vectors[:2500], 0, T1)
                raise RuntimeError("producer failed")
        assert writer._thread is not None and not writer._thread.is_alive()
        assert writer.written <= 2500
        assert _write(bulk, ids, vectors, 0, T1) == 5000 - writer.written
        assert len(_stored(bulk_project)) == 5000
    finally:
        delete_project_keys(redis_url(), bulk_project)


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["bulk", "stock"])
def test_nothing_is_written_until_the_gate_passes(redis_available, kind):
    import time

    from feast_bc.errors import ChecksumMismatchError
    from feast_bc.online_writers import ProtoWriter, RedisBulkWriter

    project = unique_project("gate")
    cfg = _setup(project)
    seen_before_verdict = []

    def slow_failing_check():
        time.sleep(0.5)  # the producer keeps queueing batches meanwhile
        seen_before_verdict.append(len(_stored(project)))
        raise ChecksumMismatchError("artifact fails its checksum")

    ids = np.arange(3000, dtype=np.int64)
    vectors = np.ones((3000, DIM), dtype=np.float32)
    try:
        with pytest.raises(ChecksumMismatchError):
            if kind == "bulk":
                writer = RedisBulkWriter(*_targets(cfg), before_write=slow_failing_check)
            else:
                writer = ProtoWriter(*_targets(cfg), before_write=slow_failing_check)
            with writer:
                for start in range(0, 3000, 500):
                    writer.write(ids[start : start + 500], vectors[start : start + 500], 0, T1)
        assert seen_before_verdict == [0]
        assert _stored(project) == {} and writer.written == 0
    finally:
        delete_project_keys(redis_url(), project)


def test_writer_for_picks_the_bulk_writer_or_logs_why_not(tmp_path, caplog):
    from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig
    from feast.repo_config import RepoConfig

    from feast_bc.online_writers import ProtoWriter, SqliteBulkWriter, StoreTarget, ViewTarget, writer_for

    _, _, view = _setup(unique_project("pick"))

    def pick(**store_options):
        cfg = RepoConfig(
            project="pick",
            provider="local",
            registry=str(tmp_path / "registry.db"),
            online_store=SqliteOnlineStoreConfig(path=str(tmp_path / "online.db"), **store_options),
            entity_key_serialization_version=3,
        )
        return writer_for(StoreTarget(cfg, SqliteOnlineStore(), "item_id", "int64"), ViewTarget(view, DIM))

    assert isinstance(pick(), SqliteBulkWriter)
    with caplog.at_level(logging.INFO, logger="feast_bc.online_writers"):
        fallback = pick(vector_enabled=True)
    assert isinstance(fallback, ProtoWriter)
    assert any(
        r.name == "feast_bc.online_writers" and "item_embedding_bc0" in r.getMessage() and "vector" in r.getMessage()
        for r in caplog.records
    ), caplog.records
