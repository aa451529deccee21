"""Issue 24, deliverables 2-3: a catalog on S3-compatible object storage (a real moto server on a
free loopback port), through the same commands as a local one: publish, verify, export, status,
`feast apply`, `feast materialize` (BCEngine), retire, gc; atomic and race-safe publishing; one-line
errors for what a user can get wrong."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import assert_online_matches, online_vectors, publish_users_and_items, run_cli, unique_project
from feast_bc import Catalog
from feast_bc.catalog.remote import RemoteCatalog
from feast_bc.errors import ConcurrentChangeError, ConfigurationError, ObjectStoreError
from feast_bc.export import export_version
from feast_bc.repo import init_repo
from local_redis import free_port
from local_s3 import client_env, new_bucket


@pytest.fixture
def s3_uri(s3_endpoint, monkeypatch, tmp_path):
    """A catalog URI in a fresh bucket, with the environment a user exports (and a private cache)."""
    for name, value in client_env(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FEAST_BC_CACHE_DIR", str(tmp_path / "cache"))
    return f"s3://{new_bucket(s3_endpoint)}/catalogs/main"


def _objects(uri: str) -> dict[str, str]:
    from feast_bc.catalog.object_store import ObjectStore

    return ObjectStore(uri).list()


def test_publish_verify_and_export_through_a_catalog_on_s3(s3_uri, tmp_path):
    """Publishing writes the local catalog's tree to the bucket; another machine (its own mirror)
    reads the same manifests and exports the numpy chain; checksums are verified on its mirror."""
    catalog = RemoteCatalog(s3_uri, mirror=tmp_path / "machine-a")
    fams = publish_users_and_items(catalog, versions=3)
    keys = _objects(s3_uri)
    assert {"item_embedding/manifest.json", "user_embedding/manifest.json"} <= set(keys)
    assert sum(k.startswith("item_embedding/artifacts/") for k in keys) == 3 + 2 + 3  # embeddings, B's, references
    other = RemoteCatalog(s3_uri, mirror=tmp_path / "machine-b")
    assert other.families() == catalog.families()
    for family, fam in fams.items():
        assert other.verify(family).checksum == catalog.manifest(family).checksum
        for v in range(3):
            table = export_version(other, family, v)
            got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
            np.testing.assert_allclose(got, fam.expected(v), atol=1e-5, rtol=0)
    manifest_text = (other.root / "item_embedding" / "manifest.json").read_text()
    assert str(tmp_path) not in manifest_text
    # a tampered mirror file is caught on read, as on a local catalog
    art = sorted((other.root / "item_embedding" / "artifacts").glob("*.safetensors"))[0]
    art.write_bytes(art.read_bytes()[:-4] + b"0000")
    with pytest.raises(Exception, match="checksum|sha256"):
        other.verify("item_embedding")


def test_a_repo_with_its_catalog_on_s3_applies_materializes_and_serves_anywhere(s3_uri, tmp_path):
    """The catalog declared once (`feast-bc init --catalog s3://...`); the registry names the
    object URL of the latest embeddings, no local path; `feast materialize` (BCEngine) serves the
    numpy chain; the repo moved elsewhere, with an empty cache, serves again."""
    project = unique_project("s3")
    repo = tmp_path / "a" / "repo"
    run_cli(["feast-bc", "init", str(repo), "--project", project, "--catalog", s3_uri])
    catalog = Catalog.for_repo(repo)
    assert isinstance(catalog, RemoteCatalog) and catalog.uri == s3_uri
    fams = publish_users_and_items(catalog, versions=3)
    run_cli(["feast", "apply"], cwd=repo)
    end = (datetime.now(UTC) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    run_cli(["feast", "materialize-incremental", end], cwd=repo)
    from feast import FeatureStore

    assert_online_matches(FeatureStore(repo_path=str(repo)), fams)
    source = FeatureStore(repo_path=str(repo)).get_data_source("item_embedding_latest_source")
    assert source.path.startswith(s3_uri + "/item_embedding/artifacts/"), source.path
    status = run_cli(["feast-bc", "status", "--repo", str(repo), "--no-feast"])
    assert s3_uri in status.stdout
    run_cli(["feast-bc", "verify", "--repo", str(repo)])

    moved = tmp_path / "b"
    shutil.move(str(repo), moved)
    env = {"FEAST_BC_CACHE_DIR": str(tmp_path / "fresh-cache")}
    run_cli(["feast", "materialize-incremental", end], cwd=moved, env=env)
    assert_online_matches(FeatureStore(repo_path=str(moved)), fams)


def test_racing_publishers_one_wins_and_the_loser_serves_nothing(s3_uri, tmp_path):
    """Two machines publish the next version at once: the manifest PUT is conditional, so the second
    fails with ConcurrentChangeError and the bucket serves the first's version, whole."""
    a = RemoteCatalog(s3_uri, mirror=tmp_path / "a")
    fams = publish_users_and_items(a, versions=2)
    b = RemoteCatalog(s3_uri, mirror=tmp_path / "b")
    fam = fams["item_embedding"]
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(2)
    push = b.push

    def push_after_a_published():  # b pulled under its lock; a publishes before b's manifest PUT
        fam.publish_next(a, rng_a)
        push()

    b.push = push_after_a_published
    b_fam = type(fam)(fam.name, fam.entity, fam.join_key, fam.dims)
    b_fam.vectors, b_fam.ids, b_fam.transforms = dict(fam.vectors), dict(fam.ids), dict(fam.transforms)
    with pytest.raises(ConcurrentChangeError, match="another writer changed it"):
        b_fam.publish_next(b, rng_b)
    fresh = RemoteCatalog(s3_uri, mirror=tmp_path / "c")
    assert fresh.manifest(fam.name).latest_version == 2
    table = export_version(fresh, fam.name, 0)
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, fam.expected(0), atol=1e-5, rtol=0)  # a's chain, not b's
    b.push = push
    b.pull()
    assert b.manifest(fam.name).latest_version == 2  # b's mirror follows the bucket again


def test_a_publisher_killed_before_its_manifest_leaves_the_old_version_and_gc_cleans_up(s3_uri, tmp_path):
    """Artifacts go first, the manifest last: killed in between, the bucket still serves the old
    version, whole; gc on the remote catalog deletes the orphans; retire reaches other machines."""
    a = RemoteCatalog(s3_uri, mirror=tmp_path / "a")
    fams = publish_users_and_items(a, versions=2)
    fam = fams["item_embedding"]
    before = set(_objects(s3_uri))
    put = a.store.put

    def killed(rel, data, **kw):
        if rel.endswith("manifest.json"):
            raise KeyboardInterrupt("killed")
        return put(rel, data, **kw)

    a.store.put = killed
    with pytest.raises(KeyboardInterrupt):
        fam.publish_next(a, np.random.default_rng(3))
    a.store.put = put
    orphans = set(_objects(s3_uri)) - before
    assert orphans and all("/artifacts/" in k for k in orphans)
    fresh = RemoteCatalog(s3_uri, mirror=tmp_path / "b")
    assert fresh.verify(fam.name).latest_version == 1
    removed = fresh.collect_garbage(fam.name)
    assert {p.relative_to(fresh.root).as_posix() for p in removed} == orphans
    assert set(_objects(s3_uri)) == before
    fresh.retire(fam.name, 0)
    a.pull()
    assert a.manifest(fam.name).served_versions == [1]


def test_object_store_problems_are_one_line_errors(s3_endpoint, s3_uri, tmp_path, monkeypatch):
    """An unreachable endpoint, a missing bucket, a scheme the filesystem layer does not know: one
    line naming the location and the fix, from Python and from the CLI; nothing written."""
    bucket = s3_uri.split("/")[2]
    with pytest.raises(ObjectStoreError, match="bucket 'no-such-bucket' does not exist"):
        RemoteCatalog("s3://no-such-bucket/x", mirror=tmp_path / "m1")
    repo = init_repo(tmp_path / "repo", project=unique_project("bad"), catalog=f"s3://{bucket}/c")
    proc = run_cli(
        ["feast-bc", "verify", "--repo", str(repo)],
        env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"},
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot reach the object store" in proc.stderr and "AWS_ENDPOINT_URL" in proc.stderr, proc.stderr
    with pytest.raises(ConfigurationError, match="not gs://"):
        init_repo(tmp_path / "gs", catalog="gs://bucket/prefix")
    assert not (tmp_path / "gs" / "feature_store.yaml").exists()
    with pytest.raises(ConfigurationError, match="names no bucket"):
        RemoteCatalog("s3:///prefix", mirror=tmp_path / "m2")
    assert json.loads(json.dumps(_objects(s3_uri))) == {}  # nothing was written to the real bucket


@pytest.mark.usefixtures("s3_uri")
def test_bcrayengine_and_fit_transform_work_on_a_catalog_on_s3(s3_uri, tmp_path):
    """The Ray engine materializes from the mirror (one node: driver and workers share it), and
    `fit-transform` publishes into the bucket through the repo's declared catalog."""
    import pandas as pd
    from feast import FeatureStore

    from conftest import local_ray

    repo = init_repo(tmp_path / "repo", project=unique_project("s3ray"), catalog=s3_uri)
    yaml = repo / "feature_store.yaml"
    engine = "  type: feast_bc.engine.BCEngine\n  batch_rows: 65536\n"
    yaml.write_text(yaml.read_text().replace(engine, "  type: feast_bc.ray_engine.BCRayEngine\n  num_workers: 2\n"))
    assert "BCRayEngine" in yaml.read_text()
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    # fit-transform: a third item version from a parquet file, B_2 fitted by least squares (exact here)
    fam = fams["item_embedding"]
    ids, z_old = fam.ids[1], fam.vectors[1]
    lift = np.random.default_rng(4).normal(size=(fam.dims[1], fam.dims[2])).astype(np.float32)
    z_new = z_old @ lift  # d_2 > d_1: some B_2 maps it back to z_old exactly
    new_file = tmp_path / "new.parquet"
    pd.DataFrame({"item_id": ids, "embedding": list(z_new)}).to_parquet(new_file)
    run_cli(
        ["python", "-m", "training", "fit-transform", "--repo", str(repo), "--family", "item_embedding",
         "--new", str(new_file), "--publish", "--no-apply"]
    )  # fmt: skip
    assert RemoteCatalog(s3_uri, mirror=tmp_path / "elsewhere").manifest("item_embedding").latest_version == 2
    from feast_bc.repo import apply

    apply(repo)
    with local_ray():
        FeatureStore(repo_path=str(repo)).materialize(
            datetime.now(UTC) - timedelta(days=1), datetime.now(UTC) + timedelta(seconds=5)
        )
    store = FeatureStore(repo_path=str(repo))
    assert_online_matches(store, {"user_embedding": fams["user_embedding"]})
    got = online_vectors(store, "item_embedding", 1, "item_id", ids)
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), z_old, atol=1e-3, rtol=0)


def test_feasts_own_registry_on_s3_is_read_by_every_check(s3_uri, tmp_path):
    """`registry: s3://...` (Feast's S3 registry store): apply, materialize and serve; the apply guard,
    `status` and `gc --prune` read that registry through Feast's own store instead of giving up."""
    from feast import FeatureStore

    from feast_bc.registries import read_profile, registered_families

    bucket = s3_uri.split("/")[2]
    repo = init_repo(tmp_path / "repo", project=unique_project("s3reg"), catalog=s3_uri)
    yaml = repo / "feature_store.yaml"
    yaml.write_text(yaml.read_text().replace("path: data/registry.db", f"path: s3://{bucket}/feast/registry.db"))
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    profile = read_profile(yaml, repo)
    assert profile.problem is None and profile.registry_uri == f"s3://{bucket}/feast/registry.db"
    assert registered_families(profile) == {} and not profile.applied()
    run_cli(["feast", "apply"], cwd=repo)
    assert "feast/registry.db" in _objects(f"s3://{bucket}")
    assert sorted(registered_families(profile)["item_embedding"].versions) == [0, 1]
    end = (datetime.now(UTC) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S")
    run_cli(["feast", "materialize-incremental", end], cwd=repo)
    assert_online_matches(FeatureStore(repo_path=str(repo)), fams)
    status = run_cli(["feast-bc", "status", "--repo", str(repo)], check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    gc = run_cli(["feast-bc", "gc", "--repo", str(repo), "--prune", "--dry-run"], check=False)
    assert gc.returncode == 0 and "cannot" not in gc.stderr, gc.stdout + gc.stderr


def test_credentials_the_store_refuses_are_one_line_errors(tmp_path, monkeypatch):
    """A server that checks credentials (moto with IAM auth enforced from the first request): an
    unknown access key is refused with one line naming the location and the variables to fix."""
    from local_s3 import LocalS3

    server = LocalS3(tmp_path, env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}).start()
    try:
        for name, value in client_env(server.endpoint).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("FEAST_BC_CACHE_DIR", str(tmp_path / "cache"))
        with pytest.raises(ObjectStoreError, match=r"refused the credentials to list .*AWS_ACCESS_KEY_ID"):
            RemoteCatalog("s3://some-bucket/catalog")
        repo = init_repo(tmp_path / "repo", project=unique_project("cred"), catalog="s3://some-bucket/catalog")
        proc = run_cli(["feast-bc", "status", "--repo", str(repo), "--no-feast"], check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert "refused the credentials" in proc.stderr, proc.stderr
    finally:
        server.stop()


def test_feasts_own_engines_are_refused_on_a_catalog_on_s3_at_apply(s3_uri, tmp_path):
    """Feast's local engine reads the latest file itself (through fsspec/s3fs, not installed): that
    would be a traceback at materialize; `feast apply` refuses first, naming the engine to use."""
    repo = init_repo(tmp_path / "repo", project=unique_project("s3local"), engine="local", catalog=s3_uri)
    publish_users_and_items(Catalog.for_repo(repo), versions=1)
    proc = run_cli(["feast", "apply"], cwd=repo, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "feast_bc.engine.BCEngine" in proc.stderr and "object storage" in proc.stderr, proc.stderr


def test_a_push_into_a_catalog_on_s3_is_uploaded_before_it_is_served(s3_uri, tmp_path):
    """Issue 25 on object storage: the push's segment is an object of the bucket (another machine's
    mirror sees it in the latest embeddings) and the pins serve it; a materialization keeps it."""
    from feast import FeatureStore

    from feast_bc.catalog.push_log import segments
    from feast_bc.pusher import push

    project = unique_project("s3push")
    repo = tmp_path / "repo"
    run_cli(["feast-bc", "init", str(repo), "--project", project, "--catalog", s3_uri])
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    run_cli(["feast", "apply"], cwd=repo)
    store = FeatureStore(repo_path=str(repo))
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=1))
    fam = fams["item_embedding"]
    k = fam.latest
    ids = np.array([fam.ids[k][1], 90_001], dtype=np.int64)
    z = np.random.default_rng(9).normal(size=(2, fam.vectors[k].shape[1])).astype(np.float32)
    push(repo, fam.name, ids, z, version=k)
    fam.push(ids, z)
    assert any(key.startswith("item_embedding/pushes/") for key in _objects(s3_uri))
    assert_online_matches(store, fams)
    other = RemoteCatalog(s3_uri, mirror=tmp_path / "machine-b")
    assert len(segments(other.family_dir(fam.name))) == 1
    got_ids, got = other.latest_embeddings(fam.name, ids=ids)
    np.testing.assert_allclose(got, z, atol=0, rtol=0)
    from feast_bc.catalog.object_store import ObjectStore

    listed = []
    original = ObjectStore.list
    ObjectStore.list = lambda self, *a, **kw: listed.append(1) or original(self, *a, **kw)
    try:
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=1))
    finally:
        ObjectStore.list = original
    assert len(listed) == 1  # the probe, the push lock and the pass share one opened catalog
    assert_online_matches(store, fams)


def test_a_publish_on_s3_during_a_materialize_leaves_the_pass_on_the_version_it_verified(s3_uri, tmp_path, monkeypatch):
    """Another machine publishes the next version while `feast materialize` runs here: the pass goes
    on writing the version the registry serves (its verified mirror), the pins equal that version's
    chain, and the next `feast apply` + materialize serve the new one."""
    from feast_bc.online_writers.sqlite import SqliteBulkWriter
    from feast_bc.repo import apply

    repo = init_repo(tmp_path / "repo", project=unique_project("s3mid"), catalog=s3_uri)
    fams = publish_users_and_items(Catalog.for_repo(repo), versions=2)
    before = {name: {v: fam.expected(v) for v in range(2)} for name, fam in fams.items()}
    store = apply(repo)
    other = RemoteCatalog(s3_uri, mirror=tmp_path / "other-machine")
    published = []
    write = SqliteBulkWriter._write

    def publish_midway(self, batch):
        if not published:  # before the pass's first batch lands: the manifest on S3 moves on
            published.append(fams["item_embedding"].publish_next(other, np.random.default_rng(9)))
        return write(self, batch)

    monkeypatch.setattr(SqliteBulkWriter, "_write", publish_midway)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    assert published == [2] and other.manifest("item_embedding").latest_version == 2
    for name, fam in fams.items():
        for v in range(2):
            got = np.asarray(online_vectors(store, name, v, fam.join_key, fam.ids[1]), dtype=np.float64)
            np.testing.assert_allclose(got, before[name][v], atol=1e-5, rtol=0, err_msg=f"{name} v{v}")
    monkeypatch.setattr(SqliteBulkWriter, "_write", write)

    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    assert_online_matches(store, fams)


def test_an_older_manifest_put_back_on_s3_during_a_materialize_is_refused_at_the_next_apply(
    s3_uri, tmp_path, monkeypatch
):
    """Another machine puts an older manifest back on S3 (a restore from backup) while `feast
    materialize` runs here: the pass completes on the version it verified (the pins equal version
    2's chain, nothing mixed), the next `feast apply` refuses the rolled-back catalog in one line
    naming the family and the fix (RELIABILITY section 8, as on a local catalog), and with the newest
    manifest put back apply + materialize serve every pin again."""
    from feast_bc.catalog.object_store import ObjectStore
    from feast_bc.errors import CatalogRollbackError
    from feast_bc.online_writers.sqlite import SqliteBulkWriter
    from feast_bc.repo import apply

    repo = init_repo(tmp_path / "repo", project=unique_project("s3old"), catalog=s3_uri)
    catalog = Catalog.for_repo(repo)
    fams = publish_users_and_items(catalog, versions=2)
    objects = ObjectStore(s3_uri)
    manifest_key = "item_embedding/manifest.json"
    older = tmp_path / "manifest-v1.json"
    objects.download(manifest_key, older)  # the backup: the manifest as it was at version 1
    fams["item_embedding"].publish_next(catalog, np.random.default_rng(11))
    newest = tmp_path / "manifest-v2.json"
    objects.download(manifest_key, newest)
    store = apply(repo)
    restored = []
    write = SqliteBulkWriter._write

    def restore_midway(self, batch):
        if not restored:  # before the pass's first batch lands: the manifest on S3 goes back to version 1
            restored.append(objects.put(manifest_key, older.read_bytes()))
        return write(self, batch)

    monkeypatch.setattr(SqliteBulkWriter, "_write", restore_midway)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    monkeypatch.setattr(SqliteBulkWriter, "_write", write)
    assert restored and RemoteCatalog(s3_uri, mirror=tmp_path / "other").manifest("item_embedding").latest_version == 1
    assert_online_matches(store, fams)  # every pin: version 2's chain, as the registry serves it

    with pytest.raises(CatalogRollbackError) as refused:
        apply(repo)
    message = str(refused.value)
    assert "\n" not in message and "item_embedding" in message and "version 2" in message
    assert_online_matches(store, fams)  # the refusal changed nothing that is served

    objects.put(manifest_key, newest.read_bytes())  # the newest manifest put back
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    assert_online_matches(store, fams)
