"""End to end through real Feast, real SQLite and real Redis: apply, materialize, read pinned versions.

Every test reads each version through its pinned FeatureService and compares with the numpy
B-chain of the latest embeddings (float64 reference, tolerance 1e-5).
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import assert_online_matches, online_vectors, publish_users_and_items, redis_url, run_cli, unique_project
from feast_bc import Catalog
from feast_bc.repo import REDIS_ENV_VAR, apply, init_repo, redis_url_to_connection_string

START = "2000-01-01T00:00:00"


def _end() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def _make_repo(tmp_path, name, backend, project):
    repo = init_repo(tmp_path / name, project=project, online_store=backend)
    return repo


def _store(repo, backend):
    from feast import FeatureStore

    yaml = repo / ("feature_store.yaml" if backend == "sqlite" else "feature_store.redis.yaml")
    return FeatureStore(repo_path=str(repo), fs_yaml_file=yaml)


def _redis_env():
    return {REDIS_ENV_VAR: redis_url_to_connection_string(redis_url())}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request, monkeypatch):
    if request.param == "redis":
        request.getfixturevalue("redis_available")
        for key, value in _redis_env().items():
            monkeypatch.setenv(key, value)
    return request.param


@pytest.fixture
def project(backend, request):
    name = unique_project(backend[:2])
    yield name
    if backend == "redis":
        from conftest import delete_project_keys

        delete_project_keys(redis_url(), name)


def _cli_apply_materialize(repo, backend):
    yaml_args = [] if backend == "sqlite" else ["-f", str(repo / "feature_store.redis.yaml")]
    env = _redis_env() if backend == "redis" else {}
    out = run_cli(["feast", *yaml_args, "apply"], cwd=repo, env=env)
    assert "item_embedding_bc0" in out.stdout
    end = _end().strftime("%Y-%m-%dT%H:%M:%S")
    return run_cli(["feast", *yaml_args, "materialize", START, end], cwd=repo, env=env)


def test_cli_and_python_api_serve_the_same_numpy_chain(tmp_path, backend, project):
    """Users and items, 3 versions of different dims; CLI apply+materialize vs Python API."""
    repo_cli = _make_repo(tmp_path, "cli", backend, project)
    fams = publish_users_and_items(Catalog.for_repo(repo_cli), versions=3)
    # The Python path gets an identical catalog in its own repo and project.
    repo_py = tmp_path / "py"
    shutil.copytree(repo_cli, repo_py)
    py_project = project + "py"
    for yaml in repo_py.glob("feature_store*.yaml"):
        yaml.write_text(yaml.read_text().replace(f"project: {project}", f"project: {py_project}"))

    _cli_apply_materialize(repo_cli, backend)
    store_cli = _store(repo_cli, backend)
    checked = assert_online_matches(store_cli, fams)
    assert checked > 0

    try:
        yaml = None if backend == "sqlite" else repo_py / "feature_store.redis.yaml"
        store_py = apply(repo_py, fs_yaml_file=yaml)
        store_py.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
        assert_online_matches(store_py, fams)
        # identical values whichever path registered and materialized them
        for fam in fams.values():
            ids = fam.ids[fam.latest]
            for v in range(fam.latest + 1):
                a = online_vectors(store_cli, fam.name, v, fam.join_key, ids)
                b = online_vectors(store_py, fam.name, v, fam.join_key, ids)
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        # registered objects and tags agree too
        cli_views = {v.name: v.tags for v in store_cli.list_batch_feature_views()}
        py_views = {v.name: v.tags for v in store_py.list_batch_feature_views()}
        assert cli_views.keys() == py_views.keys() == {f"{f}_bc{j}" for f in fams for j in range(3)}
        assert cli_views["item_embedding_bc0"]["bc.role"] == "derived"
        assert cli_views["item_embedding_bc2"]["bc.role"] == "latest"
        assert cli_views["item_embedding_bc0"]["bc.latest"] == "2"
        assert {f.name for f in store_py.list_feature_services()} == {f"{f}_v{j}" for f in fams for j in range(3)}
    finally:
        if backend == "redis":
            from conftest import delete_project_keys

            delete_project_keys(redis_url(), py_project)


def test_new_latest_updates_every_pin_and_serves_new_entities(tmp_path, backend, project):
    repo = _make_repo(tmp_path, "repo", backend, project)
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=3)
    yaml = None if backend == "sqlite" else repo / "feature_store.redis.yaml"
    store = apply(repo, fs_yaml_file=yaml)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    items = fams["item_embedding"]
    old_v0 = np.asarray(online_vectors(store, "item_embedding", 0, "item_id", items.ids[2]))

    # Version 3: new vectors, a new B_3, and 10 entities that did not exist before.
    rng = np.random.default_rng(42)
    for fam in fams.values():
        fam.publish_next(catalog, rng, n=len(fam.ids[2]) + 10)
    new_ids = np.setdiff1d(items.ids[3], items.ids[0])
    assert len(new_ids) == 10

    # CLI path for the update (operators run `feast apply` + `feast materialize`).
    _cli_apply_materialize(repo, backend)
    store = _store(repo, backend)
    store.refresh_registry()
    assert_online_matches(store, fams)  # every pin, all ids (new ones included), no stale value
    new_v0 = np.asarray(online_vectors(store, "item_embedding", 0, "item_id", items.ids[2]))
    assert np.abs(new_v0 - old_v0).max() > 1e-2, "version-0 values were not refreshed (stale)"
    got = np.asarray(online_vectors(store, "item_embedding", 0, "item_id", new_ids), dtype=np.float64)
    np.testing.assert_allclose(got, items.expected(0, new_ids), atol=1e-5, rtol=0)
    # provenance: a stored value's event time is the publish time of the latest version it was
    # computed from
    rows = [{"item_id": int(i)} for i in new_ids]
    resp = store.get_online_features(features=store.get_feature_service("item_embedding_v0"), entity_rows=rows)
    published = int(catalog.manifest("item_embedding").latest.created_at.timestamp())
    assert set(resp.to_dict(include_event_timestamps=True)["embedding__ts"]) == {published}


def _tamper(path):
    """Flip one bit in the middle of the file: still a readable file, but not the published bytes."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "fault", ["tampered_transform", "missing_transform", "tampered_embeddings", "tampered_old_transform"]
)
def test_bad_artifact_refuses_materialize_and_leaves_online_values(tmp_path, backend, project, fault):
    repo = _make_repo(tmp_path, "repo", backend, project)
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    yaml = None if backend == "sqlite" else repo / "feature_store.redis.yaml"
    store = apply(repo, fs_yaml_file=yaml)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    items = fams["item_embedding"]
    before = {v: online_vectors(store, "item_embedding", v, "item_id", items.ids[1]) for v in range(2)}

    rng = np.random.default_rng(7)
    items.publish_next(catalog, rng)
    store = apply(repo, fs_yaml_file=yaml)
    m = catalog.manifest("item_embedding")
    target = {
        "tampered_transform": m.latest.transform,
        "missing_transform": m.latest.transform,
        "tampered_embeddings": m.latest.embeddings,
        "tampered_old_transform": m.versions[1].transform,
    }[fault]
    path = catalog.artifact_path("item_embedding", target)
    if fault == "missing_transform":
        path.unlink()
    else:
        _tamper(path)

    with pytest.raises(Exception) as info:
        store.materialize(
            datetime(2000, 1, 1, tzinfo=UTC), _end(), feature_views=[f"item_embedding_bc{j}" for j in range(3)]
        )
    text = str(info.value)
    assert ("fails its checksum" in text) or ("is missing" in text), text
    assert "item_embedding" in text
    after = {v: online_vectors(store, "item_embedding", v, "item_id", items.ids[1]) for v in range(2)}
    for v in range(2):
        np.testing.assert_array_equal(np.asarray(after[v]), np.asarray(before[v]))
    assert online_vectors(store, "item_embedding", 2, "item_id", items.ids[1][:3]) == [None] * 3


def test_cli_materialize_reports_tampering_with_nonzero_exit(tmp_path):
    project = unique_project("sq")
    repo = _make_repo(tmp_path, "repo", "sqlite", project)
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=2)
    run_cli(["feast", "apply"], cwd=repo)
    _tamper(catalog.artifact_path("user_embedding", catalog.manifest("user_embedding").latest.transform))
    proc = run_cli(["feast", "materialize", START, _end().strftime("%Y-%m-%dT%H:%M:%S")], cwd=repo, check=False)
    assert proc.returncode != 0
    assert "fails its checksum" in proc.stderr + proc.stdout


@pytest.mark.redis
def test_redis_down_is_a_clear_error_and_catalog_untouched(tmp_path, redis_available):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = init_repo(
        tmp_path / "repo", project=unique_project("dn"), online_store="redis", redis_url=f"redis://127.0.0.1:{port}/0"
    )
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=2)
    manifest_before = (catalog.family_dir("item_embedding") / "manifest.json").read_bytes()
    store = apply(repo, fs_yaml_file=repo / "feature_store.redis.yaml")
    with pytest.raises(Exception) as info:
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    assert "connect" in str(info.value).lower() and str(port) in str(info.value)
    assert (catalog.family_dir("item_embedding") / "manifest.json").read_bytes() == manifest_before


def test_retiring_a_version_removes_its_pin_and_keeps_the_others(tmp_path):
    from feast.errors import FeatureServiceNotFoundException

    repo = _make_repo(tmp_path, "repo", "sqlite", unique_project("ret"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=3)
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    catalog.retire("item_embedding", 1)
    with pytest.raises(Exception, match="latest version 2 cannot be retired"):
        catalog.retire("item_embedding", 2)
    run_cli(["feast", "apply"], cwd=repo)  # the CLI's full sync removes the retired view and service
    store = _store(repo, "sqlite")
    store.refresh_registry()
    with pytest.raises(FeatureServiceNotFoundException):
        store.get_feature_service("item_embedding_v1")
    assert "item_embedding_bc1" not in {v.name for v in store.list_batch_feature_views()}
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    items = fams["item_embedding"]
    for v in (0, 2):  # version 0 is still B_1 B_2 z_2: the retired version's transform stays in the chain
        got = np.asarray(online_vectors(store, "item_embedding", v, "item_id", items.ids[2]), dtype=np.float64)
        np.testing.assert_allclose(got, items.expected(v), atol=1e-5, rtol=0)
    from feast_bc.status import repo_status

    report = repo_status(repo)
    assert report.ok, report.problems
    roles = {v.version: v.role for v in next(f for f in report.families if f.family == "item_embedding").versions}
    assert roles == {0: "derived", 1: "retired", 2: "latest"}


def test_a_long_lived_reader_sees_a_new_version_without_restarting(tmp_path):
    """Registry caching: our yamls use Feast's file registry in its default `sync` cache mode, which in
    Feast 0.67 re-reads the registry file when its mtime changes, so a consumer process that is
    already running sees a version published meanwhile at its next call (with a SQL/remote registry
    or `cache_mode: thread` it would wait up to `cache_ttl_seconds`; `refresh_registry()` forces it).
    Old pins keep answering, with values computed from the new latest."""
    from feast import FeatureStore

    repo = _make_repo(tmp_path, "repo", "sqlite", unique_project("ttl"))
    assert "cache_ttl_seconds: 60" in (repo / "feature_store.yaml").read_text()
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    reader = FeatureStore(repo_path=str(repo))  # the consumer's long-lived store
    items = fams["item_embedding"]
    before = np.asarray(online_vectors(reader, "item_embedding", 0, "item_id", items.ids[1][:5]), dtype=np.float64)
    assert reader.get_feature_service("item_embedding_v1", allow_cache=True).name == "item_embedding_v1"

    rng = np.random.default_rng(9)
    for fam in fams.values():
        fam.publish_next(catalog, rng)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())  # the operator's process

    assert reader.get_feature_service("item_embedding_v2", allow_cache=True).name == "item_embedding_v2"
    after = np.asarray(online_vectors(reader, "item_embedding", 0, "item_id", items.ids[1][:5]), dtype=np.float64)
    assert np.abs(after - before).max() > 1e-2  # the pin now serves B_1 B_2 z_2, not the old B_1 z_1
    assert_online_matches(reader, fams)
    reader.refresh_registry()  # always safe; what a remote-registry deployment calls after a publish
    assert_online_matches(reader, fams)
