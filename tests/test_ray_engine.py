"""The same feast_bc definitions materialized by Feast's Ray compute engine (Ray started locally).

One Ray session (2 CPUs, no dashboard, small object store) serves the whole module. Every pinned
FeatureService must read the numpy B-chain of the latest embeddings, and the online store must hold
exactly what the bulk engine (and, on SQLite, Feast's local engine) writes for the same catalog.

A family whose versions all have the same dimension is included on purpose: Feast 0.67's Ray engine
applies a derived view's UDF twice (``RayDerivedReadNode`` and the ``RayTransformationNode`` its
feature builder adds); feast_bc's UDF is idempotent, and with equal dimensions nothing else would
notice a second matmul (docs/SCALING.md).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import (
    SyntheticFamily,
    assert_online_matches,
    delete_project_keys,
    local_ray,
    online_vectors,
    publish_users_and_items,
    redis_url,
    unique_project,
)
from feast_bc import Catalog
from feast_bc.repo import apply, init_repo

START = datetime(2000, 1, 1, tzinfo=UTC)

# Ray Data hints that one-block test datasets cannot use the configured concurrency.
pytestmark = pytest.mark.filterwarnings("ignore:The maximum number of concurrent tasks:UserWarning")


def _end() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray for the module; Feast's engine finds it initialized and uses it as it is."""
    with local_ray() as ray:
        import warnings

        import ray.data

        with warnings.catch_warnings():  # its constructor warns about Ray Data's own deprecated fields
            warnings.simplefilter("ignore", DeprecationWarning)
            ray.data.DataContext.get_current()
        yield ray


def _families(catalog) -> dict[str, SyntheticFamily]:
    """Users and items (3 versions, growing dims) and a family whose 3 versions share one dim."""
    fams = publish_users_and_items(catalog, versions=3, seed=23)
    same = SyntheticFamily("query_embedding", "query", "query_id", [8, 8, 8])
    rng = np.random.default_rng(5)
    for _ in range(3):
        same.publish_next(catalog, rng)
    fams[same.name] = same
    return fams


def _repos(tmp_path, backend, engines):
    """Repos with identical catalogs, one per engine; returns ({engine: (repo, project)}, families)."""
    url = redis_url() if backend == "redis" else None
    repos = {}
    for engine in engines:
        project = unique_project(f"{engine}{backend[:2]}")
        repos[engine] = (
            init_repo(tmp_path / engine, project=project, online_store=backend, redis_url=url, engine=engine),
            project,
        )
    first = repos[engines[0]][0]
    fams = _families(Catalog.for_repo(first))
    for engine in engines[1:]:
        shutil.copytree(first / "bc_catalog", repos[engine][0] / "bc_catalog")
    return repos, fams


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_ray_engine_serves_the_numpy_chain_and_writes_what_the_other_engines_write(
    ray_session, tmp_path, backend, request
):
    from test_engine import _assert_same, _redis_rows, _sqlite_rows

    if backend == "redis":
        request.getfixturevalue("redis_available")
    engines = ("ray", "bc", "local") if backend == "sqlite" else ("ray", "bc")
    repos, fams = _repos(tmp_path, backend, engines)
    yaml = "feature_store.yaml" if backend == "sqlite" else "feature_store.redis.yaml"
    try:
        stores = {}
        for engine, (repo, _) in repos.items():
            stores[engine] = apply(repo, fs_yaml_file=repo / yaml)
            stores[engine].materialize(START, _end())
        assert type(stores["ray"]._get_provider().batch_engine).__name__ == "RayComputeEngine"

        # (a) every pinned version through its FeatureService == the numpy chain of the latest
        checked = assert_online_matches(stores["ray"], fams)
        assert checked == sum(len(f.ids[2]) * sum(f.dims[:3]) for f in fams.values())
        # (b) the Ray engine wrote the same keys, fields, values (and event timestamps) as the others
        rows = {e: (_sqlite_rows(*repos[e]) if backend == "sqlite" else _redis_rows(repos[e][1])) for e in engines}
        for other in engines[1:]:
            _assert_same(rows[other], rows["ray"])
        per_entity = 3 * (2 if backend == "redis" else 1)  # 3 views (+ a _ts field per view on Redis)
        assert len(rows["ray"]) == sum(len(f.ids[2]) for f in fams.values()) * per_entity
    finally:
        if backend == "redis":
            for _, project in repos.values():
                delete_project_keys(redis_url(), project)


def test_ray_engine_refuses_a_tampered_transform_before_writing_derived_versions(ray_session, tmp_path):
    """A bad artifact fails the materialization under Ray too (raised from the derived view's UDF).

    Unlike the local engine, Feast's Ray engine has already written the latest view by then: it
    swallows errors of the latest view's own UDF (``safe_batch_processor``) -- see docs/SCALING.md.
    """
    repo = init_repo(tmp_path / "r", project=unique_project("raytp"), engine="ray")
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=3, seed=3)
    store = apply(repo)
    manifest = catalog.manifest("item_embedding")
    path = catalog.artifact_path("item_embedding", manifest.versions[1].transform)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(Exception) as info:
        store.materialize(START, _end(), feature_views=[f"item_embedding_bc{j}" for j in range(3)])
    assert "fails its checksum" in str(info.value) and "item_embedding" in str(info.value)
    ids = fams["item_embedding"].ids[2][:4]
    for v in (0, 1):
        assert online_vectors(store, "item_embedding", v, "item_id", ids) == [None] * len(ids)


def test_the_view_udf_is_idempotent_so_a_second_application_changes_nothing(tmp_path):
    """What the Ray engine relies on, without Ray: UDF(UDF(batch)) == UDF(batch), even at equal dims."""
    import pandas as pd

    from feast_bc.naming import VALUES_VERSION_COLUMN
    from feast_bc.runtime import transform_batch

    catalog = Catalog(tmp_path / "bc_catalog")
    fam = SyntheticFamily("query_embedding", "query", "query_id", [8, 8, 8])
    rng = np.random.default_rng(9)
    for _ in range(3):
        fam.publish_next(catalog, rng)
    rec = catalog.manifest(fam.name).latest
    batch = pd.DataFrame(
        {
            "query_id": fam.ids[2],
            "event_timestamp": pd.Timestamp(rec.created_at),
            "embedding": list(fam.vectors[2]),
        }
    )
    kw = dict(catalog=str(catalog.root), family=fam.name)
    latest = transform_batch(batch, version=2, **kw)  # the latest view's own UDF
    for v in (0, 1):
        once = transform_batch(latest, version=v, **kw)
        twice = transform_batch(once, version=v, **kw)
        np.testing.assert_allclose(np.stack(once["embedding"]), fam.expected(v), atol=1e-5, rtol=0)
        np.testing.assert_array_equal(np.stack(twice["embedding"]), np.stack(once["embedding"]))
        assert set(twice[VALUES_VERSION_COLUMN]) == {v}
    with pytest.raises(Exception, match="already transformed to version 0"):
        transform_batch(transform_batch(latest, version=0, **kw), version=1, **kw)


@pytest.mark.parametrize(
    ("address", "failures", "calls", "raises"),
    [
        ("ray://127.0.0.1:10001", 1, 2, False),  # a client server that did not start: a new connection
        ("ray://127.0.0.1:10001", 3, 3, True),  # every attempt fails: the error, not a loop
        ("auto", 1, 1, True),  # not a Ray client: no retry
    ],
)
def test_a_ray_client_whose_server_did_not_start_connects_again(monkeypatch, caplog, address, failures, calls, raises):
    """Ray's proxy starts one server process per ray:// client, and that start can fail at once; the
    engine connects again (CLIENT_CONNECT_ATTEMPTS in all), logging why, and raises after the last."""
    ray = pytest.importorskip("ray")
    from feast_bc.ray_engine import CLIENT_CONNECT_ATTEMPTS, BCRayEngine, BCRayEngineConfig

    assert CLIENT_CONNECT_ATTEMPTS == 3
    attempts, shutdowns = [], []

    def init(**options):
        attempts.append(options)
        if len(attempts) <= failures:
            raise ConnectionAbortedError("Initialization failure from server:\nRuntimeError: Starting ... failed")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(True))
    engine = type("Engine", (), {"config": BCRayEngineConfig(ray_address=address)})()
    if raises:
        with pytest.raises(ConnectionAbortedError, match="Initialization failure"):
            BCRayEngine._ray(engine)
    else:
        assert BCRayEngine._ray(engine) is ray
    assert len(attempts) == calls and all(a["address"] == address for a in attempts)
    assert len(shutdowns) == (calls - 1 if raises else failures)
    retried = [r for r in caplog.records if "connecting again" in r.getMessage()]
    assert len(retried) == len(shutdowns)
