"""The bulk engine writes exactly what Feast's stock engine (running the views' UDFs) writes."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from conftest import delete_project_keys, publish_users_and_items, redis_url, unique_project
from feast_bc import Catalog
from feast_bc.repo import apply, init_repo

WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), None)


def _materialize(store):
    store.materialize(WINDOW[0], datetime.now(UTC) + timedelta(seconds=5))


def _two_repos(tmp_path, backend):
    """Identical catalogs; one repo on Feast's stock engine, one on feast_bc's engine."""
    import shutil

    url = redis_url() if backend == "redis" else None
    repos = {}
    for engine in ("local", "bc"):
        project = unique_project(f"{engine}{backend[:2]}")
        repo = init_repo(tmp_path / engine, project=project, online_store=backend, redis_url=url, engine=engine)
        repos[engine] = (repo, project)
    fams = publish_users_and_items(Catalog.for_repo(repos["local"][0]), versions=3, seed=11)
    shutil.copytree(repos["local"][0] / "bc_catalog", repos["bc"][0] / "bc_catalog")
    return repos, fams


def _decode_value(blob: bytes):
    from feast.protos.feast.types.Value_pb2 import Value

    v = Value()
    v.ParseFromString(blob)
    kind = v.WhichOneof("val")
    return np.asarray(v.float_list_val.val, dtype=np.float32) if kind == "float_list_val" else getattr(v, kind)


def _sqlite_rows(repo, project):
    con = sqlite3.connect(repo / "data" / "online_store.db")
    out = {}
    for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        if not table.startswith(project + "_"):
            continue
        view = table[len(project) + 1 :]
        rows = con.execute(f'SELECT entity_key, feature_name, value, value_text, event_ts, created_ts FROM "{table}"')
        for key, feature, value, *rest in rows:
            out[(view, key, feature)] = (_decode_value(value), *rest)
    con.close()
    return out


def _redis_rows(project):
    import redis

    client = redis.Redis.from_url(redis_url())
    suffix = project.encode()
    out = {}
    for key in client.scan_iter(count=1000):
        if key.endswith(suffix):
            entity = key[: -len(suffix)]
            for field, value in client.hgetall(key).items():
                out[(entity, field)] = value if field.startswith(b"_ts:") else _decode_value(value)
    return out


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, tuple):  # sqlite: (value, value_text, event_ts, created_ts)
            assert x[1:] == y[1:], k
            x, y = x[0], y[0]
        if isinstance(x, np.ndarray):
            np.testing.assert_allclose(x, y, atol=1e-6, rtol=0, err_msg=str(k))
        else:
            assert x == y, k


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_bulk_engine_writes_what_the_stock_engine_writes(tmp_path, backend, request):
    if backend == "redis":
        request.getfixturevalue("redis_available")
    repos, fams = _two_repos(tmp_path, backend)
    try:
        yaml = "feature_store.yaml" if backend == "sqlite" else "feature_store.redis.yaml"
        for repo, _ in repos.values():
            _materialize(apply(repo, fs_yaml_file=repo / yaml))
        if backend == "sqlite":
            stock, bulk = (_sqlite_rows(*repos[e]) for e in ("local", "bc"))
        else:
            stock, bulk = (_redis_rows(repos[e][1]) for e in ("local", "bc"))
        _assert_same(stock, bulk)
        # per entity: 3 views x the embedding (+ a _ts field per view on Redis)
        n_entities = sum(len(f.ids[2]) for f in fams.values())
        per_entity_fields = 3 * (2 if backend == "redis" else 1)
        assert len(bulk) == n_entities * per_entity_fields
    finally:
        if backend == "redis":
            for _, project in repos.values():
                delete_project_keys(redis_url(), project)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_bulk_engine_respects_redis_dedup_and_the_time_window(tmp_path, backend, request):
    """A window that excludes the publish time writes nothing; a rerun rewrites nothing new."""
    if backend == "redis":
        request.getfixturevalue("redis_available")
    project = unique_project("win")
    repo = init_repo(
        tmp_path / "r", project=project, online_store=backend, redis_url=redis_url() if backend == "redis" else None
    )
    try:
        fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
        yaml = repo / ("feature_store.yaml" if backend == "sqlite" else "feature_store.redis.yaml")
        store = apply(repo, fs_yaml_file=yaml)
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime(2001, 1, 1, tzinfo=UTC))
        resp = store.get_online_features(
            features=store.get_feature_service("item_embedding_v0"), entity_rows=[{"item_id": 3}]
        ).to_dict()
        assert resp["embedding"] == [None]
        _materialize(store)
        _materialize(store)  # idempotent
        from conftest import assert_online_matches

        assert_online_matches(store, fams)
    finally:
        if backend == "redis":
            delete_project_keys(redis_url(), project)


def test_plain_feature_views_still_materialize_with_the_engine_configured(tmp_path):
    from feast import Entity, FeatureView, Field, FileSource
    from feast.types import Float32, Int64

    repo = init_repo(tmp_path / "r", project=unique_project("mix"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    stats = pd.DataFrame({"driver_id": [1, 2, 3], "rating": [4.5, 3.0, 5.0], "event_timestamp": [now] * 3})
    stats.to_parquet(repo / "data" / "drivers.parquet")
    from feast.value_type import ValueType

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    plain = FeatureView(
        name="driver_stats",
        entities=[driver],
        schema=[Field(name="driver_id", dtype=Int64), Field(name="rating", dtype=Float32)],
        source=FileSource(path="data/drivers.parquet", timestamp_field="event_timestamp"),
        ttl=timedelta(0),
    )
    store = apply(repo)
    store.apply([driver, plain])
    assert type(store._get_provider().batch_engine).__name__ == "BCEngine"
    _materialize(store)
    got = store.get_online_features(
        features=["driver_stats:rating"], entity_rows=[{"driver_id": i} for i in (1, 2, 3)]
    ).to_dict()
    assert got["rating"] == pytest.approx([4.5, 3.0, 5.0])
    from conftest import assert_online_matches

    assert_online_matches(store, fams)


def test_consumers_read_pinned_versions_without_feast_bc_installed(tmp_path):
    """A reader process where `import feast_bc` fails still gets every pinned version."""
    import json
    import subprocess
    import sys

    repo = init_repo(tmp_path / "r", project=unique_project("ro"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=3)
    _materialize(apply(repo))
    items = fams["item_embedding"]
    ids = [int(i) for i in items.ids[2][:5]]
    code = f"""
import sys, json
sys.modules["feast_bc"] = None          # any import of feast_bc now raises ImportError
from feast import FeatureStore
store = FeatureStore(repo_path={str(repo)!r})
out = {{}}
for v in range(3):
    r = store.get_online_features(features=store.get_feature_service(f"item_embedding_v{{v}}"),
                                  entity_rows=[{{"item_id": i}} for i in {ids}]).to_dict()
    out[v] = r["embedding"]
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for v in range(3):
        np.testing.assert_allclose(np.asarray(out[str(v)]), items.expected(v, ids), atol=1e-5, rtol=0)


@pytest.mark.redis
def test_a_tampered_latest_file_fails_the_bulk_engine_before_anything_is_written(tmp_path, redis_available):
    """Hashing runs beside the first batches; the writer must still wait for it."""
    import redis

    project = unique_project("tamper")
    repo = init_repo(tmp_path / "r", project=project, online_store="redis", redis_url=redis_url())
    try:
        catalog = Catalog.for_repo(repo)
        fams = publish_users_and_items(catalog, versions=2)
        store = apply(repo, fs_yaml_file=repo / "feature_store.redis.yaml")
        items = fams["item_embedding"]
        path = catalog.artifact_path("item_embedding", catalog.manifest("item_embedding").latest.embeddings)
        data = bytearray(path.read_bytes())
        at = data.find(items.vectors[items.latest][5].tobytes())
        assert at > 0
        data[at] ^= 0x01  # lowest mantissa bit of one float: parquet still reads it, the checksum does not
        path.write_bytes(bytes(data))
        with pytest.raises(Exception, match="fails its checksum"):
            store.materialize(
                WINDOW[0],
                datetime.now(UTC) + timedelta(seconds=5),
                feature_views=["item_embedding_bc0", "item_embedding_bc1"],
            )
        client = redis.Redis.from_url(redis_url())
        assert [k for k in client.scan_iter(count=1000) if k.endswith(project.encode())] == []
    finally:
        delete_project_keys(redis_url(), project)
