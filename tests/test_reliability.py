"""Fault injection with real processes: Redis killed mid-materialize, publishers SIGKILLed at every
step, Redis with a password and a non-default database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import publish_users_and_items, run_cli, unique_project
from feast_bc import Catalog, EntitySpec
from feast_bc.errors import OnlineStoreUnavailableError
from feast_bc.repo import apply, init_repo
from redis_server import RedisServer

pytestmark = pytest.mark.redis


def _end():
    return datetime.now(UTC) + timedelta(seconds=5)


def _window_args():
    return ["2000-01-01T00:00:00", _end().strftime("%Y-%m-%dT%H:%M:%S")]


def _check_pins(store, catalog, family, join_key, ids):
    """Every pinned version of ``ids`` equals the offline computation from the catalog."""
    from feast_bc import export_version

    m = catalog.manifest(family)
    for v in m.served_versions:
        got = store.get_online_features(
            features=store.get_feature_service(f"{family}_v{v}"), entity_rows=[{join_key: int(i)} for i in ids]
        ).to_dict()["embedding"]
        assert all(g is not None for g in got), f"{family} v{v}: missing values"
        want = np.asarray(export_version(catalog, family, v, ids=ids).column("embedding").to_pylist())
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0, err_msg=f"{family} v{v}")


def test_redis_killed_during_materialize_then_rerun_completes(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    try:
        repo = init_repo(
            tmp_path / "repo", project=unique_project("kill"), online_store="redis", redis_url=server.url()
        )
        catalog = Catalog.for_repo(repo)
        rng = np.random.default_rng(0)
        n, dims = 150_000, [48, 64, 80]
        ids = np.arange(n, dtype=np.int64)
        for v, d in enumerate(dims):
            catalog.publish(
                "item_embedding",
                ids=ids,
                vectors=rng.normal(size=(n, d)).astype(np.float32),
                transform=None if v == 0 else (rng.normal(size=(dims[v - 1], d)) / np.sqrt(d)).astype(np.float32),
                entity=EntitySpec(name="item", join_key="item_id"),
            )
        yaml = ["-f", str(repo / "feature_store.redis.yaml")]
        run_cli(["feast", *yaml, "apply"], cwd=repo)
        proc = subprocess.Popen(
            [os.path.join(os.path.dirname(sys.executable), "feast"), *yaml, "materialize", *_window_args()],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        client = server.client()
        deadline = time.time() + 120
        while client.dbsize() < 5_000:  # let it write part of the first view, then crash Redis
            assert proc.poll() is None, (
                f"materialize finished before the fault could be injected:\n{proc.stdout.read()}"
            )
            assert time.time() < deadline
            time.sleep(0.02)
        server.kill()
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode != 0
        assert "became unreachable" in out and "run `feast materialize` again" in out, out[-2000:]

        server.start()  # same port and directory: the append-only file brings back what was written
        rerun = run_cli(["feast", *yaml, "materialize", *_window_args()], cwd=repo)
        assert rerun.returncode == 0
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / "feature_store.redis.yaml")
        sample = np.sort(rng.choice(ids, size=400, replace=False))
        _check_pins(store, catalog, "item_embedding", "item_id", sample)
        assert server.client().dbsize() == n  # one hash per entity, nothing missing
    finally:
        server.stop()


PUBLISH_SCRIPT = """
import os, signal, sys
import numpy as np
import feast_bc.atomic, feast_bc.catalog.publishing, feast_bc.repo
from feast_bc import Catalog

repo, step = sys.argv[1], sys.argv[2]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if step == "mid_artifacts":            # embeddings written, transform not yet
    feast_bc.catalog.publishing.write_transform = die
elif step == "before_manifest":        # every artifact written, manifest not replaced
    feast_bc.catalog.publishing.atomic_write_bytes = die
elif step == "mid_manifest_rename":    # new manifest fully in its temp file, not renamed
    real = feast_bc.atomic.os.replace
    def replace(src, dst):
        if str(dst).endswith("manifest.json"):
            die()
        return real(src, dst)
    feast_bc.atomic.os.replace = replace
elif step == "before_apply":           # manifest replaced, `feast apply` never ran
    feast_bc.repo.apply = die
rng = np.random.default_rng(5)
catalog = Catalog.for_repo(repo)
m = catalog.manifest("item_embedding")
catalog.publish("item_embedding", ids=np.arange(50) * 7 + 3, vectors=rng.normal(size=(50, 18)).astype(np.float32),
                transform=rng.normal(size=(m.latest.dim, 18)).astype(np.float32), expected_version=m.latest_version + 1)
feast_bc.repo.apply(repo)
print("published and applied")
"""


@pytest.mark.parametrize("step", ["mid_artifacts", "before_manifest", "mid_manifest_rename", "before_apply"])
def test_publisher_killed_at_each_step_leaves_old_or_new_state_and_retry_succeeds(tmp_path, step):
    repo = init_repo(tmp_path / "repo", project=unique_project("pk"))
    catalog = Catalog.for_repo(repo)
    publish_users_and_items(catalog, versions=2)
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    old = catalog.manifest("item_embedding")

    proc = subprocess.run([sys.executable, "-c", PUBLISH_SCRIPT, str(repo), step], capture_output=True, text=True)
    assert proc.returncode == -9, (proc.returncode, proc.stderr)

    m = catalog.manifest("item_embedding")  # loads and verifies its seal: never torn
    catalog.verify("item_embedding")  # every referenced artifact exists with its checksum
    from feast_bc.status import repo_status

    report = repo_status(repo)
    fam = next(f for f in report.families if f.family == "item_embedding")
    if step == "before_apply":
        assert m.latest_version == 2 and fam.orphans == []
        assert any("run `feast apply`" in p for p in fam.problems)
        apply(repo)  # the retry of the step that was killed
    else:
        assert m == old, "a killed publish must leave the previous manifest in force"
        assert fam.orphans, "leftovers of the killed publish must be reported"
        if step == "mid_manifest_rename":
            assert any(".manifest.json." in o for o in fam.orphans)
        gc = run_cli(["feast-bc", "gc", "--repo", str(repo)])
        assert "removed" in gc.stdout and catalog.orphans("item_embedding") == []
        proc = subprocess.run([sys.executable, "-c", PUBLISH_SCRIPT, str(repo), "none"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    store = apply(repo)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    assert catalog.manifest("item_embedding").latest_version == 2
    _check_pins(store, catalog, "item_embedding", "item_id", np.arange(50) * 7 + 3)
    assert repo_status(repo).ok


def test_password_and_database_from_the_connection_string(tmp_path):
    server = RedisServer(tmp_path / "redis", password="s3cr3t pw", appendonly=False).start()
    try:
        repo = init_repo(
            tmp_path / "repo",
            project=unique_project("pw"),
            online_store="redis",
            redis_url=server.url(db=3).replace("s3cr3t pw", "s3cr3t%20pw"),
        )
        text = (repo / "feature_store.redis.yaml").read_text()
        assert "db=3" in text and "password=s3cr3t pw" in text
        catalog = Catalog.for_repo(repo)
        fams = publish_users_and_items(catalog, versions=2)
        store = apply(repo, fs_yaml_file=repo / "feature_store.redis.yaml")
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
        items = fams["item_embedding"]
        _check_pins(store, catalog, "item_embedding", "item_id", items.ids[1])
        assert server.client(db=3).dbsize() > 0 and server.client(db=0).dbsize() == 0

        # wrong password: materialize refuses with a clear message, reads raise Redis' own error
        bad = tmp_path / "bad.yaml"
        bad.write_text(text.replace("password=s3cr3t pw", "password=wrong"))
        from feast import FeatureStore

        bad_store = FeatureStore(repo_path=str(repo), fs_yaml_file=bad)
        with pytest.raises(OnlineStoreUnavailableError, match="refused the credentials"):
            bad_store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end(), feature_views=["item_embedding_bc0"])
        import redis.exceptions

        with pytest.raises(redis.exceptions.AuthenticationError):
            bad_store.get_online_features(
                features=bad_store.get_feature_service("item_embedding_v0"), entity_rows=[{"item_id": 3}]
            )
        _check_pins(store, catalog, "item_embedding", "item_id", items.ids[1])  # nothing was damaged
    finally:
        server.stop()


READER_SCRIPT = """
import json, sys, time, random
import numpy as np
from feast import FeatureStore
repo, yaml, expected_path, stop_path, out_path, seed = sys.argv[1:7]
exp = dict(np.load(expected_path))  # an NpzFile would re-read the array from disk at every access
ids = exp["ids"]
store = FeatureStore(repo_path=repo, fs_yaml_file=yaml)
services = {v: store.get_feature_service(f"item_embedding_v{v}") for v in (0, 1)}
rng = random.Random(int(seed))
reads = vectors = violations = 0
examples, stamps = [], []
import os
while not os.path.exists(stop_path):
    v = rng.choice((0, 1))
    rows = rng.sample(range(len(ids)), 40)
    t = time.time()
    got = store.get_online_features(features=services[v], entity_rows=[{"item_id": int(ids[r])} for r in rows]).to_dict()["embedding"]
    stamps.append(t)
    reads += 1
    if reads == 1:
        open(out_path + ".ready", "w").close()
    for r, g in zip(rows, got):
        vectors += 1
        if g is None:
            ok = False
        else:
            g = np.asarray(g, dtype=np.float64)
            old, new = exp[f"old{v}"][r], exp[f"new{v}"][r]
            ok = g.shape == old.shape and np.isfinite(g).all() and (
                np.abs(g - old).max() <= 1e-5 or np.abs(g - new).max() <= 1e-5)
        if not ok:
            violations += 1
            if len(examples) < 5:
                examples.append({"version": v, "id": int(ids[r]), "value": None if g is None else g[:4].tolist()})
json.dump({"reads": reads, "vectors": vectors, "violations": violations, "examples": examples, "stamps": stamps}, open(out_path, "w"))
"""


def test_concurrent_readers_see_old_or_new_values_during_rematerialization(tmp_path, redis_project):
    import json

    from conftest import redis_url
    from feast_bc import export_version

    repo = init_repo(tmp_path / "repo", project=redis_project, online_store="redis", redis_url=redis_url())
    yaml = repo / "feature_store.redis.yaml"
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(3)
    n, dims = 80_000, [32, 48, 64]
    ids = np.arange(n, dtype=np.int64) + 1
    spec = EntitySpec(name="item", join_key="item_id")

    def publish(v):
        catalog.publish(
            "item_embedding",
            ids=ids,
            vectors=rng.normal(size=(n, dims[v])).astype(np.float32),
            transform=None
            if v == 0
            else (rng.normal(size=(dims[v - 1], dims[v])) / np.sqrt(dims[v])).astype(np.float32),
            entity=spec,
        )

    publish(0)
    publish(1)
    store = apply(repo, fs_yaml_file=yaml)
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    old = {v: np.asarray(export_version(catalog, "item_embedding", v).column("embedding").to_pylist()) for v in (0, 1)}
    publish(2)
    store = apply(repo, fs_yaml_file=yaml)
    new = {v: np.asarray(export_version(catalog, "item_embedding", v).column("embedding").to_pylist()) for v in (0, 1)}
    expected = tmp_path / "expected.npz"
    np.savez(expected, ids=ids, old0=old[0], old1=old[1], new0=new[0], new1=new[1])

    stop = tmp_path / "stop"
    readers = []
    for r in range(3):
        out = tmp_path / f"reader{r}.json"
        readers.append(
            (
                out,
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        READER_SCRIPT,
                        str(repo),
                        str(yaml),
                        str(expected),
                        str(stop),
                        str(out),
                        str(r),
                    ]
                ),
            )
        )
    deadline = time.time() + 180
    while not all(out.with_name(out.name + ".ready").exists() for out, _ in readers):  # polling the old values
        assert time.time() < deadline and all(p.poll() is None for _, p in readers), "readers did not start"
        time.sleep(0.2)
    time.sleep(1)
    t0 = time.time()
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
    t1 = time.time()
    time.sleep(1)
    stop.touch()
    results = []
    for out, proc in readers:
        assert proc.wait(timeout=120) == 0
        results.append(json.loads(out.read_text()))
    reads = sum(r["reads"] for r in results)
    during = sum(sum(t0 <= s <= t1 for s in r["stamps"]) for r in results)
    violations = sum(r["violations"] for r in results)
    print(
        f"\nconcurrent readers: {reads} reads ({sum(r['vectors'] for r in results)} vectors), "
        f"{during} during the {t1 - t0:.2f}s materialization, {violations} violations"
    )
    assert violations == 0, [r["examples"] for r in results]
    assert during > 0, "no read overlapped the materialization; the test proved nothing"
    # and afterwards everything is the new value
    _check_pins(store, catalog, "item_embedding", "item_id", ids[::997])


def test_soak_publish_materialize_cycles_leave_no_growth(tmp_path, redis_project):
    """Repeated publish -> retire old -> apply -> materialize -> gc: files and Redis stay bounded."""
    from conftest import redis_url

    cycles = int(os.environ.get("FEAST_BC_SOAK_CYCLES", "20"))
    keep = 3  # served versions
    n = 1500
    repo = init_repo(tmp_path / "repo", project=redis_project, online_store="redis", redis_url=redis_url())
    yaml = repo / "feature_store.redis.yaml"
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=np.int64)
    client = __import__("redis").Redis.from_url(redis_url())
    suffix = redis_project.encode()
    history = []
    for cycle in range(cycles):
        dim = 16 + 4 * (cycle % 3)
        m = catalog.manifest("item_embedding") if catalog.has_family("item_embedding") else None
        catalog.publish(
            "item_embedding",
            ids=ids,
            vectors=rng.normal(size=(n, dim)).astype(np.float32),
            transform=None if m is None else (rng.normal(size=(m.latest.dim, dim)) / np.sqrt(dim)).astype(np.float32),
            entity=EntitySpec(name="item", join_key="item_id"),
        )
        latest = catalog.manifest("item_embedding").latest_version
        for old in range(0, latest - keep + 1):
            catalog.retire("item_embedding", old)
        store = apply(repo, fs_yaml_file=yaml)
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), _end())
        catalog.collect_garbage("item_embedding", prune=True)
        keys = [k for k in client.scan_iter(count=5000) if k.endswith(suffix)]
        with client.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hlen(k)
            fields = sum(pipe.execute())
        files = sum(1 for p in catalog.family_dir("item_embedding").rglob("*") if p.is_file() and p.name != ".lock")
        views = len([v for v in store.list_batch_feature_views() if v.tags.get("bc.family")])
        history.append((files, len(keys), fields, views))
    print(f"\nsoak: {cycles} cycles, (files, redis keys, hash fields, views) per cycle: {history}")
    steady = history[keep:]
    assert all(h == steady[0] for h in steady), history
    files, nkeys, fields, views = steady[0]
    assert nkeys == n and views == keep and fields == n * keep * 2  # per view: embedding and _ts
    # manifest, latest embeddings, the B's that serve the kept versions, the kept versions' reference samples
    assert files == 1 + 1 + (keep - 1) + keep
    _check_pins(store, catalog, "item_embedding", "item_id", ids[::101])
