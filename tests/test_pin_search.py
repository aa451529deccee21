"""Issue 26, deliverable 1: nearest-neighbour search on every pinned version.

PostgreSQL + pgvector (a real server of this worker, tests/local_postgres.py) through Feast's own
``retrieve_online_documents_v2`` and through :class:`feast_bc.pin_search.PinSearch`; SQLite (the
embedded default) through PinSearch's exact scan. The answer must equal brute-force numpy over
``feast-bc export`` of that version -- after materialize, and after a push of new entities.
The PostgreSQL bulk writer stores the bytes Feast's own writer stores.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import publish_users_and_items, redis_url, unique_project
from feast_bc import Catalog
from feast_bc.errors import InvalidInputError
from feast_bc.export import export_version
from feast_bc.pin_search import METRICS, PinSearch, distances, nearest_rows
from feast_bc.repo import apply, init_repo

T1 = datetime(2026, 1, 1, tzinfo=UTC)
T2 = T1 + timedelta(days=1, microseconds=7)
DIM = 12


def _brute_force(catalog, family: str, version: int, query, metric: str, k: int):
    table = export_version(catalog, family, version)
    ids = table.column(0).to_pylist()
    matrix = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    dist = distances(matrix, query, metric)
    order = np.lexsort((np.arange(len(ids)), dist))[:k]
    return [ids[i] for i in order], dist[order]


def _repo(tmp_path, backend, request):
    project = unique_project("search")
    repo = init_repo(tmp_path / "repo", project=project)
    profile = None
    if backend == "postgres":
        profile = request.getfixturevalue("postgres_server").write_profile(repo, project)
    return repo, profile


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_search_on_every_pin_equals_numpy_over_export_before_and_after_a_push(tmp_path, backend, request):
    from feast_bc import push

    repo, profile = _repo(tmp_path, backend, request)
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=3)
    store = apply(repo, fs_yaml_file=repo / profile if profile else None)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    rng = np.random.default_rng(11)

    def check_every_pin(queries_per_pin: int = 2) -> int:
        checked = 0
        for fam in fams.values():
            for v in range(fam.latest + 1):
                service = f"{fam.name}_v{v}"
                search = PinSearch(repo, service, store=store)
                for metric in METRICS:
                    for _ in range(queries_per_pin):
                        q = rng.normal(size=fam.vectors[v].shape[1])
                        hits = search.search(q, top_k=10, distance_metric=metric)
                        want_ids, want_dist = _brute_force(catalog, fam.name, v, q, metric, 10)
                        assert hits.ids == want_ids, (service, metric)
                        np.testing.assert_allclose(hits.distances, want_dist, rtol=1e-5, atol=1e-5)
                        np.testing.assert_allclose(hits.vectors, fam.expected(v, hits.ids), atol=1e-5)
                        if backend == "postgres":  # Feast's own call, with only Feast: the same ids in order
                            raw = store.retrieve_online_documents_v2(
                                features=[f"{fam.name}_bc{v}:embedding"],
                                query=q.tolist(),
                                top_k=10,
                                distance_metric=metric,
                            ).to_dict()
                            assert raw[fam.join_key] == want_ids
                        checked += 1
        return checked

    assert check_every_pin() == 2 * 3 * len(METRICS) * 2

    # New entities pushed into the latest version are searchable in every older version's space.
    fam = fams["item_embedding"]
    new_ids = np.array([10_001, 10_002, 10_003], dtype=np.int64)
    z = rng.normal(size=(3, fam.vectors[fam.latest].shape[1])).astype(np.float32)
    push(repo, fam.name, new_ids, z, version=fam.latest)
    fam.push(new_ids, z)
    for v in range(fam.latest + 1):
        search = PinSearch(repo, f"{fam.name}_v{v}", store=store)
        target = fam.expected(v, [10_002])[0]
        hits = search.search(target, top_k=3)
        assert hits.ids[0] == 10_002 and hits.distances[0] < 1e-4, (v, hits.ids, hits.distances)
    assert check_every_pin(queries_per_pin=1) == 2 * 3 * len(METRICS)


@pytest.mark.parametrize("metric", METRICS)
def test_the_float32_scan_ranks_exactly_as_float64_over_every_row(metric):
    rng = np.random.default_rng(2)
    base = rng.normal(size=(400, 64)).astype(np.float32)
    # near-ties: copies of a few rows nudged by a float32 ulp or two, a zero row, large and small scales
    twins = base[:50] + np.float32(1e-7) * rng.integers(-2, 3, size=(50, 64)).astype(np.float32)
    matrix = np.concatenate([base, twins, np.zeros((1, 64), np.float32), base[:20] * 1e3, base[20:40] * 1e-3])
    norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix, dtype=np.float64))
    for _ in range(30):
        q = matrix[rng.integers(len(matrix))].astype(np.float64) + rng.normal(scale=1e-3, size=64)
        for k in (1, 10, 200):
            want = distances(matrix, q, metric)
            want = np.where(np.isnan(want), np.inf, want)
            expected = np.lexsort((np.arange(len(matrix)), want))[:k]
            np.testing.assert_array_equal(nearest_rows(matrix, norms, q, k, metric), expected)


def test_a_bad_query_is_one_line(tmp_path, request):
    repo, _ = _repo(tmp_path, "sqlite", request)
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    search = PinSearch(repo, "item_embedding_v0", store=store)
    dim = fams["item_embedding"].vectors[0].shape[1]
    for bad, words in [
        (dict(query=np.zeros(dim + 1)), "must be 6 finite numbers"),
        (dict(query=np.zeros((2, dim))), "finite numbers"),
        (dict(query=[np.nan] * dim), "finite"),
        (dict(query=np.zeros(dim), top_k=0), "top_k"),
        (dict(query=np.zeros(dim), distance_metric="dot"), "distance_metric must be one of"),
    ]:
        with pytest.raises(InvalidInputError, match=words):
            search.search(bad.pop("query"), **bad)


@pytest.mark.redis
def test_redis_is_refused_naming_the_stores_that_search(tmp_path, redis_available):
    repo = init_repo(tmp_path / "repo", project=unique_project("nosearch"), online_store="redis", redis_url=redis_url())
    publish_users_and_items(Catalog.for_repo(repo), versions=1)
    store = apply(repo)
    with pytest.raises(InvalidInputError, match="no vector search in Feast 0.67; search a PostgreSQL"):
        PinSearch(repo, "item_embedding_v0", store=store)


def _targets(setup):
    """(StoreTarget, ViewTarget) of a ``_pg_setup`` (config, store, view): int64 item ids, DIM floats."""
    from feast_bc.online_writers import StoreTarget, ViewTarget

    cfg, store, view = setup
    return StoreTarget(cfg, store, "item_id", "int64"), ViewTarget(view, DIM)


def _pg_setup(server, project: str, vector_enabled: bool):
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.infra.online_stores.postgres_online_store.postgres import (
        PostgreSQLOnlineStore,
        PostgreSQLOnlineStoreConfig,
    )
    from feast.repo_config import RepoConfig
    from feast.types import Array, Float32, Int64

    cfg = RepoConfig(
        project=project,
        provider="local",
        registry="unused-registry.db",
        online_store=PostgreSQLOnlineStoreConfig(
            host="127.0.0.1",
            port=server.port,
            database="postgres",
            db_schema="public",
            user="postgres",
            password="",
            sslmode="disable",
            vector_enabled=vector_enabled,
        ),
        entity_key_serialization_version=3,
    )
    view = FeatureView(
        name="item_embedding_bc0",
        entities=[Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)],
        schema=[
            Field(name="embedding", dtype=Array(Float32), vector_index=True, vector_length=DIM),
            Field(name="source_version", dtype=Int64),
        ],
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
    )
    store = PostgreSQLOnlineStore()
    store.update(cfg, [], [view], [], [], partial=False)
    return cfg, store, view


@pytest.mark.parametrize("vector_enabled", [True, False])
def test_the_postgres_bulk_writer_stores_what_feast_stores(postgres_server, vector_enabled):
    from feast_bc.online_writers import ProtoWriter, writer_for
    from feast_bc.online_writers.postgres import PostgresBulkWriter

    bulk_project, stock_project = unique_project("pgbulk"), unique_project("pgstock")
    bulk = _pg_setup(postgres_server, bulk_project, vector_enabled)
    stock = _pg_setup(postgres_server, stock_project, vector_enabled)
    chosen = writer_for(*_targets(bulk))
    assert isinstance(chosen, PostgresBulkWriter)
    rng = np.random.default_rng(5)
    ids = np.arange(1500, dtype=np.int64) * 5 - 700  # negative ids too
    first, second = (rng.normal(size=(1500, DIM)).astype(np.float32) for _ in range(2))
    for make in (
        lambda: PostgresBulkWriter(*_targets(bulk)),
        lambda: ProtoWriter(*_targets(stock)),
    ):
        with make() as writer:
            writer.write(ids[:1000], first[:1000], 1, T1)
        with make() as writer:  # an upsert over half of them, at a later time, in several batches
            for start in range(500, 1500, 400):
                writer.write(ids[start : start + 400], second[start : start + 400], 2, T2)
        assert writer.written == 1000

    def rows(project: str) -> list:
        with postgres_server.connect() as conn:
            return conn.execute(
                f"SELECT entity_key, feature_name, value, value_text, vector_value::text, event_ts, created_ts "
                f'FROM "{project}_item_embedding_bc0" ORDER BY entity_key, feature_name'
            ).fetchall()

    got, want = rows(bulk_project), rows(stock_project)
    assert len(got) == 2 * 1500
    assert got == want
    assert all((r[4] is not None) == vector_enabled for r in got if r[1] == "embedding")


def test_vector_fields_only_where_the_store_searches_and_never_on_feasts_ray_engine(tmp_path):
    from feast_bc.feast_objects import feast_objects

    repo = init_repo(tmp_path / "repo", project=unique_project("vf"), engine="ray")
    publish_users_and_items(Catalog.for_repo(repo), versions=2)

    def vector_fields() -> list[bool]:
        views = [o for o in feast_objects(repo).values() if hasattr(o, "features") and hasattr(o, "udf_string")]
        return [f.vector_index for v in views for f in v.features]

    assert vector_fields() and not any(vector_fields())  # the default profile: views as they always were
    yaml = repo / "feature_store.yaml"
    yaml.write_text(yaml.read_text().replace("  type: sqlite\n", "  type: sqlite\n  vector_enabled: true\n"))
    with pytest.raises(InvalidInputError, match="Feast's Ray engine .* cannot be materialized"):
        feast_objects(repo)
    yaml.write_text(yaml.read_text().replace("type: ray.engine", "type: feast_bc.engine.BCEngine"))
    assert all(vector_fields())
