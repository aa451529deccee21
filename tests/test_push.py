"""Issue 25, deliverables 1-2: push new and changed entities into every pin, durably.

Real Feast on SQLite and Redis. Every expectation is the numpy B-chain of what was published with
the pushes applied (float64), compared with what `get_online_features` on each pin returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import SyntheticFamily, online_vectors, redis_url, run_cli, unique_project
from feast_bc import Catalog
from feast_bc.catalog.push_log import segments
from feast_bc.errors import ConfigurationError, DuplicateIdError, NonFiniteError, VersionConflictError
from feast_bc.export import export_version
from feast_bc.pusher import Pusher, push
from feast_bc.repo import apply, init_repo

DIMS = [6, 10, 14, 18]
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]
START = datetime(2000, 1, 1, tzinfo=UTC)


PushedFamily = SyntheticFamily


@pytest.fixture(params=BACKENDS)
def repo(tmp_path, request):
    backend = request.param
    project = unique_project("push")
    if backend == "redis":
        request.getfixturevalue("redis_available")
        path = init_repo(tmp_path / "repo", project=project, online_store="redis", redis_url=redis_url())
    else:
        path = init_repo(tmp_path / "repo", project=project)
    yield path
    if backend == "redis":
        from conftest import delete_project_keys

        delete_project_keys(redis_url(), project)


def _published(repo, versions: int = 3, n: int = 50) -> PushedFamily:
    catalog = Catalog.for_repo(repo)
    fam = PushedFamily("item_embedding", "item", "item_id", DIMS)
    rng = np.random.default_rng(7)
    for _ in range(versions):
        fam.publish_next(catalog, rng, n=n)
    return fam


def _materialize(store, start=START, end=None):
    store.materialize(start_date=start, end_date=end or datetime.now(UTC) + timedelta(seconds=1))


def _assert_pins(store, fam: PushedFamily, ids=None) -> None:
    ids = fam.ids[fam.latest] if ids is None else np.asarray(ids)
    for v in range(fam.latest + 1):
        got = online_vectors(store, fam.name, v, fam.join_key, ids)
        assert all(g is not None for g in got), f"v{v}: missing values"
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), fam.expected(v, ids), atol=1e-5, rtol=0)


def test_push_new_and_changed_ids_reaches_every_pin_and_survives_materialize(repo):
    fam = _published(repo)
    store = apply(repo)
    _materialize(store)
    k = fam.latest
    rng = np.random.default_rng(1)
    changed = fam.ids[k][[0, 5, 17]]
    new = np.array([100_001, 100_002], dtype=np.int64)
    ids = np.concatenate([changed, new])
    z = rng.normal(size=(len(ids), DIMS[k])).astype(np.float32)
    import feast_bc

    assert feast_bc.push is push and feast_bc.Pusher is Pusher  # the package's names, loaded on first use
    result = feast_bc.push(repo, fam.name, ids, z, version=k)
    fam.push(ids, z)
    assert result.rows == 5 and [w.versions for w in result.written] == [[0, 1, 2]]
    _assert_pins(store, fam)  # every pin, pushed and untouched entities alike

    # a full-window and an incremental materialization keep the pushed values
    _materialize(store)
    _assert_pins(store, fam)
    store.materialize_incremental(end_date=datetime.now(UTC) + timedelta(seconds=1))
    _assert_pins(store, fam)
    # a window that ends before the push writes the published values of nothing pushed over them
    _materialize(store, end=result.event_time - timedelta(microseconds=1))
    _assert_pins(store, fam)

    # export and the overlayed latest see what the pins serve
    exported = export_version(repo, fam.name, 0, ids=ids)
    np.testing.assert_allclose(
        np.stack(exported.column("embedding").to_pylist()), fam.expected(0, ids), atol=1e-5, rtol=0
    )


def test_a_second_push_wins_and_a_new_online_store_gets_every_push(tmp_path, redis_available):
    project = unique_project("push2")
    repo = init_repo(tmp_path / "repo", project=project)  # SQLite
    fam = _published(repo)
    store = apply(repo)
    _materialize(store)
    k = fam.latest
    rng = np.random.default_rng(2)
    pusher = Pusher(repo, fam.name)
    for _ in range(3):  # the same entities pushed again: the newest push is what every pin reads
        ids = np.array([fam.ids[k][3], 200_000], dtype=np.int64)
        z = rng.normal(size=(2, DIMS[k])).astype(np.float32)
        pusher.push(ids, z, version=k)
        fam.push(ids, z)
    _assert_pins(store, fam)
    assert [s.number for s in segments(Catalog.for_repo(repo).family_dir(fam.name))] == [1, 2, 3]

    # a new online store (the Redis profile of the same repo), materialized from scratch
    redis_yaml = repo / "feature_store.redis.yaml"
    text = redis_yaml.read_text().replace(f"project: {project}", f"project: {project}r")
    from feast_bc.repo import redis_url_to_connection_string

    redis_yaml.write_text(text.replace("${FEAST_BC_REDIS}", redis_url_to_connection_string(redis_url())))
    try:
        other = apply(repo, fs_yaml_file=redis_yaml)
        _materialize(other)
        _assert_pins(other, fam)
    finally:
        from conftest import delete_project_keys

        delete_project_keys(redis_url(), f"{project}r")


def test_push_then_publish_folds_the_pushes_in(repo):
    fam = _published(repo)
    store = apply(repo)
    _materialize(store)
    k = fam.latest
    catalog = Catalog.for_repo(repo)
    rng = np.random.default_rng(3)
    ids = np.array([fam.ids[k][2], 300_000, 300_001], dtype=np.int64)
    z = rng.normal(size=(3, DIMS[k])).astype(np.float32)
    push(repo, fam.name, ids, z, version=k)
    fam.push(ids, z)

    # the next version must hold the pushed new entities (every pin is computed from it)
    n = len(fam.ids[k])
    b = (rng.normal(size=(DIMS[k], DIMS[k + 1])) / np.sqrt(DIMS[k + 1])).astype(np.float32)
    without = rng.normal(size=(n - 2, DIMS[k + 1])).astype(np.float32)
    with pytest.raises(Exception, match="lacks 2 of the"):
        catalog.publish(fam.name, ids=fam.ids[k][:-2], vectors=without, transform=b)
    # the gate and training read the latest with the pushes applied
    latest_ids, latest = catalog.latest_embeddings(fam.name)
    assert set(map(int, latest_ids)) == set(map(int, fam.ids[k]))

    z_next = rng.normal(size=(n, DIMS[k + 1])).astype(np.float32)
    catalog.publish(fam.name, ids=fam.ids[k], vectors=z_next, transform=b)
    fam.ids[k + 1], fam.vectors[k + 1], fam.transforms[k + 1] = fam.ids[k], z_next, b
    # a push computed for version k now is refused: never transformed with the wrong chain
    with pytest.raises(VersionConflictError, match=f"computed for version {k}.*latest is version {k + 1}"):
        push(repo, fam.name, ids[:1], z[:1], version=k)
    # a push for the new version before `feast apply`: recorded, not written into pins that still
    # serve version k; the apply and the materialization after it write it
    late_ids = np.array([fam.ids[k + 1][4], 300_500], dtype=np.int64)
    late = rng.normal(size=(2, DIMS[k + 1])).astype(np.float32)
    result = push(repo, fam.name, late_ids, late, version=k + 1)
    assert result.written == [] and f"serves version {k} as latest" in result.skipped[0], result.skipped
    fam.push(late_ids, late)
    store = apply(repo)
    _materialize(store)
    _assert_pins(store, fam)
    # the folded-in segments are garbage now; gc removes them
    family_dir = catalog.family_dir(fam.name)
    assert {seg.version for seg in segments(family_dir)} == {k, k + 1}
    catalog.collect_garbage(fam.name)
    assert {seg.version for seg in segments(family_dir)} == {k + 1}
    _assert_pins(store, fam)


def test_a_bad_batch_writes_nothing(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("pushbad"))
    fam = _published(repo, versions=2)
    store = apply(repo)
    _materialize(store)
    k = fam.latest
    family_dir = Catalog.for_repo(repo).family_dir(fam.name)
    good = np.ones((2, DIMS[k]), dtype=np.float32)
    cases = [
        (np.array([1, 1]), good, DuplicateIdError, "more than once"),
        (np.array([1, 2]), np.array([[np.nan] * DIMS[k]] * 2), NonFiniteError, "NaN"),
        (np.array([1, 2]), np.ones((2, DIMS[k] + 1)), Exception, "dimension 11, version 1 has 10"),
        (np.array(["a", "b"]), good, Exception, "must be integers"),
        (np.array([1, 2]), good[:1], Exception, "2 ids but 1 embedding rows"),
    ]
    for ids, z, error, message in cases:
        with pytest.raises(error, match=message):
            push(repo, fam.name, ids, z, version=k)
    with pytest.raises(VersionConflictError, match="no such version"):
        push(repo, fam.name, np.array([1]), good[:1], version=k + 1)
    assert segments(family_dir) == []
    _assert_pins(store, fam)  # nothing changed


def test_push_refused_where_an_engine_would_undo_it(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("pushstock"), engine="local")
    fam = _published(repo, versions=2)
    apply(repo)
    with pytest.raises(ConfigurationError, match="reads only the published file"):
        push(repo, fam.name, np.array([1]), np.ones((1, DIMS[1]), dtype=np.float32), version=1)
    assert segments(Catalog.for_repo(repo).family_dir(fam.name)) == []


def test_cli_push_from_a_parquet_file(tmp_path):
    repo = init_repo(tmp_path / "repo", project=unique_project("pushcli"))
    fam = _published(repo, versions=2)
    store = apply(repo)
    _materialize(store)
    k = fam.latest
    ids = np.array([fam.ids[k][1], 400_000], dtype=np.int64)
    z = np.random.default_rng(4).normal(size=(2, DIMS[k])).astype(np.float32)
    path = tmp_path / "new.parquet"
    pq.write_table(pa.table({"item_id": ids, "embedding": [list(map(float, v)) for v in z]}), path)
    out = run_cli(
        ["feast-bc", "push", "--repo", str(repo), "--family", fam.name, "--version", str(k), "--file", str(path)]
    )
    assert "pushed 2 entities" in out.stdout, out.stdout
    status = run_cli(["feast-bc", "status", "--repo", str(repo), "--no-feast"]).stdout
    assert f"pushed since v{k} was published: 2 entities in 1 pushes" in status, status
    fam.push(ids, z)
    _assert_pins(store, fam)
    bad = run_cli(
        ["feast-bc", "push", "--repo", str(repo), "--family", fam.name, "--version", "0", "--file", str(path)],
        check=False,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "computed for version 0" in bad.stderr


@pytest.mark.redis
def test_sigkill_during_a_push_leaves_every_entity_old_or_new(tmp_path, redis_available):
    """A pusher killed at random points: the log stays readable (whole segments only), and every
    entity reads, on every pin, either its value before the push or the pushed one."""
    project = unique_project("pushkill")
    repo = init_repo(tmp_path / "repo", project=project, online_store="redis", redis_url=redis_url())
    fam = _published(repo, n=200)
    store = apply(repo)
    _materialize(store)
    k = fam.latest
    rng = np.random.default_rng(5)
    ids = np.concatenate([fam.ids[k][:100], np.arange(500_000, 500_500)])
    z = rng.normal(size=(len(ids), DIMS[k])).astype(np.float32)
    np.save(tmp_path / "z.npy", z)
    np.save(tmp_path / "ids.npy", ids)
    script = textwrap.dedent(
        f"""
        import numpy as np
        from feast_bc.pusher import Pusher
        p = Pusher({str(repo)!r}, {fam.name!r})
        ids, z = np.load({str(tmp_path / "ids.npy")!r}), np.load({str(tmp_path / "z.npy")!r})
        print("ready", flush=True)
        while True:
            for lo in range(0, len(ids), 50):
                p.push(ids[lo:lo + 50], z[lo:lo + 50], version={k})
        """
    )
    try:
        for delay in (2.0, 2.5, 3.0):
            proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
            assert proc.stdout.readline().strip() == "ready"
            import time

            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        catalog = Catalog.for_repo(repo)
        pushed = catalog.pushed(fam.name)  # the log is readable and verifies
        assert pushed is not None and catalog.check(fam.name)
        before = {v: fam.expected(v) for v in range(k + 1)}
        index = {int(i): r for r, i in enumerate(fam.ids[k])}
        chain = {v: fam.expected(v) for v in range(k + 1)}
        for v in range(k + 1):
            got = online_vectors(store, fam.name, v, fam.join_key, ids)
            new_values = z.astype(np.float64)
            for u in range(k, v, -1):
                new_values = new_values @ fam.transforms[u].astype(np.float64).T
            for r, i in enumerate(ids):
                old = before[v][index[int(i)]] if int(i) in index else None
                value = got[r]
                if value is None:
                    assert old is None, f"v{v} id {i}: lost its value"
                    continue
                value = np.asarray(value)
                is_new = np.allclose(value, new_values[r], atol=1e-5)
                is_old = old is not None and np.allclose(value, old, atol=1e-5)
                assert is_new or is_old, f"v{v} id {i}: neither old nor new"
        del chain
        # and a materialization brings every pin to the log's values
        _materialize(store)
        fam.push(pushed.ids, pushed.vectors)
        _assert_pins(store, fam)
    finally:
        from conftest import delete_project_keys

        delete_project_keys(redis_url(), project)


def test_an_edited_or_missing_segment_is_refused(tmp_path):
    """The log is a hash chain: a segment whose bytes changed, or a gap in the numbering, is refused
    on read (and so by verify, materialize and export) instead of being partly applied."""
    from feast_bc.errors import ChecksumMismatchError, CorruptArtifactError

    repo = init_repo(tmp_path / "repo", project=unique_project("pushlog"))
    fam = _published(repo, versions=2)
    catalog = Catalog.for_repo(repo)
    k = fam.latest
    for i in range(3):
        push(repo, fam.name, np.array([900_000 + i]), np.ones((1, DIMS[k]), dtype=np.float32) * i, version=k)
    family_dir = catalog.family_dir(fam.name)
    first, second, _ = segments(family_dir)
    assert catalog.pushed(fam.name).ids.tolist() == [900_000, 900_001, 900_002]
    data = bytearray(second.path.read_bytes())
    data[-40] ^= 0xFF
    second.path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="push 2 of version 1"):
        catalog.pushed(fam.name)
    with pytest.raises(ChecksumMismatchError):
        catalog.check(fam.name)
    second.path.unlink()
    with pytest.raises(CorruptArtifactError, match="has push 3 but no push 2"):
        catalog.pushed(fam.name)
