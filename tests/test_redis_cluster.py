"""Redis Cluster: the cluster bulk writer stores what Feast's own cluster writer stores, on the right masters.

A module-scoped fixture starts a real 3-master cluster (no replicas) on free loopback ports and stops
it by PID. The tests: a whole feast_bc repo materialized into the cluster and read back by plain
Feast (``redis_type: redis_cluster``); the bytes against Feast's ``online_write_batch`` across
chunks; slots moved after the writer read its slot map (MOVED), a slot half-way through a migration
(ASK), a migration that never settles (bounded retries, then a clear error); Feast's timestamp rule.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_online_matches, publish_users_and_items, unique_project
from local_redis import LocalRedisCluster, free_port

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = T1 + timedelta(days=1, microseconds=5)
T3 = T2 + timedelta(days=1)
DIM = 16

pytestmark = pytest.mark.redis


# ----------------------------------------------------------------------------- the cluster
class LocalCluster(LocalRedisCluster):
    """The shared local 3-master cluster (tests/local_redis.py) plus the slot moves these tests make."""

    def node_id(self, port: int) -> bytes:
        return self.client(port).execute_command("CLUSTER", "MYID")

    def owner(self, slot: int) -> int:
        """Port of the master serving ``slot``."""
        for start, end, master, *_ in self.client(self.ports[0]).execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        raise KeyError(slot)

    def begin_migration(self, slot: int, source: int, target: int, importing: bool = True) -> None:
        if importing:
            self.client(target).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", self.node_id(source))
        self.client(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", self.node_id(target))

    def migrate_keys(self, slot: int, source: int, target: int, keys=None) -> None:
        src = self.client(source)
        keys = keys if keys is not None else src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100000)
        if keys:
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)

    def finish_migration(self, slot: int, target: int) -> None:
        target_id = self.node_id(target)
        for port in [target] + [p for p in self.ports if p != target]:
            self.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        self._wait(lambda: all(self._owner_seen(p, slot) == target for p in self.ports), "slot map did not settle")

    def _owner_seen(self, port: int, slot: int) -> int | None:
        for start, end, master, *_ in self.client(port).execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(master[1])
        return None

    def move_slot(self, slot: int, target: int) -> None:
        """Move ``slot`` and its keys to the master on ``target`` (what `redis-cli --cluster reshard` does)."""
        source = self.owner(slot)
        self.begin_migration(slot, source, target)
        self.migrate_keys(slot, source, target)
        self.finish_migration(slot, target)

    def stored(self, project: str) -> dict[bytes, tuple[int, dict]]:
        """Every hash of one project: key (without the project) -> (port holding it, fields)."""
        suffix = project.encode()
        out = {}
        for port in self.ports:
            client = self.client(port)
            for key in client.scan_iter(count=1000):
                if key.endswith(suffix) and client.type(key) == b"hash":
                    out[key[: -len(suffix)]] = (port, client.hgetall(key))
        return out

    def fields(self, project: str) -> dict[bytes, dict]:
        return {key: fields for key, (_, fields) in self.stored(project).items()}


@pytest.fixture(scope="module")
def cluster():
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        msg = f"{' and '.join(missing)} not found: the Redis Cluster tests need them"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " -- required under CI=true")
        pytest.skip(msg)
    workdir = Path(tempfile.mkdtemp(prefix="feast-bc-cluster-"))
    nodes = LocalCluster(workdir)
    try:
        yield nodes.start()
    finally:
        nodes.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# ----------------------------------------------------------------------------- writers
def _setup(cluster: LocalCluster, project: str, id_dtype: str = "int64", **store_options):
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.repo_config import RepoConfig
    from feast.types import Array, Float32, Int64

    cfg = RepoConfig(
        project=project,
        provider="local",
        registry="unused-registry.db",
        online_store=RedisOnlineStoreConfig(
            redis_type="redis_cluster", connection_string=cluster.connection_string, **store_options
        ),
        entity_key_serialization_version=3,
    )
    view = FeatureView(
        name="item_embedding_bc0",
        entities=[
            Entity(
                name="item",
                join_keys=["item_id"],
                value_type=ValueType.INT64 if id_dtype == "int64" else ValueType.STRING,
            )
        ],
        schema=[Field(name="embedding", dtype=Array(Float32)), Field(name="source_version", dtype=Int64)],
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
    )
    return cfg, RedisOnlineStore(), view


def _bulk(cluster, project, chunk_rows=97, refuse_newer=False, id_dtype="int64", **store_options):
    from feast_bc.online_writers import RedisClusterBulkWriter, StoreTarget, ViewTarget

    cfg, store, view = _setup(cluster, project, id_dtype, **store_options)
    return RedisClusterBulkWriter(
        StoreTarget(cfg, store, "item_id", id_dtype),
        ViewTarget(view, DIM),
        chunk_rows=chunk_rows,
        refuse_newer=refuse_newer,
    )


def _stock(cluster, project, id_dtype="int64", **store_options):
    from feast_bc.online_writers import ProtoWriter, StoreTarget, ViewTarget

    cfg, store, view = _setup(cluster, project, id_dtype, **store_options)
    return ProtoWriter(StoreTarget(cfg, store, "item_id", id_dtype), ViewTarget(view, DIM))


def _write(writer, ids, vectors, source_version, when, batch=700) -> int:
    with writer:
        for start in range(0, len(ids), batch):  # several batches, each spanning several chunks
            writer.write(ids[start : start + batch], vectors[start : start + batch], source_version, when)
    return writer.written


def _ids_sharing_slots(writer, per_slot: int, slots: int, exclude=()) -> dict[int, np.ndarray]:
    """``slots`` slots that each hold the keys of ``per_slot`` ids (found by brute force)."""
    from redis.crc import key_slot

    candidates = np.arange(1, 300_000, dtype=np.int64)
    found = {}
    keys = writer.redis_keys(candidates)
    by_slot: dict[int, list[int]] = {}
    for i, key in zip(candidates.tolist(), keys, strict=True):
        slot = key_slot(key)
        if slot in exclude:
            continue
        group = by_slot.setdefault(slot, [])
        group.append(i)
        if len(group) == per_slot:
            found[slot] = np.asarray(group, dtype=np.int64)
            if len(found) == slots:
                return found
    raise AssertionError("not enough ids sharing a slot")


# ----------------------------------------------------------------------------- tests
def test_key_slots_match_redis_and_redis_py(cluster):
    from redis.crc import key_slot

    from feast_bc.online_writers.encoding import EntityKeys
    from feast_bc.online_writers.redis_cluster import key_slots

    keys = EntityKeys("item_id", "int64", 3)
    rng = np.random.default_rng(0)
    ids = rng.integers(-(2**63), 2**63 - 1, size=5_000, dtype=np.int64)
    # ids whose bytes hold '{' and '}' (hash tags: '{' .. '}' with and without bytes between)
    ids[:4] = [0x7B7D, 0x7D00007B, 0x42007B, 0x7B41427D00]
    for project in (b"proj_a", b"x"):
        want = [key_slot(k) for k in keys.many(ids, suffix=project)]
        assert key_slots(keys, ids, project).tolist() == want
    client = cluster.client(cluster.ports[0])
    sample = keys.many(ids[:50], suffix=b"proj_a")
    assert [client.execute_command("CLUSTER", "KEYSLOT", k) for k in sample] == [key_slot(k) for k in sample]
    strings = EntityKeys("user_id", "string", 3)
    names = np.array(["a", "{b}", "c{d}e", "{}f"], dtype=object)
    assert key_slots(strings, names, b"p").tolist() == [key_slot(k) for k in strings.many(names, suffix=b"p")]


def test_writer_for_picks_the_cluster_writer(cluster, caplog):
    import logging

    import redis
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
    from feast.repo_config import RepoConfig

    from feast_bc.online_writers import ProtoWriter, RedisClusterBulkWriter, StoreTarget, ViewTarget, writer_for

    cfg, store, view = _setup(cluster, unique_project("pick"))
    assert (
        type(writer_for(StoreTarget(cfg, store, "item_id", "int64"), ViewTarget(view, DIM))) is RedisClusterBulkWriter
    )
    sentinel = RepoConfig(
        project="pick",
        provider="local",
        registry="unused-registry.db",
        online_store=RedisOnlineStoreConfig(
            redis_type="redis_sentinel", connection_string="127.0.0.1:1", sentinel_master="m"
        ),
        entity_key_serialization_version=3,
    )
    # no reachable node: a connection error (the engine turns it into OnlineStoreUnavailableError)
    unreachable, store, _ = _setup(cluster, "pick")
    unreachable.online_store.connection_string = f"127.0.0.1:{free_port()}"
    with pytest.raises(redis.exceptions.ConnectionError, match="Redis Cluster cannot be connected"):
        writer_for(StoreTarget(unreachable, store, "item_id", "int64"), ViewTarget(view, DIM))
    with caplog.at_level(logging.INFO, logger="feast_bc.online_writers"):
        fallback = writer_for(StoreTarget(sentinel, RedisOnlineStore(), "item_id", "int64"), ViewTarget(view, DIM))
    assert isinstance(fallback, ProtoWriter)
    assert any(
        "item_embedding_bc0" in r.getMessage() and "redis_type redis_sentinel" in r.getMessage() for r in caplog.records
    ), caplog.records


@pytest.mark.parametrize("fused", [True, False])
def test_a_repo_materializes_into_the_cluster_and_plain_feast_reads_it(cluster, tmp_path, monkeypatch, fused):
    from feast_bc import Catalog
    from feast_bc.online_writers import ProtoWriter, RedisClusterFamilyWriter
    from feast_bc.online_writers.redis_cluster import ClusterTransport
    from feast_bc.repo import apply, init_repo

    project = unique_project("clu")
    repo = init_repo(tmp_path / "repo", project=project, online_store="redis", redis_url=cluster.connection_string)
    yaml = repo / "feature_store.yaml"
    text = yaml.read_text()
    assert "  type: redis\n" in text and "  batch_rows: 65536\n" in text
    text = text.replace("  type: redis\n", "  type: redis\n  redis_type: redis_cluster\n")
    yaml.write_text(text.replace("  batch_rows: 65536\n", f"  batch_rows: 65536\n  fused: {str(fused).lower()}\n"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=3, seed=5)

    chosen = []
    real_consume = ClusterTransport.consume

    def spy(self, batches):
        chosen.append((type(self.writer), sorted(v.view_name for v in self.writer.views)))
        return real_consume(self, batches)

    def no_proto(self, batch):
        raise AssertionError("Feast's own writer was used")

    monkeypatch.setattr(ClusterTransport, "consume", spy)
    monkeypatch.setattr(ProtoWriter, "_write", no_proto)
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    if fused:  # one family writer per family, each writing its 3 views
        assert sorted(chosen) == [
            (RedisClusterFamilyWriter, [f"{family}_embedding_bc{k}" for k in range(3)]) for family in ("item", "user")
        ]
    else:  # 2 families x 3 versions, each view in a pass of its own through the cluster writer
        assert len(chosen) == 6 and {cls for cls, _ in chosen} == {RedisClusterFamilyWriter}, chosen
        assert sorted(views for _, views in chosen) == sorted(
            [f"{family}_embedding_bc{k}"] for family in ("item", "user") for k in range(3)
        )

    assert assert_online_matches(store, fams, atol=1e-5) > 0  # every pinned version = the numpy chain
    stored = cluster.stored(project)
    n_entities = sum(len(f.ids[f.latest]) for f in fams.values())
    assert len(stored) == n_entities
    assert {port for port, _ in stored.values()} == set(cluster.ports)  # keys on all three masters
    assert all(len(fields) == 2 * 3 for _, fields in stored.values())  # 3 views x (embedding, _ts)


@pytest.mark.parametrize("options", [{}, {"skip_dedup": True}, {"key_ttl_seconds": 3600}])
def test_cluster_writer_stores_what_feast_stores_across_chunks(cluster, options):
    rng = np.random.default_rng(3)
    bulk_project, stock_project = unique_project("cbulk"), unique_project("cstock")
    ids = np.arange(2500, dtype=np.int64) * 3 + 1
    old = rng.normal(size=(2500, DIM)).astype(np.float32)
    new = rng.normal(size=(2500, DIM)).astype(np.float32)
    # Before: rows 0..999 at T1 (older), rows 2000..2099 at T3 (newer), the rest missing.
    for make in (lambda: _bulk(cluster, bulk_project, **options), lambda: _stock(cluster, stock_project, **options)):
        _write(make(), ids[:1000], old[:1000], 1, T1)
        _write(make(), ids[2000:2100], old[2000:2100], 3, T3)
    written = _write(_bulk(cluster, bulk_project, **options), ids, new, 2, T2)
    _write(_stock(cluster, stock_project, **options), ids, new, 2, T2)

    got, want = cluster.stored(bulk_project), cluster.stored(stock_project)
    assert {k: f for k, (_, f) in got.items()} == {k: f for k, (_, f) in want.items()}  # same bytes
    assert len(got) == 2500 and {port for port, _ in got.values()} == set(cluster.ports)
    assert written == (2500 if options.get("skip_dedup") else 2400)
    if options.get("key_ttl_seconds"):
        for key, (port, _) in list(got.items())[:50]:
            assert 3500 < cluster.client(port).ttl(key + bulk_project.encode()) <= 3600


def test_string_ids_land_where_feast_puts_them(cluster):
    bulk_project, stock_project = unique_project("sbulk"), unique_project("sstock")
    ids = np.array([f"item-{i}" for i in range(300)] + ["{tag}a", "{tag}b", "x{}y", "{"], dtype=object)
    vectors = np.random.default_rng(4).normal(size=(len(ids), DIM)).astype(np.float32)
    assert _write(_bulk(cluster, bulk_project, id_dtype="string"), ids, vectors, 0, T1, batch=150) == len(ids)
    _write(_stock(cluster, stock_project, id_dtype="string"), ids, vectors, 0, T1, batch=150)
    got = cluster.stored(bulk_project)
    assert {k: f for k, (_, f) in got.items()} == cluster.fields(stock_project)
    assert len(got) == len(ids) and {port for port, _ in got.values()} == set(cluster.ports)


def test_slots_moved_after_the_writer_read_its_map_are_followed(cluster):
    """MOVED: the writer's slot map is stale for three slots; their keys still land, on the new masters."""
    project, stock_project = unique_project("moved"), unique_project("mstock")
    probe = _bulk(cluster, project)
    groups = _ids_sharing_slots(probe, per_slot=3, slots=3)
    rng = np.random.default_rng(7)
    extra = np.arange(1000, dtype=np.int64) * 5 + 7
    ids = np.unique(np.concatenate([extra, *groups.values()]))  # ids of the moved slots spread over the chunks
    old = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    new = rng.normal(size=(len(ids), DIM)).astype(np.float32)
    for make in (lambda: _bulk(cluster, project), lambda: _stock(cluster, stock_project)):
        _write(make(), ids[::2], old[::2], 1, T1)  # half the keys exist (older) before the move

    writer = _bulk(cluster, project, chunk_rows=64)  # reads the slot map now
    moved = {}
    for slot in groups:
        source = cluster.owner(slot)
        target = next(p for p in cluster.ports if p != source)
        cluster.move_slot(slot, target)
        moved[slot] = target
    assert _write(writer, ids, new, 2, T2) == len(ids)
    _write(_stock(cluster, stock_project), ids, new, 2, T2)
    # the first MOVED refreshes the slot map: later chunks go straight to the new masters
    assert 1 <= writer.redirected <= sum(len(g) for g in groups.values())

    got = cluster.stored(project)
    assert {k: f for k, (_, f) in got.items()} == cluster.fields(stock_project)
    for slot, target in moved.items():
        for key in probe.redis_keys(groups[slot]):
            assert got[key[: -len(project)]][0] == target


def test_a_slot_in_migration_is_written_through_asking(cluster):
    """ASK: keys of a migrating slot that the source no longer holds (moved or new) go to the target."""
    project, stock_project = unique_project("ask"), unique_project("astock")
    writer = _bulk(cluster, project, chunk_rows=5)
    slot, ids = next(iter(_ids_sharing_slots(writer, per_slot=6, slots=1).items()))
    rng = np.random.default_rng(11)
    old = rng.normal(size=(6, DIM)).astype(np.float32)
    new = rng.normal(size=(6, DIM)).astype(np.float32)
    for make in (lambda: _bulk(cluster, project), lambda: _stock(cluster, stock_project)):
        _write(make(), ids[:4], old[:4], 1, T1)  # ids 0..3 exist; 4, 5 are new
    source = cluster.owner(slot)
    target = next(p for p in cluster.ports if p != source)
    cluster.begin_migration(slot, source, target)
    try:
        cluster.migrate_keys(slot, source, target, writer.redis_keys(ids[:2]))  # 0, 1 moved; 2, 3 not yet
        assert _write(writer, ids, new, 2, T2) == 6
        assert writer.redirected >= 4  # 0, 1 (moved) and 4, 5 (new) were asked for on the target
        in_slot = cluster.client(source).execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        on_source = {k for k in in_slot if k.endswith(project.encode())}
        assert on_source == set(writer.redis_keys(ids[2:4]))
    finally:
        cluster.migrate_keys(slot, source, target)
        cluster.finish_migration(slot, target)
    _write(_stock(cluster, stock_project), ids, new, 2, T2)
    stored = cluster.stored(project)
    assert {k: f for k, (_, f) in stored.items()} == cluster.fields(stock_project)
    assert {port for port, _ in stored.values()} == {target}


def test_a_migration_that_never_settles_fails_with_the_key_and_node(cluster):
    """A source MIGRATING to a target that is not IMPORTING: ASK there, MOVED back, forever."""
    from feast_bc.errors import OnlineStoreUnavailableError

    project = unique_project("stuck")
    writer = _bulk(cluster, project)
    slot, ids = next(iter(_ids_sharing_slots(writer, per_slot=1, slots=1).items()))
    source = cluster.owner(slot)
    target = next(p for p in cluster.ports if p != source)
    cluster.begin_migration(slot, source, target, importing=False)
    try:
        others = np.arange(100, dtype=np.int64) * 11 + 2
        others = others[~np.isin(writer.transport.slots(others), [slot])]
        with pytest.raises(OnlineStoreUnavailableError) as err:
            _write(writer, np.concatenate([others, ids]), np.ones((len(others) + 1, DIM), np.float32), 0, T1)
        message = str(err.value)
        key = writer.redis_keys(ids)[0]
        assert repr(key) in message and f"slot {slot}" in message
        assert f"127.0.0.1:{target}" in message or f"127.0.0.1:{source}" in message
    finally:
        cluster.client(source).execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
    # every entity written is complete (the chunk of the stuck key stopped with it); the stuck one is absent
    stored = cluster.fields(project)
    assert 0 < len(stored) <= len(others) and all(len(fields) == 3 for fields in stored.values())
    assert key[: -len(project)] not in stored


def test_newer_values_are_kept_or_refused_like_on_one_node(cluster):
    from feast_bc.errors import CatalogRollbackError

    project = unique_project("newer")
    ids = np.arange(600, dtype=np.int64) * 13
    rng = np.random.default_rng(2)
    newer = rng.normal(size=(600, DIM)).astype(np.float32)
    older = rng.normal(size=(600, DIM)).astype(np.float32)
    _write(_bulk(cluster, project), ids[:300], newer[:300], 3, T3)
    before = cluster.fields(project)
    # Feast's rule: a row older than the stored value is skipped, the others are written.
    assert _write(_bulk(cluster, project), ids, older, 2, T2) == 300
    after = cluster.fields(project)
    assert {k: after[k] for k in before} == before
    assert len(after) == 600
    # The same rows again at the same instant: nothing to write.
    assert _write(_bulk(cluster, project), ids, older, 2, T2) == 0
    # refuse_newer: a stored value stamped later than the rows stops the writer.
    with pytest.raises(CatalogRollbackError, match="Redis already holds values"):
        _write(_bulk(cluster, project, refuse_newer=True), ids, older, 1, T1)
    assert cluster.fields(project) == after


# ----------------------------------------------------------------------------- the family writer
FAMILY_DIMS = (4, 6, 8)


def _family_setup(cluster, project: str, **store_options):
    """Three views of one family (dims 4, 6, 8; view 1 also stores the source version) on the cluster."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Array, Float32, Int64

    cfg, store, _ = _setup(cluster, project, **store_options)
    item = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)
    views = []
    for v, dim in enumerate(FAMILY_DIMS):
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
    return cfg, store, views


def _family(cluster, project, chunk_rows=7, **store_options):
    from feast_bc.online_writers import RedisClusterFamilyWriter, StoreTarget

    cfg, store, views = _family_setup(cluster, project, **store_options)
    return RedisClusterFamilyWriter(StoreTarget(cfg, store, "item_id", "int64"), views, chunk_rows=chunk_rows)


def _earlier_state(cluster, project, ids, **store_options) -> None:
    """Per view and entity: missing, older (T1) or equal (T2); the last 100 rows need every view but view 1."""
    from feast_bc.online_writers import RedisClusterBulkWriter, StoreTarget, ViewTarget

    cfg, store, views = _family_setup(cluster, project, **store_options)
    for v, (view, dim) in enumerate(views):
        state = np.random.default_rng(100 + v).integers(0, 3, size=len(ids))  # 0 missing, 1 older, 2 equal
        state[-100:] = 2 if v == 1 else 0
        old = np.random.default_rng(200 + v).normal(size=(len(ids), dim)).astype(np.float32)
        for code, when in ((1, T1), (2, T2)):
            rows = state == code
            with RedisClusterBulkWriter(
                StoreTarget(cfg, store, "item_id", "int64"), ViewTarget(view, dim), chunk_rows=13
            ) as w:
                w.write(ids[rows], old[rows], 0, when)


def _family_vs_views(cluster, ids, make_family, projects, **store_options) -> tuple[list[int], list[int]]:
    """Write the same parts with a cluster family writer and with one cluster bulk writer per view
    (from the same earlier state); return (family.written, per-view written)."""
    from feast_bc.online_writers import RedisClusterBulkWriter, StoreTarget, ViewTarget
    from feast_bc.online_writers.base import FamilyPart

    n = len(ids)
    cuts = [(0, n // 3, (0, 1, 2)), (n // 3, n - 100, (0, 2)), (n - 100, n, (0, 1, 2))]  # part 2 leaves view 1 out
    rng = np.random.default_rng(12)
    new = {v: rng.normal(size=(n, d)).astype(np.float32) for v, d in enumerate(FAMILY_DIMS)}
    for project in projects.values():
        _earlier_state(cluster, project, ids, **store_options)
    family = make_family()
    with family:
        for lo, hi, members in cuts:
            family.write_part(FamilyPart(ids[lo:hi], 2, T2, {v: new[v][lo:hi] for v in members}))
    cfg, store, views = _family_setup(cluster, projects["views"], **store_options)
    per_view = []
    for v, (view, dim) in enumerate(views):
        with RedisClusterBulkWriter(
            StoreTarget(cfg, store, "item_id", "int64"), ViewTarget(view, dim), chunk_rows=11
        ) as w:
            for lo, hi, members in cuts:
                if v in members:
                    w.write(ids[lo:hi], new[v][lo:hi], 2, T2)
        per_view.append(w.written)
    return family.written, per_view


@pytest.mark.parametrize("options", [{}, {"skip_dedup": True}, {"key_ttl_seconds": 3600}])
def test_cluster_family_writer_stores_what_the_view_writers_store(cluster, options):
    """Tiny chunks over three masters, a part that skips a view, stored timestamps missing/older/equal
    per view and entity: one HMGET + one HSET per entity leave every hash as view by view does."""
    from feast_bc.online_writers import RedisClusterFamilyWriter, StoreTarget, views_writer_for

    projects = {"family": unique_project("cfam"), "views": unique_project("cviews")}
    cfg, store, views = _family_setup(cluster, projects["family"], **options)
    picked = views_writer_for(StoreTarget(cfg, store, "item_id", "int64"), views)
    assert type(picked) is RedisClusterFamilyWriter
    ids = np.arange(400, dtype=np.int64) * 5 + 2
    written, per_view = _family_vs_views(
        cluster, ids, lambda: _family(cluster, projects["family"], **options), projects, **options
    )
    got = cluster.stored(projects["family"])
    assert {k: f for k, (_, f) in got.items()} == cluster.fields(projects["views"])
    assert len(got) == 400 and {port for port, _ in got.values()} == set(cluster.ports)
    assert written == per_view
    if options.get("skip_dedup"):
        assert per_view == [400, 400 - (300 - 133), 400]  # the part of rows 133..299 leaves view 1 out
    else:
        assert all(0 < n < 400 for n in per_view)
    if options.get("key_ttl_seconds"):
        for key, (port, _) in list(got.items())[:50]:
            assert 3500 < cluster.client(port).ttl(key + projects["family"].encode()) <= 3600


def test_cluster_family_writer_follows_moved_and_ask(cluster):
    """The family writer redoes redirected rows with every view's fields: MOVED for two slots moved
    after it read its map, ASK for a slot half-way through a migration."""
    projects = {"family": unique_project("fmoved"), "views": unique_project("fvmoved")}
    probe = _bulk(cluster, projects["family"])
    groups = _ids_sharing_slots(probe, per_slot=4, slots=3)
    extra = np.arange(300, dtype=np.int64) * 7 + 3
    ids = np.unique(np.concatenate([extra, *groups.values()]))
    (ask_slot, ask_ids), *moved_groups = groups.items()
    moved = {}
    ask_source = cluster.owner(ask_slot)
    ask_target = next(p for p in cluster.ports if p != ask_source)

    made = []

    def make_family():
        writer = _family(cluster, projects["family"], chunk_rows=16)  # reads the slot map now
        made.append(writer)
        for slot, _ in moved_groups:
            source = cluster.owner(slot)
            moved[slot] = next(p for p in cluster.ports if p != source)
            cluster.move_slot(slot, moved[slot])
        cluster.begin_migration(ask_slot, ask_source, ask_target)
        cluster.migrate_keys(ask_slot, ask_source, ask_target, probe.redis_keys(ask_ids[:2]))
        return writer

    try:
        written, per_view = _family_vs_views(cluster, ids, make_family, projects)
    finally:
        cluster.migrate_keys(ask_slot, ask_source, ask_target)
        cluster.finish_migration(ask_slot, ask_target)
    assert written == per_view
    assert made[0].redirected >= 3  # at least one MOVED (then the map is fresh) and the two keys migrated (ASK)
    got = cluster.stored(projects["family"])
    assert {k: f for k, (_, f) in got.items()} == cluster.fields(projects["views"])
    for slot, target in moved.items():
        for key in probe.redis_keys(groups[slot]):
            assert got[key[: -len(projects["family"])]][0] == target
