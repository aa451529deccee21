"""Reliability II (issue 12): no operator command may silently empty, roll back or corrupt what
consumers read. Each test injects one fault an ordinary operator can cause -- a missing manifest, an
older manifest restored from backup, the retire flow in the wrong order, gc on shared or damaged or
multi-profile repos, odd names and ids, re-sealed hostile artifacts, Redis out of memory, an unset
connection variable -- with the real Feast CLI, real SQLite and real Redis, and checks that the
command refuses (non-zero exit, one clear line) and that every pinned version keeps serving the
numpy B-chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import (
    assert_online_matches,
    delete_project_keys,
    online_vectors,
    publish_users_and_items,
    redis_url,
    run_cli,
    unique_project,
)
from feast_bc import Catalog, EntitySpec, FeastBCError, export_version
from feast_bc.repo import apply, init_repo

START = "2000-01-01T00:00:00"


def _end() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


def _end_arg() -> str:
    return _end().strftime("%Y-%m-%dT%H:%M:%S")


def _store(repo, yaml="feature_store.yaml"):
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo), fs_yaml_file=repo / yaml)


def _snapshot(root):
    """Every file under ``root`` with its sha256 (lock files excluded)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            if name.endswith(".lock"):
                continue
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _registered_views(store) -> set[str]:
    store.refresh_registry()
    return {v.name for v in store.list_batch_feature_views()}


def _one_line_error(proc) -> str:
    """The refusal as the operator sees it: non-zero exit, a one-line reason, no Python traceback."""
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend_repo(request, tmp_path):
    """A repo whose default profile (feature_store.yaml) is SQLite or Redis; Redis keys removed after."""
    backend = request.param
    project = unique_project(backend[:2])
    url = None
    if backend == "redis":
        url = request.getfixturevalue("redis_available")
    repo = init_repo(tmp_path / "repo", project=project, online_store=backend, redis_url=url)
    yield backend, repo
    if backend == "redis":
        delete_project_keys(url, project)


# --------------------------------------------------------------------------- 1. missing manifest
def test_missing_manifest_refuses_apply_and_keeps_every_pin_serving(backend_repo, tmp_path):
    backend, repo = backend_repo
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=3)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    store = _store(repo)
    assert_online_matches(store, fams)
    views = _registered_views(store)
    registry_file = repo / "data" / ("registry.db" if backend == "sqlite" else "registry_redis.db")
    registry = registry_file.read_bytes()

    manifest = catalog.family_dir("item_embedding") / "manifest.json"
    backup = tmp_path / "manifest.json.bak"
    manifest.rename(backup)  # deleted, renamed or a failed sync

    proc = run_cli(["feast", "apply"], cwd=repo, check=False)
    err = _one_line_error(proc)
    assert "ManifestError" in err and "manifest.json is missing" in err and "drop-family" in err, err
    assert "Deleted" not in proc.stdout
    assert registry_file.read_bytes() == registry  # registry untouched
    assert _registered_views(store) == views
    assert_online_matches(store, fams)  # and every pin of both families still serves the chain

    verify = run_cli(["feast-bc", "verify", "--repo", str(repo)], check=False)
    assert verify.returncode == 2 and "item_embedding" in verify.stderr and "manifest.json is missing" in verify.stderr
    assert "user_embedding: versions 0..2 verified" in verify.stdout

    # The manifest comes back: apply succeeds and nothing had to be re-materialized.
    backup.rename(manifest)
    run_cli(["feast", "apply"], cwd=repo)
    assert_online_matches(store, fams)


def test_family_directory_gone_refuses_apply_unless_dropped_on_purpose(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("gone"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    store = _store(repo)

    # The whole directory is gone (a sync that never ran): only the registry knows the family.
    shutil.move(catalog.family_dir("item_embedding"), tmp_path / "item_embedding.moved")
    proc = run_cli(["feast", "apply"], cwd=repo, check=False)
    err = _one_line_error(proc)
    assert "item_embedding" in err and "is served by Feast" in err and "drop-family" in err, err
    assert_online_matches(store, fams)
    from feast_bc.status import repo_status

    report = repo_status(repo)
    assert not report.ok
    assert any("no manifest" in p for f in report.families if f.family == "item_embedding" for p in f.problems)

    # The deliberate way: drop the family, then apply removes it (and only it).
    run_cli(["feast-bc", "drop-family", "--repo", str(repo), "--family", "item_embedding"])
    out = run_cli(["feast", "apply"], cwd=repo)
    assert "Deleted feature view item_embedding_bc0" in out.stdout
    assert _registered_views(store) == {"user_embedding_bc0", "user_embedding_bc1"}
    assert_online_matches(store, {"user_embedding": fams["user_embedding"]})
    report = repo_status(repo)
    assert report.ok, [report.problems, [f.problems for f in report.families]]
    assert any("item_embedding was dropped" in n for n in report.notes)
    # publishing into a dropped family is refused until the drop is undone
    with pytest.raises(FeastBCError, match="drop-family --undo"):
        fams["item_embedding"].publish_next(catalog, np.random.default_rng(1))
    catalog.drop_family("item_embedding", undo=True)
    shutil.move(tmp_path / "item_embedding.moved", catalog.family_dir("item_embedding"))
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    assert_online_matches(store, fams)  # back, values recomputed from the catalog


# --------------------------------------------------------------------------- 2. older manifest restored
@pytest.mark.redis
def test_restoring_an_older_manifest_is_refused_on_redis(tmp_path, redis_project, monkeypatch):
    from feast_bc.repo import REDIS_ENV_VAR, redis_url_to_connection_string

    repo = init_repo(tmp_path / "repo", project=redis_project)
    env = {REDIS_ENV_VAR: redis_url_to_connection_string(redis_url())}
    monkeypatch.setenv(REDIS_ENV_VAR, env[REDIS_ENV_VAR])
    yaml = ["-f", "feature_store.redis.yaml"]
    redis_yaml = repo / "feature_store.redis.yaml"
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    manifest = catalog.family_dir("item_embedding") / "manifest.json"
    registry = repo / "data" / "registry_redis.db"
    apply(repo, fs_yaml_file=redis_yaml).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    v1_manifest, v1_registry = manifest.read_bytes(), registry.read_bytes()

    rng = np.random.default_rng(7)
    for fam in fams.values():
        fam.publish_next(catalog, rng)
    apply(repo, fs_yaml_file=redis_yaml).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    store = _store(repo, "feature_store.redis.yaml")
    assert_online_matches(store, fams)
    v2_manifest = manifest.read_bytes()

    # What the checksum error message suggests ("restore it from backup") -- with an older backup.
    manifest.write_bytes(v1_manifest)
    proc = run_cli(["feast", *yaml, "apply"], cwd=repo, env=env, check=False)
    err = _one_line_error(proc)
    assert "CatalogRollbackError" in err and "older than what Feast already serves" in err, err
    proc = run_cli(["feast", *yaml, "materialize", START, _end_arg()], cwd=repo, env=env, check=False)
    err = _one_line_error(proc)
    assert "CatalogRollbackError" in err and "older than what Feast serves" in err, err
    status = run_cli(["feast-bc", "status", "--repo", str(repo)], env=env, check=False)
    assert status.returncode == 2 and "older than what Feast already serves" in status.stdout
    gc = run_cli(["feast-bc", "gc", "--repo", str(repo)], env=env, check=False)  # v2's files are orphans now
    assert gc.returncode == 2 and "gc deletes nothing" in gc.stderr
    assert_online_matches(store, fams)  # the pins still serve the newest chain, consistently

    # The registry restored too (a whole-repo backup): apply has nothing to compare against, but
    # the Redis writer sees values stamped later than the rows it would write and refuses.
    registry.write_bytes(v1_registry)
    run_cli(["feast", *yaml, "apply"], cwd=repo, env=env)
    proc = run_cli(["feast", *yaml, "materialize", START, _end_arg()], cwd=repo, env=env, check=False)
    err = _one_line_error(proc)
    assert "CatalogRollbackError" in err and "Redis already holds values" in err, err

    # Putting the newest manifest back (and applying) is the way out.
    manifest.write_bytes(v2_manifest)
    apply(repo, fs_yaml_file=redis_yaml).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    store = _store(repo, "feature_store.redis.yaml")
    assert_online_matches(store, fams)


def test_restored_catalog_and_registry_on_sqlite_serve_the_restored_versions(tmp_path):
    """SQLite overwrites whatever it holds (Feast's SQLite writer has no timestamp rule): when the
    registry was restored with the manifest, the pins serve the restored manifest's versions."""
    repo = init_repo(tmp_path / "repo", project=unique_project("rb"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    backup = tmp_path / "backup"
    shutil.copytree(repo, backup)
    snapshot = {name: (fam.ids.copy(), fam.vectors.copy(), fam.transforms.copy()) for name, fam in fams.items()}
    rng = np.random.default_rng(3)
    for fam in fams.values():
        fam.publish_next(catalog, rng)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    assert_online_matches(_store(repo), fams)
    for family in fams:
        shutil.copy(backup / "bc_catalog" / family / "manifest.json", catalog.family_dir(family) / "manifest.json")
    # the older manifest alone is refused ...
    with pytest.raises(FeastBCError, match="older than what Feast already serves"):
        apply(repo)
    # ... with the registry restored too, the restored versions are served
    shutil.copy(backup / "data" / "registry.db", repo / "data" / "registry.db")
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    for name, fam in fams.items():
        fam.ids, fam.vectors, fam.transforms = snapshot[name]
    assert_online_matches(_store(repo), fams)


# --------------------------------------------------------------------------- 3. retire flow
def test_documented_retire_flow_in_any_order_never_crashes(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("rt"))
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=3)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    items = fams["item_embedding"]
    bc = ["feast-bc"]
    where = ["--repo", str(repo), "--family", "item_embedding"]

    run_cli([*bc, "retire", *where, "--version", "0"])
    before = _snapshot(catalog.root)
    # gc --prune before `feast apply`: the registry still serves version 0, which needs B_1
    proc = run_cli([*bc, "gc", *where, "--prune"], check=False)
    err = _one_line_error(proc)
    assert "feature_store.yaml registers versions [0, 1, 2]" in err and "run `feast apply`" in err, err
    assert _snapshot(catalog.root) == before
    with pytest.raises(FeastBCError, match="registers versions"):  # the Python API refuses the same way
        catalog.collect_garbage("item_embedding", prune=True)
    assert _snapshot(catalog.root) == before

    run_cli(["feast", "apply"], cwd=repo)
    pruned = run_cli([*bc, "gc", *where, "--prune"])
    assert "removed 4 file(s)" in pruned.stdout  # z0, z1, B_1 and v0's reference sample
    verify = run_cli([*bc, "verify", "--repo", str(repo)])
    assert "retired and pruned, not computable any more: [0]" in verify.stdout
    out = tmp_path / "v0.parquet"
    proc = run_cli([*bc, "export", *where, "--version", "0", "--out", str(out)], check=False)
    err = _one_line_error(proc)
    assert proc.returncode == 2 and "version 0 is retired and B_1" in err and "pruned" in err, err
    assert not out.exists()
    table = export_version(repo, "item_embedding", 1)
    np.testing.assert_allclose(np.asarray(table.column("embedding").to_pylist()), items.expected(1), atol=1e-5, rtol=0)
    run_cli(["feast", "materialize", START, _end_arg()], cwd=repo)
    store = _store(repo)
    for v in (1, 2):
        got = np.asarray(online_vectors(store, "item_embedding", v, "item_id", items.ids[2]), dtype=np.float64)
        np.testing.assert_allclose(got, items.expected(v), atol=1e-5, rtol=0)
    from feast_bc.status import repo_status

    assert repo_status(repo).ok


def test_materialize_of_a_pruned_version_is_a_clear_error(tmp_path):
    """Defence in depth: should a registry still hold a view whose transforms were pruned (by a gc
    that could not see that registry: here one run on a copy of the catalog outside the repo, whose
    result is copied back), materialize names the problem instead of crashing."""
    repo = init_repo(tmp_path / "repo", project=unique_project("pr"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=3)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    catalog.retire("item_embedding", 0)
    elsewhere = tmp_path / "copy" / "bc_catalog"
    shutil.copytree(catalog.root, elsewhere)
    pruned = Catalog(elsewhere).collect_garbage("item_embedding", prune=True)  # no registry in sight
    shutil.copy(elsewhere / "item_embedding" / "manifest.json", catalog.family_dir("item_embedding") / "manifest.json")
    for path in pruned:
        (catalog.root / path.relative_to(elsewhere)).unlink()
    proc = run_cli(["feast", "materialize", START, _end_arg()], cwd=repo, check=False)
    err = _one_line_error(proc)
    assert "RetiredVersionError" in err and "version 0 is retired and B_1" in err, err


# --------------------------------------------------------------------------- 4. gc
def test_gc_refuses_a_shared_or_symlinked_artifacts_directory(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("sh"))
    catalog = Catalog.for_repo(repo)
    shared = tmp_path / "shared_artifacts"
    shared.mkdir()
    for family in ("user_embedding", "item_embedding"):
        catalog.family_dir(family).mkdir(parents=True)
        (catalog.family_dir(family) / "artifacts").symlink_to(shared, target_is_directory=True)
    fams = publish_users_and_items(catalog, versions=2)
    before = _snapshot(shared)
    assert len(before) == 2 * (2 + 1 + 2)  # both families' embeddings, transforms, reference samples in one place
    proc = run_cli(["feast-bc", "gc", "--repo", str(repo), "--family", "item_embedding"], check=False)
    err = _one_line_error(proc)
    assert "is a symlink" in err and "gc deletes nothing" in err, err
    with pytest.raises(FeastBCError, match="symlink"):
        catalog.collect_garbage("user_embedding", prune=True)
    assert _snapshot(shared) == before
    for fam in fams.values():  # everything still exports (reading through the symlink is fine)
        got = np.asarray(export_version(repo, fam.name, 0).column("embedding").to_pylist())
        np.testing.assert_allclose(got, fam.expected(0), atol=1e-5, rtol=0)


def test_gc_on_a_damaged_family_keeps_the_data_it_could_be_rebuilt_from(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("dm"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=3)
    apply(repo)
    m = catalog.manifest("item_embedding")
    catalog.artifact_path("item_embedding", m.versions[1].transform).unlink()  # B_1 lost
    stray = catalog.family_dir("item_embedding") / "artifacts" / "v0009-transform-0123456789abcdef.safetensors"
    stray.write_bytes(b"leftover")
    before = _snapshot(catalog.root)
    for args in (["--prune"], []):
        proc = run_cli(["feast-bc", "gc", "--repo", str(repo), "--family", "item_embedding", *args], check=False)
        err = _one_line_error(proc)
        assert "does not verify" in err and "B_1" in err and "rebuilt" in err, err
        assert _snapshot(catalog.root) == before  # z0 and z1 (what B_1 could be re-fit from) are still there
    for v in (0, 1):
        assert catalog.artifact_path("item_embedding", m.versions[v].embeddings).exists()


@pytest.mark.redis
def test_gc_considers_every_profile_of_the_repo(tmp_path, redis_project, monkeypatch):
    """SQLite profile applied at version 2, Redis profile still at version 1: --prune is refused and
    the file the Redis registry reads stays; after the Redis apply, --prune goes ahead."""
    from feast_bc.repo import REDIS_ENV_VAR, redis_url_to_connection_string

    repo = init_repo(tmp_path / "repo", project=redis_project)
    env = {REDIS_ENV_VAR: redis_url_to_connection_string(redis_url())}
    monkeypatch.setenv(REDIS_ENV_VAR, env[REDIS_ENV_VAR])
    redis_yaml = ["-f", "feature_store.redis.yaml"]
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    apply(repo, fs_yaml_file=repo / "feature_store.redis.yaml")
    rng = np.random.default_rng(11)
    for fam in fams.values():
        fam.publish_next(catalog, rng)
    apply(repo)  # the default (SQLite) profile moves to version 2; the Redis registry still reads v1's file
    v1_file = catalog.artifact_path("item_embedding", catalog.manifest("item_embedding").versions[1].embeddings)

    proc = run_cli(["feast-bc", "gc", "--repo", str(repo), "--prune"], check=False)
    err = _one_line_error(proc)
    assert "feature_store.redis.yaml registers versions [0, 1] (latest 1)" in err, err
    assert "feast -f feature_store.redis.yaml apply" in err
    assert v1_file.exists()
    # the lagging profile still materializes from the file it registered
    run_cli(["feast", *redis_yaml, "materialize", START, _end_arg()], cwd=repo, env=env)

    store = apply(repo, fs_yaml_file=repo / "feature_store.redis.yaml")
    pruned = run_cli(["feast-bc", "gc", "--repo", str(repo), "--prune"])
    assert "removed" in pruned.stdout and not v1_file.exists()
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    assert_online_matches(store, fams)


# --------------------------------------------------------------------------- 5. names and ids
@pytest.mark.parametrize("name", ["x\n", "item_embedding\n", "Item_embedding", "item embedding", "\nitem"])
def test_family_names_must_match_exactly(tmp_path, name):
    catalog = Catalog(tmp_path / "bc_catalog")
    with pytest.raises(FeastBCError, match="family name"):
        catalog.publish(name, ids=[1], vectors=np.ones((1, 2)), entity=EntitySpec(name="item", join_key="item_id"))
    assert not catalog.root.exists()  # refused before anything was created


@pytest.mark.parametrize(
    "spec, message",
    [
        (dict(name="user\n", join_key="user_id"), "entity name 'user\\\\n'"),
        (dict(name="user", join_key="user_id\n"), "join key 'user_id\\\\n'"),
        (dict(name="user", join_key="embedding"), "reserved"),
        (dict(name="user", join_key="event_timestamp"), "reserved"),
    ],
)
def test_entity_names_must_match_exactly(spec, message):
    with pytest.raises(FeastBCError, match=message):
        EntitySpec(**spec)


BAD_STRING_IDS = [
    ("", "empty string"),
    (" a", "leading or trailing whitespace"),
    ("a\u00a0", "leading or trailing whitespace"),
    ("a\nb", "U+000A"),
    ("a\x00", "U+0000"),
    ("a\u2028b", "U+2028"),
    ("\ud800", "U+D800"),  # a lone surrogate: not UTF-8 at all
    ("x" * 1025, "longer than 1024"),
]


@pytest.mark.parametrize("bad, message", BAD_STRING_IDS)
def test_string_ids_that_would_not_round_trip_are_refused(tmp_path, bad, message):
    catalog = Catalog(tmp_path / "bc_catalog")
    spec = EntitySpec(name="sku", join_key="sku_id", dtype="string")
    with pytest.raises(FeastBCError, match=re.escape(message)):
        catalog.publish("sku_embedding", ids=["ok", bad], vectors=np.ones((2, 2)), entity=spec)
    assert catalog.families() == [] and not (catalog.root / "sku_embedding").exists()


def test_int_ids_that_would_wrap_are_refused(tmp_path):
    catalog = Catalog(tmp_path / "bc_catalog")
    spec = EntitySpec(name="item", join_key="item_id")
    with pytest.raises(FeastBCError, match="do not fit a signed 64-bit"):
        catalog.publish(
            "item_embedding", ids=np.array([1, 2**63], dtype=np.uint64), vectors=np.ones((2, 2)), entity=spec
        )
    with pytest.raises(FeastBCError, match="must be integers"):
        catalog.publish("item_embedding", ids=np.array([True, False]), vectors=np.ones((2, 2)), entity=spec)
    assert catalog.families() == []


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_every_accepted_id_round_trips_through_parquet_export_and_the_online_key(tmp_path, backend, request):
    ids = [
        "a",
        "A",
        "0",
        "-1",
        "a b",
        "a,b",
        "naïve",
        "na\u0308ive",
        "日本語",
        "🙂",
        "'quote'",
        '"dq"',
        "back\\slash",
        "tab-less",
        "x" * 1024,
        "ends with é",
        "\u00e9",
        "e\u0301",
        "%s",
        "{json}",
        "a;b|c",
    ]
    ints = [0, -1, 1, 2**63 - 1, -(2**63), 7]
    project = unique_project("id")
    url = request.getfixturevalue("redis_available") if backend == "redis" else None
    repo = init_repo(tmp_path / "repo", project=project, online_store=backend, redis_url=url)
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(0)
    z_s = rng.normal(size=(len(ids), 4)).astype(np.float32)
    z_i = rng.normal(size=(len(ints), 3)).astype(np.float32)
    catalog.publish(
        "sku_embedding", ids=ids, vectors=z_s, entity=EntitySpec(name="sku", join_key="sku_id", dtype="string")
    )
    catalog.publish(
        "item_embedding",
        ids=np.array(ints, dtype=np.int64),
        vectors=z_i,
        entity=EntitySpec(name="item", join_key="item_id"),
    )
    # a legacy directory with a name no family may have (the old "x\n" bug) is reported, never served
    (catalog.root / "x\n").mkdir()
    shutil.copy(catalog.family_dir("sku_embedding") / "manifest.json", catalog.root / "x\n" / "manifest.json")
    try:
        run_cli(["feast", "apply"], cwd=repo)
        run_cli(["feast", "materialize", START, _end_arg()], cwd=repo)
        store = _store(repo)
        for family, key, values, z in (("sku_embedding", "sku_id", ids, z_s), ("item_embedding", "item_id", ints, z_i)):
            got_ids, got = catalog.latest_embeddings(family, ids=values)  # parquet
            assert list(got_ids) == values
            np.testing.assert_array_equal(got, z)
            table = export_version(repo, family, 0, ids=values)  # export
            assert table.column(key).to_pylist() == values
            resp = store.get_online_features(  # the online key
                features=store.get_feature_service(f"{family}_v0"), entity_rows=[{key: v} for v in values]
            ).to_dict()
            assert resp[key] == values
            np.testing.assert_allclose(np.asarray(resp["embedding"]), z, atol=1e-6, rtol=0)
        ids_file = tmp_path / "ids.txt"
        ids_file.write_text("\n".join(ids) + "\n", encoding="utf-8")
        out = tmp_path / "sku.parquet"
        run_cli(
            [
                "feast-bc",
                "export",
                "--repo",
                str(repo),
                "--family",
                "sku_embedding",
                "--version",
                "0",
                "--out",
                str(out),
                "--ids-file",
                str(ids_file),
            ]
        )
        import pyarrow.parquet as pq

        assert pq.read_table(out).column("sku_id").to_pylist() == ids
        from feast_bc.status import repo_status

        report = repo_status(repo)
        assert report.ok and any("not a family directory" in n for n in report.notes), report
    finally:
        if backend == "redis":
            delete_project_keys(url, project)


# --------------------------------------------------------------------------- 6. status == verify
def _reseal(catalog, family, version, data: bytes, field="transform"):
    """An attacker who can write the catalog: swap an artifact's bytes and re-seal the manifest."""
    from feast_bc.manifest import FamilyManifest

    m = catalog.manifest(family)
    ref = getattr(m.versions[version], field)
    path = catalog.artifact_path(family, ref)
    path.unlink()
    if isinstance(data, os.PathLike):
        path.symlink_to(data)
        data = path.read_bytes()
    else:
        path.write_bytes(data)
    mpath = catalog.family_dir(family) / "manifest.json"
    raw = json.loads(mpath.read_bytes())
    raw["versions"][version][field].update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    raw["checksum"] = None
    mpath.write_bytes(FamilyManifest.model_validate(raw).to_json_bytes())


def _safetensors(dtype: str, shape, payload: bytes) -> bytes:
    import struct

    header = json.dumps(
        {
            "__metadata__": {
                "format": "feast_bc.transform/1",
                "kind": "linear",
                "in_dim": str(shape[1]),
                "out_dim": str(shape[0]),
            },
            "weight": {"dtype": dtype, "shape": list(shape), "data_offsets": [0, len(payload)]},
        }
    ).encode()
    return struct.pack("<Q", len(header)) + header + payload


def _bad_parquet(catalog) -> bytes:
    """A valid parquet file with the right row count but no `embedding` column."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    m = catalog.manifest("item_embedding")
    buf = io.BytesIO()
    pq.write_table(pa.table({"item_id": pa.array(np.arange(m.latest.embeddings.rows, dtype=np.int64))}), buf)
    return buf.getvalue()


HOSTILE = {
    "pickle": lambda c: __import__("pickle").dumps({"weight": np.ones((10, 14))}),
    "absurd_shape": lambda c: _safetensors("F32", (1_000_000_000, 1_000_000_000), b"\0" * 16),
    "f16": lambda c: _safetensors("F16", (10, 14), np.ones((10, 14), np.float16).tobytes()),
    "i32": lambda c: _safetensors("I32", (10, 14), np.ones((10, 14), np.int32).tobytes()),
    "nan": lambda c: _safetensors("F32", (10, 14), np.full((10, 14), np.nan, np.float32).tobytes()),
    "symlink_to_etc_passwd": lambda c: __import__("pathlib").Path("/etc/passwd"),
    "wrong_shape": lambda c: _safetensors("F32", (10, 13), np.ones((10, 13), np.float32).tobytes()),
    "parquet_without_embedding": "embeddings",
}


@pytest.mark.parametrize("attack", sorted(HOSTILE))
def test_status_refuses_every_resealed_artifact_that_verify_and_materialize_refuse(tmp_path, capsys, attack):
    from feast_bc.cli import main as feast_bc_cli
    from feast_bc.status import repo_status

    repo = init_repo(tmp_path / "repo", project=unique_project("hs"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=3)
    if attack == "parquet_without_embedding":
        _reseal(catalog, "item_embedding", 2, _bad_parquet(catalog), field="embeddings")
    else:
        _reseal(catalog, "item_embedding", 2, HOSTILE[attack](catalog))  # B_2: 10 x 14
    catalog.manifest("item_embedding")  # the re-sealed manifest loads: only deeper checks can tell
    report = repo_status(repo, feast=False)
    problems = next(f for f in report.families if f.family == "item_embedding").problems
    assert not report.ok and problems, "status said OK about a family verify refuses"
    assert next(f for f in report.families if f.family == "user_embedding").problems == []
    capsys.readouterr()
    assert feast_bc_cli(["verify", "--repo", str(repo), "--family", "item_embedding"]) == 2
    refused = capsys.readouterr().err.splitlines()[0].removeprefix("feast-bc: error: ")
    assert refused in problems  # the very same check and message
    with pytest.raises(FeastBCError):
        export_version(repo, "item_embedding", 0)  # what materialize computes (same composed chain)


def test_status_and_verify_cli_agree_on_a_resealed_pickle(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("hc"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=2)
    apply(repo).materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    assert run_cli(["feast-bc", "status", "--repo", str(repo)]).returncode == 0
    _reseal(catalog, "item_embedding", 1, __import__("pickle").dumps(np.ones((6, 10))))
    status = run_cli(["feast-bc", "status", "--repo", str(repo)], check=False)
    verify = run_cli(["feast-bc", "verify", "--repo", str(repo)], check=False)
    assert status.returncode == verify.returncode == 2
    assert "not a safetensors file" in status.stdout and "not a safetensors file" in verify.stderr
    assert "NOT OK" in status.stdout and "every check of `feast-bc verify`" in status.stdout
    proc = run_cli(["feast", "materialize", START, _end_arg()], cwd=repo, check=False)
    assert proc.returncode != 0 and "not a safetensors file" in proc.stderr


# --------------------------------------------------------------------------- 7. clear errors
@pytest.mark.redis
def test_redis_out_of_memory_is_a_clear_error_and_a_rerun_completes(tmp_path):
    from redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    try:
        repo = init_repo(tmp_path / "repo", project=unique_project("oom"), online_store="redis", redis_url=server.url())
        catalog = Catalog.for_repo(repo)
        rng = np.random.default_rng(0)
        n, dims = 20_000, [32, 48, 64]
        ids = np.arange(n, dtype=np.int64)
        zs, bs = {}, {}
        for v, d in enumerate(dims):
            zs[v] = rng.normal(size=(n, d)).astype(np.float32)
            bs[v] = None if v == 0 else (rng.normal(size=(dims[v - 1], d)) / np.sqrt(d)).astype(np.float32)
            catalog.publish(
                "item_embedding",
                ids=ids,
                vectors=zs[v],
                transform=bs[v],
                entity=EntitySpec(name="item", join_key="item_id"),
            )
        run_cli(["feast", "apply"], cwd=repo)
        client = server.client()
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) + 6_000_000))
        proc = run_cli(["feast", "materialize", START, _end_arg()], cwd=repo, check=False)
        err = _one_line_error(proc)
        assert (
            "OnlineStoreFullError" in err and "ran out of memory" in err and "run `feast materialize` again" in err
        ), err
        written = client.dbsize()
        assert 0 < written <= n  # part of the work was done: complete entities, the rest untouched

        client.config_set("maxmemory", "0")  # the operator frees memory
        run_cli(["feast", "materialize", START, _end_arg()], cwd=repo)
        assert client.dbsize() == n
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(repo))
        sample = np.sort(rng.choice(ids, size=300, replace=False))
        z = zs[2][sample].astype(np.float64)
        expected = {2: z, 1: z @ bs[2].astype(np.float64).T}
        expected[0] = expected[1] @ bs[1].astype(np.float64).T
        for v in range(3):
            got = np.asarray(online_vectors(store, "item_embedding", v, "item_id", sample), dtype=np.float64)
            np.testing.assert_allclose(got, expected[v], atol=1e-5, rtol=0)
    finally:
        server.stop()


@pytest.mark.redis
def test_unset_redis_variable_is_a_clear_error(tmp_path, redis_project, monkeypatch):
    from feast_bc.repo import REDIS_ENV_VAR, redis_url_to_connection_string

    monkeypatch.delenv(REDIS_ENV_VAR, raising=False)
    repo = init_repo(tmp_path / "repo", project=redis_project)
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=2)
    yaml = ["-f", "feature_store.redis.yaml"]
    for args in (["apply"], ["materialize", START, _end_arg()]):
        if args[0] == "materialize":  # registered with the variable set, materialized without it
            run_cli(
                ["feast", *yaml, "apply"], cwd=repo, env={REDIS_ENV_VAR: redis_url_to_connection_string(redis_url())}
            )
        proc = run_cli(["feast", *yaml, *args], cwd=repo, check=False)
        err = _one_line_error(proc)
        assert "ConfigurationError" in err and f"${REDIS_ENV_VAR} is not set" in err and "KeyError" not in err, err
    with pytest.raises(FeastBCError, match="is not set"):
        apply(repo, fs_yaml_file=repo / "feature_store.redis.yaml")


def test_deeply_nested_manifest_is_a_clear_error(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("deep"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=2)
    (catalog.family_dir("item_embedding") / "manifest.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    out = tmp_path / "x.parquet"
    for args in (
        ["status", "--repo", str(repo), "--no-feast"],
        ["verify", "--repo", str(repo)],
        ["export", "--repo", str(repo), "--family", "item_embedding", "--version", "0", "--out", str(out)],
    ):
        proc = run_cli(["feast-bc", *args], check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "nested too deeply" in proc.stdout + proc.stderr
    assert not out.exists()
    from feast_bc.artifacts import decode_transform
    from feast_bc.errors import CorruptArtifactError

    header = b"[" * 500_000 + b"]" * 500_000
    with pytest.raises(CorruptArtifactError, match="nested too deeply"):
        decode_transform(len(header).to_bytes(8, "little") + header, origin="B")


def test_refused_first_publish_leaves_nothing_behind(tmp_path):
    from feast_bc.status import repo_status

    repo = init_repo(tmp_path / "repo", project=unique_project("fp"))
    catalog = Catalog.for_repo(repo)
    spec = EntitySpec(name="item", join_key="item_id")
    bad = [
        dict(ids=[1, 2], vectors=np.ones((2, 2))),  # no entity
        dict(ids=[1, 1], vectors=np.ones((2, 2)), entity=spec),
        dict(ids=[1, 2], vectors=np.array([[1.0, np.nan], [0, 0]]), entity=spec),
        dict(ids=[1, 2], vectors=np.ones((2, 2)), entity=spec, transform=np.ones((2, 2))),
        dict(ids=[1, 2], vectors=np.ones((2, 2)), entity=spec, expected_version=1),
    ]
    for kwargs in bad:
        with pytest.raises(FeastBCError):
            catalog.publish("item_embedding", **kwargs)
    assert not catalog.family_dir("item_embedding").exists()
    assert repo_status(repo, feast=False).ok
    assert run_cli(["feast-bc", "status", "--repo", str(repo), "--no-feast"]).returncode == 0


def test_expected_version_must_be_a_version_number(tmp_path):
    catalog = Catalog(tmp_path / "bc_catalog")
    spec = EntitySpec(name="item", join_key="item_id")
    catalog.publish("item_embedding", ids=[1, 2], vectors=np.ones((2, 2)), entity=spec)
    for wrong in ("1", True, 1.0):
        with pytest.raises(FeastBCError, match="expected_version must be"):
            catalog.publish(
                "item_embedding", ids=[1, 2], vectors=np.ones((2, 3)), transform=np.ones((2, 3)), expected_version=wrong
            )
    with pytest.raises(FeastBCError, match="expected to publish version 3, but the next version is 1"):
        catalog.publish(
            "item_embedding", ids=[1, 2], vectors=np.ones((2, 3)), transform=np.ones((2, 3)), expected_version=3
        )
    record = catalog.publish(
        "item_embedding", ids=[1, 2], vectors=np.ones((2, 3)), transform=np.ones((2, 3)), expected_version=np.int64(1)
    )
    assert record.version == 1
