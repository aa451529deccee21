"""The fused family pass leaves the online store exactly as materializing view by view does.

Two repos share a copy of one catalog: one runs `BCEngine` with ``fused: true`` (the default), the
other with ``fused: false`` (one pass per view, the reference). Both are
materialized through Feast (``store.materialize`` hands the engine all views at once) and compared
byte for byte: every field of every Redis hash of the project, every row of every SQLite table.
Small batches (``batch_rows`` 16) make each family several parts, so chunk boundaries, partial
earlier runs and a failure after the first part are all exercised.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import (
    assert_online_matches,
    delete_project_keys,
    publish_users_and_items,
    redis_url,
    unique_project,
)
from feast_bc import Catalog
from feast_bc.errors import StaleOnlineValuesError
from feast_bc.repo import apply, init_repo
from repo_pair import RepoPair, redis_hashes

START = datetime(2000, 1, 1, tzinfo=UTC)
BATCH_ROWS = 16
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


def _end() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def _pair(tmp_path, backend: str) -> RepoPair:
    """The fused repo and the per-view reference repo, with one catalog published into the first."""
    block = f"  type: feast_bc.engine.BCEngine\n  batch_rows: {BATCH_ROWS}\n  fused: {{}}\n"
    return RepoPair(tmp_path, backend, {"fused": block.format("true"), "per_view": block.format("false")})


@pytest.fixture
def pair(tmp_path, request):
    backend = request.param
    if backend == "redis":
        request.getfixturevalue("redis_available")
    made = _pair(tmp_path, backend)
    yield made
    made.cleanup()


def _count_calls(monkeypatch, module, name: str) -> list:
    """Record the calls of ``module.name`` (still calling it)."""
    calls = []
    original = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def _count_commands(monkeypatch) -> dict[bytes, int]:
    """Counts of the HSET, HMGET and EXISTS commands the Redis writers send from now on."""
    from feast_bc.resp import Pipeline

    commands: dict[bytes, int] = {b"HSET": 0, b"HMGET": 0, b"EXISTS": 0}
    original_send = Pipeline.send

    def counting_send(self, payload):
        for name in commands:
            commands[name] += payload.count(b"$%d\r\n%s\r\n" % (len(name), name))
        return original_send(self, payload)

    monkeypatch.setattr(Pipeline, "send", counting_send)
    return commands


@pytest.mark.redis
def test_key_probe_skips_the_hmgets_only_while_no_hash_exists(tmp_path, monkeypatch):
    """A fresh project: one EXISTS per chunk (here: per batch), no HMGET. The next version (60 ids, 40 of them
    already stored, so the chunk mixes stored and new hashes): the probe finds hashes, every
    entity gets its HMGET and the timestamp rule as before -- the result equals view by view."""
    pair = _pair(tmp_path, "redis")
    rng = np.random.default_rng(11)
    fams = publish_users_and_items(pair.catalog, versions=2, seed=11)  # 40 ids per family
    stores = pair.apply()
    commands = _count_commands(monkeypatch)
    stores["fused"].materialize(START, _end())
    assert commands == {b"HSET": 80, b"HMGET": 0, b"EXISTS": 2 * 3}  # 3 batches of <= 16 rows per family

    for fam in fams.values():
        fam.publish_next(pair.catalog, rng, n=60)
    stores = pair.apply()
    for name in commands:
        commands[name] = 0
    stores["fused"].materialize(START, _end())
    assert commands == {b"HSET": 120, b"HMGET": 120, b"EXISTS": 2}  # probe once per family, then HMGETs
    stores["per_view"].materialize(START, _end())
    assert pair.rows("fused") == pair.rows("per_view")
    assert_online_matches(stores["fused"], fams)


def _intervals(store) -> dict[str, int]:
    store.refresh_registry()
    return {fv.name: len(fv.materialization_intervals) for fv in store.list_batch_feature_views()}


# --------------------------------------------------------------------------- same bytes
@pytest.mark.parametrize("pair", BACKENDS, indirect=True)
def test_fused_pass_writes_the_same_bytes_as_view_by_view(pair, monkeypatch):
    import feast_bc.engine as engine

    fams = publish_users_and_items(pair.catalog, versions=3, seed=3)
    stores = pair.apply()
    assert stores["fused"]._get_provider().batch_engine.supports_batch
    assert not stores["per_view"]._get_provider().batch_engine.supports_batch
    passes = _count_calls(monkeypatch, engine, "run_pass")
    commands = _count_commands(monkeypatch)

    end = _end()
    stores["fused"].materialize(START, end)
    assert [len(unit.views) for _, _, unit, _ in passes] == [3, 3]  # one pass per family, no view alone
    entities = sum(len(f.ids[f.latest]) for f in fams.values())
    if pair.backend == "redis":  # one HSET per entity for all three views; a fresh project: one
        # EXISTS per chunk (here: per batch) finds no hash, so no HMGET is needed
        chunks = sum(-(-len(f.ids[f.latest]) // BATCH_ROWS) for f in fams.values())
        assert commands == {b"HSET": entities, b"HMGET": 0, b"EXISTS": chunks}
    stores["per_view"].materialize(START, end)
    assert [len(unit.views) for _, _, unit, _ in passes[2:]] == [1] * 6  # one pass per view

    fused, reference = pair.rows("fused"), pair.rows("per_view")
    assert fused == reference
    assert len(fused) == (entities if pair.backend == "redis" else entities * 3)
    assert_online_matches(stores["fused"], fams)  # online == the numpy B-chain (1e-5)
    for store in stores.values():  # Feast recorded every view's interval
        assert set(_intervals(store).values()) == {1}


@pytest.mark.parametrize("pair", BACKENDS, indirect=True)
def test_entities_in_some_versions_only_and_a_window_per_view(pair):
    """New ids in every version (a version never drops one: publish refuses), then one call whose
    views have different windows: a view whose window ends before the latest rows keeps its previous
    values; one whose window starts after them takes them in when the store lacks them (the probe,
    :mod:`feast_bc.online_probe`) -- the same in both modes."""
    from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask

    rng = np.random.default_rng(5)
    fams = publish_users_and_items(pair.catalog, versions=1, seed=5)
    items = fams["item_embedding"]
    for n in (50, 60):  # 40 ids, then 50, then 60
        for fam in fams.values():
            fam.publish_next(pair.catalog, rng, n=n)
        stores = pair.apply()
        for store in stores.values():
            store.materialize(START, _end())
        assert pair.rows("fused") == pair.rows("per_view")
    before = pair.rows("fused")

    items.publish_next(pair.catalog, rng, n=75)  # version 3: 75 ids
    stores = pair.apply()
    published = pair.catalog.manifest("item_embedding").latest.created_at
    windows = {
        3: (START, _end()),
        2: (START, published - timedelta(microseconds=1)),  # ends just before the new rows
        1: (published, published),  # inclusive on both ends: holds them
        0: (published + timedelta(microseconds=1), _end()),  # starts just after
    }
    for mode, store in stores.items():
        tasks = [
            MaterializationTask(
                project=pair.projects[mode],
                feature_view=store.registry.get_any_feature_view(f"item_embedding_bc{v}", pair.projects[mode]),
                start_time=start,
                end_time=end,
            )
            for v, (start, end) in windows.items()
        ]
        jobs = store._get_provider().batch_engine.materialize(store.registry, tasks)
        assert [job.status() for job in jobs] == [MaterializationJobStatus.SUCCEEDED] * 4, [j.error() for j in jobs]
    after = pair.rows("fused")
    assert after == pair.rows("per_view")
    assert after != before
    if pair.backend == "redis":
        from feast_bc.online_writers.encoding import EntityKeys

        ts_of = {v: f"_ts:item_embedding_bc{v}".encode() for v in windows}
        key = EntityKeys("item_id", "int64", 3).one(3)  # an item in every version
        assert after[key][ts_of[2]] == before[key][ts_of[2]]  # its window ended before the rows: untouched
        assert after[key][ts_of[1]] == after[key][ts_of[3]] != before[key][ts_of[1]]  # written
        assert after[key][ts_of[0]] == after[key][ts_of[3]]  # starts after them, store lacked them: taken in
    else:
        changed = {key[0] for key, row in after.items() if before.get(key) != row}
        assert changed == {"item_embedding_bc3", "item_embedding_bc1", "item_embedding_bc0"}


# --------------------------------------------------------------------------- Redis timestamp rule
def _ts_bytes(when: datetime) -> bytes:
    from feast_bc.online_writers.encoding import timestamp_bytes

    return timestamp_bytes(when)


@pytest.mark.redis
@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_partial_earlier_run_and_mixed_stored_timestamps(pair):
    """A view already written (then partly lost), older values for some entities, values with the
    same timestamp for others (kept, by Feast's rule): the fused pass writes what per view writes."""
    import redis

    publish_users_and_items(pair.catalog, versions=3, seed=8)
    stores = pair.apply()
    end = _end()
    for store in stores.values():  # an earlier run that materialized one view only
        store.materialize(START, end, feature_views=["item_embedding_bc1"])
    client = redis.Redis.from_url(redis_url())
    garbage = b"\x00not-a-value"
    for mode in stores:
        project = pair.projects[mode].encode()
        keys = sorted(k for k in pair.rows(mode))
        assert len(keys) == 40
        ts_bc0, ts_bc1 = b"_ts:item_embedding_bc0", b"_ts:item_embedding_bc1"
        emb_bc1 = next(f for f in redis_hashes(pair.projects[mode])[keys[0]] if f != ts_bc1)
        for key in keys[:10]:  # lost: the view must be written again
            client.hdel(key + project, ts_bc1, emb_bc1)
        for key in keys[10:15]:  # stamped with the same time as the new rows: left alone
            client.hset(key + project, mapping={emb_bc1: garbage})
        for key in keys[15:25]:  # older values of another view: overwritten
            client.hset(key + project, mapping={ts_bc0: _ts_bytes(datetime(2001, 1, 1, tzinfo=UTC))})
    before = pair.rows("fused")
    assert before == pair.rows("per_view")
    for store in stores.values():
        # Feast's rule keeps the 5 same-stamped garbage values; what consumers would read there is
        # undecodable, so the engine's probe fails the job instead of reporting success
        with pytest.raises(StaleOnlineValuesError, match="item_embedding_bc1"):
            store.materialize(START, end)
    after = pair.rows("fused")
    assert after == pair.rows("per_view")
    kept = [k for k, v in after.items() if garbage in v.values()]
    assert len(kept) == 5


@pytest.mark.redis
@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_a_newer_stored_value_is_refused_and_kept(pair):
    """A value stamped later than the rows (a catalog gone back in time) stops the family's pass:
    every view of the family reports the error, the newer value stays, the other family succeeds."""
    import redis

    from feast_bc.errors import CatalogRollbackError

    publish_users_and_items(pair.catalog, versions=3, seed=9)
    store = pair.apply()["fused"]
    client = redis.Redis.from_url(redis_url())
    project = pair.projects["fused"].encode()
    future = _ts_bytes(datetime(2100, 1, 1, tzinfo=UTC))
    from feast_bc.online_writers.encoding import EntityKeys

    key = EntityKeys("item_id", "int64", 3).one(3) + project  # item id 3: the first row
    client.hset(key, mapping={b"_ts:item_embedding_bc1": future, b"marker": b"newer"})
    with pytest.raises(CatalogRollbackError, match="Redis already holds values of item_embedding_bc1"):
        store.materialize(START, _end())
    assert client.hgetall(key) == {b"_ts:item_embedding_bc1": future, b"marker": b"newer"}
    intervals = _intervals(store)
    assert {v for n, v in intervals.items() if n.startswith("item_")} == {0}  # every item view: ERROR
    assert {v for n, v in intervals.items() if n.startswith("user_")} == {1}


def _fail_on_second_item_part(monkeypatch, backend: str) -> None:
    """Make the family writer fail once the first part of the item family is stored."""
    from feast_bc.online_writers.fanout import FanOutWriter
    from feast_bc.online_writers.redis_family import RedisFamilyWriter

    parts = []
    if backend == "redis":
        original = RedisFamilyWriter._write_batch

        def failing(self, pending, part):
            if self.views[0].view_name.startswith("item_"):
                parts.append(part)
                if len(parts) == 2:  # the first part is stored (its replies read), nothing of the second
                    self.transport.pipe.replies.integers(pending)
                    raise RuntimeError("injected writer failure")
            return original(self, pending, part)

        monkeypatch.setattr(RedisFamilyWriter, "_write_batch", failing)
    else:
        original = FanOutWriter.write_part

        def failing(self, part):
            if "item_embedding" in self.writers[0].sql:  # the SQLite writer's table names the view
                parts.append(part)
                if len(parts) == 2:
                    raise RuntimeError("injected writer failure")
            return original(self, part)

        monkeypatch.setattr(FanOutWriter, "write_part", failing)


@pytest.mark.parametrize("pair", BACKENDS, indirect=True)
def test_failure_after_the_first_part_leaves_whole_entities_and_a_rerun_completes(pair, monkeypatch):
    rng = np.random.default_rng(4)
    fams = publish_users_and_items(pair.catalog, versions=2, seed=4)
    stores = pair.apply()
    for store in stores.values():
        store.materialize(START, _end())
    old = pair.rows("fused")
    for fam in fams.values():
        fam.publish_next(pair.catalog, rng)
    stores = pair.apply()
    stores["per_view"].materialize(START, _end())
    clean = pair.rows("per_view")

    intervals = _intervals(stores["fused"])
    with monkeypatch.context() as patch:
        _fail_on_second_item_part(patch, pair.backend)
        with pytest.raises(RuntimeError, match="injected writer failure"):
            stores["fused"].materialize(START, _end())
    for name, count in _intervals(stores["fused"]).items():  # Feast records succeeded jobs only
        assert count == intervals[name] + (0 if name.startswith("item_") else 1), name

    # Redis: a key is an entity's whole hash (every view); SQLite: one row of one view's table.
    partial = pair.rows("fused")
    assert set(partial) <= set(clean)
    states = {"old": 0, "new": 0}
    for key, want in clean.items():
        if partial.get(key) == want:
            states["new"] += 1
        else:  # as before the run (or absent, for the new view): never a mix within an entity
            assert partial.get(key) == old.get(key), key
            states["old"] += 1
    users, items = len(fams["user_embedding"].ids[2]), len(fams["item_embedding"].ids[2])
    views = 1 if pair.backend == "redis" else 3
    assert states == {"new": (users + BATCH_ROWS) * views, "old": (items - BATCH_ROWS) * views}

    stores["fused"].materialize(START, _end())
    assert pair.rows("fused") == clean
    assert_online_matches(stores["fused"], fams)


# --------------------------------------------------------------------------- fallbacks
def test_stores_without_a_family_writer_share_the_pass_through_feasts_own_writer(tmp_path, monkeypatch, caplog):
    """A store the bulk writers cannot handle still gets one pass per family (one read of the
    latest file): every view's rows go through Feast's own ``online_write_batch``, and the pins read
    the chain's values. The writer factory never returns None."""
    import logging

    import feast_bc.engine as engine
    import feast_bc.online_writers as online_writers
    from feast_bc.errors import FeastBCError
    from feast_bc.online_writers import FanOutWriter, ProtoWriter, StoreTarget, views_writer_for

    repo = init_repo(tmp_path / "r", project=unique_project("fb"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    store = apply(repo)
    assert isinstance(views_writer_for(StoreTarget(store.config, object(), "item_id", "int64"), []), FanOutWriter)

    def no_bulk_writer(*args, **kwargs):
        raise FeastBCError("no bulk writer in this test")

    monkeypatch.setattr(online_writers, "SqliteBulkWriter", no_bulk_writer)
    passes = _count_calls(monkeypatch, engine, "run_pass")
    proto_batches = _count_calls(monkeypatch, ProtoWriter, "_write")
    with caplog.at_level(logging.INFO, logger="feast_bc.online_writers"):
        store.materialize(START, _end())
    assert "writing through Feast's own online_write_batch: no bulk writer in this test" in caplog.text
    assert [len(unit.views) for _, _, unit, _ in passes] == [2, 2] and proto_batches
    assert_online_matches(store, fams)


def test_redis_sentinel_gets_feasts_own_writer_per_view(caplog):
    """Redis setups the bulk writers refuse (sentinel, the glide client) write each view through
    Feast's own writer from the shared pass; a Redis Cluster gets RedisClusterFamilyWriter
    (tests/test_redis_cluster.py)."""
    import logging
    from types import SimpleNamespace

    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.repo_config import RepoConfig

    from feast_bc.online_writers import FanOutWriter, ProtoWriter, StoreTarget, views_writer_for

    cfg = RepoConfig(
        project="p",
        provider="local",
        registry="unused-registry.db",
        online_store=RedisOnlineStoreConfig(
            redis_type="redis_sentinel", connection_string="localhost:7000", sentinel_master="m"
        ),
        entity_key_serialization_version=3,
    )
    views = [(SimpleNamespace(name=f"item_embedding_bc{v}", features=[]), 4) for v in range(2)]
    with caplog.at_level(logging.INFO, logger="feast_bc.online_writers"):
        writer = views_writer_for(StoreTarget(cfg, RedisOnlineStore(), "item_id", "int64"), views)
    assert isinstance(writer, FanOutWriter) and [type(w) for w in writer.writers] == [ProtoWriter, ProtoWriter]
    assert "redis_type redis_sentinel" in caplog.text and "Feast's own online_write_batch" in caplog.text


# --------------------------------------------------------------------------- the family writer alone
def _writer_setup(project: str, store_options: dict):
    """A Redis repo config and three views of one family (dims 4, 6, 8; view 1 also stores the
    source version), as the writers see them."""
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
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    views = []
    for v, dim in enumerate((4, 6, 8)):
        schema = [Field(name="embedding", dtype=Array(Float32))]
        if v == 1:
            schema.append(Field(name="source_version", dtype=Int64))
        view = FeatureView(
            name=f"item_embedding_bc{v}",
            entities=[item],
            schema=schema,
            source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
        )
        views.append((view, dim))
    return cfg, RedisOnlineStore(), views


@pytest.mark.redis
@pytest.mark.parametrize("options", [{}, {"skip_dedup": True}, {"key_ttl_seconds": 3600}])
def test_family_writer_stores_what_the_view_writers_store_across_chunks(redis_available, options):
    """Tiny chunks, parts that skip a view, stored timestamps missing/older/equal per view and
    entity: the family writer leaves every hash as one RedisBulkWriter per view does."""
    import redis

    from feast_bc.online_writers import RedisBulkWriter, RedisFamilyWriter, StoreTarget, ViewTarget
    from feast_bc.online_writers.base import FamilyPart

    t1, t2 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, 0, 0, 0, 7, tzinfo=UTC)
    rng = np.random.default_rng(12)
    ids = np.arange(300, dtype=np.int64) * 5 + 2
    projects = {"family": unique_project("fw"), "views": unique_project("vw")}
    setups = {mode: _writer_setup(project, options) for mode, project in projects.items()}
    dims = [dim for _, dim in setups["family"][2]]
    # three parts; the second one leaves view 1 out (its window excluded those rows)
    cuts = [(0, 120, (0, 1, 2)), (120, 200, (0, 2)), (200, 300, (0, 1, 2))]
    new = {v: rng.normal(size=(300, d)).astype(np.float32) for v, d in enumerate(dims)}
    try:
        for cfg, store, views in setups.values():  # identical earlier state, per view
            for v, (view, dim) in enumerate(views):
                state = np.random.default_rng(100 + v).integers(0, 3, size=300)  # 0 missing, 1 older, 2 equal
                state[200:] = 2 if v == 1 else 0  # whole chunks that need every view but view 1
                old = np.random.default_rng(200 + v).normal(size=(300, dim)).astype(np.float32)
                for code, when in ((1, t1), (2, t2)):
                    rows = state == code
                    with RedisBulkWriter(
                        StoreTarget(cfg, store, "item_id", "int64"), ViewTarget(view, dim), chunk_rows=13
                    ) as w:
                        w.write(ids[rows], old[rows], 0, when)
        cfg, store, views = setups["family"]
        with RedisFamilyWriter(StoreTarget(cfg, store, "item_id", "int64"), views, chunk_rows=7) as family:
            for lo, hi, members in cuts:
                family.write_part(FamilyPart(ids[lo:hi], 2, t2, {v: new[v][lo:hi] for v in members}))
        cfg, store, views = setups["views"]
        per_view = []
        for v, (view, dim) in enumerate(views):
            with RedisBulkWriter(
                StoreTarget(cfg, store, "item_id", "int64"), ViewTarget(view, dim), chunk_rows=11
            ) as w:
                for lo, hi, members in cuts:
                    if v in members:
                        w.write(ids[lo:hi], new[v][lo:hi], 2, t2)
            per_view.append(w.written)
        got, want = redis_hashes(projects["family"]), redis_hashes(projects["views"])
        assert got == want and len(got) == 300
        assert family.written == per_view
        if options.get("skip_dedup"):
            assert per_view == [300, 220, 300]
        else:
            assert all(0 < n < 300 for n in per_view)
        if options.get("key_ttl_seconds"):
            client = redis.Redis.from_url(redis_url())
            suffix = projects["family"].encode()
            ttls = [client.ttl(k) for k in client.scan_iter(count=1000) if k.endswith(suffix)]
            assert len(ttls) == 300 and all(3500 < t <= 3600 for t in ttls)
    finally:
        for project in projects.values():
            delete_project_keys(redis_url(), project)
