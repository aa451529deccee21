"""feast_bc's engine on Ray (``feast_bc.ray_engine.BCRayEngine``) writes what BCEngine writes.

Two repos share a copy of one catalog: one runs `BCRayEngine` (slices of row groups on a local
Ray), the other `BCEngine` (the reference, one process). The latest files are published with tiny
row groups (8 rows; ``batch_rows`` 5, so batches end inside row groups too) and two row groups per
task, so every family is several Ray tasks. Both are compared byte for byte: every field of every
Redis hash of the project, every row of every SQLite table.

Failures are injected through ``BCRayEngine.slice_function`` (the function each Ray task runs): a
closure defined here is shipped to the workers by value.

One Ray session (2 CPUs, no dashboard, small object store) serves the whole module.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import (
    assert_online_matches,
    local_ray,
    publish_users_and_items,
)
from repo_pair import RepoPair

START = datetime(2000, 1, 1, tzinfo=UTC)
ROW_GROUP_ROWS = 8
BATCH_ROWS = 5
BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


def _end() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


@pytest.fixture(scope="module")
def ray_session():
    with local_ray() as ray:
        yield ray


@pytest.fixture
def small_row_groups(monkeypatch):
    import feast_bc.embeddings as embeddings

    monkeypatch.setattr(embeddings, "ROW_GROUP_ROWS", ROW_GROUP_ROWS)


def _pair(tmp_path, backend: str, **ray_options) -> RepoPair:
    """The Ray repo and the BCEngine reference repo, with one catalog published into the first."""
    options = {"num_workers": 2, "row_groups_per_task": 2, "batch_rows": BATCH_ROWS, **ray_options}
    ray_block = "  type: feast_bc.ray_engine.BCRayEngine\n"
    ray_block += "".join(f"  {k}: {str(v).lower()}\n" for k, v in options.items())
    bc_block = f"  type: feast_bc.engine.BCEngine\n  batch_rows: {BATCH_ROWS}\n"
    return RepoPair(tmp_path, backend, {"ray": ray_block, "bc": bc_block})


@pytest.fixture
def pair(tmp_path, request, ray_session, small_row_groups):
    backend = request.param
    if backend == "redis":
        request.getfixturevalue("redis_available")
    made = _pair(tmp_path, backend)
    yield made
    made.cleanup()


def _intervals(store) -> dict[str, int]:
    store.refresh_registry()
    return {fv.name: len(fv.materialization_intervals) for fv in store.list_batch_feature_views()}


def _row_groups(catalog, family: str) -> int:
    import pyarrow.parquet as pq

    manifest = catalog.manifest(family)
    return pq.ParquetFile(catalog.artifact_path(family, manifest.latest.embeddings)).metadata.num_row_groups


def _count_slices(monkeypatch, directory) -> None:
    """Make every Ray task leave a file in ``directory`` (then run the real slice)."""
    from feast_bc.ray_engine import BCRayEngine

    def counting(context, row_groups):
        import uuid
        from pathlib import Path

        from feast_bc.ray_engine import run_slice

        (Path(directory) / f"{uuid.uuid4().hex}").write_text(f"{context.what} {list(row_groups)}")
        return run_slice(context, row_groups)

    monkeypatch.setattr(BCRayEngine, "slice_function", staticmethod(counting))


# --------------------------------------------------------------------------- same bytes
@pytest.mark.parametrize("pair", BACKENDS, indirect=True)
def test_ray_slices_write_the_same_bytes_as_bcengine(pair, tmp_path, monkeypatch):
    from feast.infra.common.materialization_job import MaterializationJobStatus, MaterializationTask

    rng = np.random.default_rng(21)
    fams = publish_users_and_items(pair.catalog, versions=3, seed=21)
    stores = pair.apply()
    engine = stores["ray"]._get_provider().batch_engine
    assert type(engine).__name__ == "BCRayEngine" and engine.supports_batch
    assert _row_groups(pair.catalog, "item_embedding") == 5  # 40 rows, 8 per group: 3 tasks per family
    calls = tmp_path / "calls"
    calls.mkdir()
    _count_slices(monkeypatch, calls)
    for store in stores.values():
        store.materialize(START, _end())
    assert len(list(calls.iterdir())) == 6  # 2 families x 3 slices, each family's 3 views fused
    assert pair.rows("ray") == pair.rows("bc") != {}
    assert_online_matches(stores["ray"], fams)  # == the numpy B-chain (1e-5)
    assert set(_intervals(stores["ray"]).values()) == {1}

    # a 4th item version (45 rows: 6 row groups) and per-view windows, one excluding the new rows
    fams["item_embedding"].publish_next(pair.catalog, rng, n=45)
    stores = pair.apply()
    published = pair.catalog.manifest("item_embedding").latest.created_at
    windows = {
        3: (START, _end()),
        2: (START, published - timedelta(microseconds=1)),  # ends just before the new rows
        1: (published, published),  # inclusive on both ends
        0: (published + timedelta(microseconds=1), _end()),  # starts just after
    }
    before = pair.rows("ray")
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
    after = pair.rows("ray")
    assert after == pair.rows("bc")
    assert after != before
    if pair.backend == "sqlite":
        changed = {key[0] for key, row in after.items() if before.get(key) != row}
        # bc2's window ends before the new rows: untouched; bc0's starts after them, but the store
        # lacks them, so the probe takes them in (feast_bc.online_probe) -- in both engines alike
        assert changed == {"item_embedding_bc3", "item_embedding_bc1", "item_embedding_bc0"}


@pytest.mark.redis
def test_view_by_view_slices_write_the_same_bytes(redis_available, ray_session, small_row_groups, tmp_path):
    """``fused: false``: every view is its own set of slices; same result."""
    pair = _pair(tmp_path, "redis", fused=False)
    try:
        fams = publish_users_and_items(pair.catalog, versions=3, seed=22)
        stores = pair.apply()
        assert not stores["ray"]._get_provider().batch_engine.fused
        for store in stores.values():
            store.materialize(START, _end())
        assert pair.rows("ray") == pair.rows("bc") != {}
        assert_online_matches(stores["ray"], fams)
    finally:
        pair.cleanup()


# --------------------------------------------------------------------------- failures
def _failing_slice(family: str, first_row_group: int, exc_type: type[Exception], once_marker=None):
    """A slice function that fails the slice of ``family`` starting at ``first_row_group`` after its
    first part is written (with ``once_marker``: only the first time, as a transient error)."""

    def failing(context, row_groups):
        from pathlib import Path

        import feast_bc.materialize.stream as stream
        from feast_bc.ray_engine import run_slice

        if family not in context.what or row_groups[0] != first_row_group:
            return run_slice(context, row_groups)
        if once_marker is not None:
            if Path(once_marker).exists():
                return run_slice(context, row_groups)
            Path(once_marker).write_text("failed once")
        original = stream.family_parts

        def parts(*args, **kwargs):
            for i, part in enumerate(original(*args, **kwargs)):
                if i == 1:
                    raise exc_type("injected slice failure")
                yield part

        stream.family_parts = parts  # this worker process only (streamed_parts calls it), undone below
        try:
            return run_slice(context, row_groups)
        finally:
            stream.family_parts = original

    return failing


@pytest.mark.parametrize("pair", BACKENDS, indirect=True)
def test_a_failing_slice_fails_the_views_of_its_family_and_a_rerun_completes(pair, monkeypatch):
    from feast_bc.ray_engine import BCRayEngine

    rng = np.random.default_rng(4)
    fams = publish_users_and_items(pair.catalog, versions=2, seed=4)
    stores = pair.apply()
    for store in stores.values():
        store.materialize(START, _end())
    old = pair.rows("ray")
    for fam in fams.values():
        fam.publish_next(pair.catalog, rng)
    stores = pair.apply()
    stores["bc"].materialize(START, _end())
    clean = pair.rows("bc")

    intervals = _intervals(stores["ray"])
    with monkeypatch.context() as patch:
        failing = _failing_slice("item_embedding", 2, RuntimeError)
        patch.setattr(BCRayEngine, "slice_function", staticmethod(failing))
        with pytest.raises(RuntimeError, match="injected slice failure"):
            stores["ray"].materialize(START, _end())
    for name, count in _intervals(stores["ray"]).items():  # Feast records succeeded jobs only
        assert count == intervals[name] + (0 if name.startswith("item_") else 1), name

    partial = pair.rows("ray")
    assert set(partial) <= set(clean)
    states = {"old": 0, "new": 0}
    for key, want in clean.items():
        if partial.get(key) == want:
            states["new"] += 1
        else:  # as before the run (or absent, for the new view): never a mix within an entity
            assert partial.get(key) == old.get(key), key
            states["old"] += 1
    # The failed slice (row groups 2-3) stored at most its first batch (SQLite writes inline: exactly
    # that; the Redis writer's thread may not have sent it before the failure stopped it). The last
    # slice (row group 4) was skipped if it had not been submitted yet when the failure came back.
    views = 1 if pair.backend == "redis" else 3
    low = (2 * ROW_GROUP_ROWS - BATCH_ROWS) * views
    assert low <= states["old"] <= low + (BATCH_ROWS + ROW_GROUP_ROWS) * views, states
    if pair.backend == "sqlite":
        assert states["old"] in (low, low + ROW_GROUP_ROWS * views), states
    assert sum(states.values()) == len(clean)

    stores["ray"].materialize(START, _end())
    assert pair.rows("ray") == clean
    for name, count in _intervals(stores["ray"]).items():  # the rerun's intervals are recorded
        assert count == intervals[name] + (1 if name.startswith("item_") else 2), name
    assert_online_matches(stores["ray"], fams)


@pytest.mark.redis
@pytest.mark.parametrize("pair", ["redis"], indirect=True)
def test_a_transient_error_is_retried_by_ray_and_the_retry_is_idempotent(pair, tmp_path, monkeypatch):
    """A ConnectionError after a slice's first part: Ray runs the slice again, which rewrites the
    part already written (the timestamp rule skips it), and the result is BCEngine's."""
    from feast_bc.ray_engine import BCRayEngine

    fams = publish_users_and_items(pair.catalog, versions=3, seed=6)
    stores = pair.apply()
    marker = tmp_path / "failed-once"
    failing = _failing_slice("user_embedding", 0, ConnectionError, once_marker=str(marker))
    monkeypatch.setattr(BCRayEngine, "slice_function", staticmethod(failing))
    for store in stores.values():
        store.materialize(START, _end())
    assert marker.exists()
    assert pair.rows("ray") == pair.rows("bc") != {}
    assert set(_intervals(stores["ray"]).values()) == {1}
    assert_online_matches(stores["ray"], fams)


def test_a_tampered_artifact_fails_on_the_driver_before_any_slice(ray_session, small_row_groups, tmp_path, monkeypatch):
    pair = _pair(tmp_path, "sqlite")
    fams = publish_users_and_items(pair.catalog, versions=3, seed=3)
    store = pair.apply()["ray"]
    manifest = pair.catalog.manifest("item_embedding")
    path = pair.catalog.artifact_path("item_embedding", manifest.versions[1].transform)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    calls = tmp_path / "calls"
    calls.mkdir()
    _count_slices(monkeypatch, calls)

    with pytest.raises(Exception, match="fails its checksum"):
        store.materialize(START, _end())
    slices = [p.read_text() for p in calls.iterdir()]
    assert slices and all("user_embedding" in s for s in slices)  # no item slice was ever submitted
    rows = pair.rows("ray")
    assert rows and {key[0] for key in rows} == {f"user_embedding_bc{v}" for v in range(3)}
    intervals = _intervals(store)
    assert {v for n, v in intervals.items() if n.startswith("item_")} == {0}
    assert {v for n, v in intervals.items() if n.startswith("user_")} == {1}
    assert_online_matches(store, {"user_embedding": fams["user_embedding"]})


def test_a_slice_refuses_a_file_changed_after_the_driver_verified_it(small_row_groups, tmp_path):
    """The task-side gate, without Ray: a latest file whose size or mtime differs from what the
    driver verified is refused before anything is written."""
    import dataclasses

    from feast.infra.common.materialization_job import MaterializationTask

    from feast_bc.errors import ChecksumMismatchError
    from feast_bc.ray_engine import run_slice

    pair = _pair(tmp_path, "sqlite")
    publish_users_and_items(pair.catalog, versions=2, seed=2)
    store = pair.apply()["ray"]
    engine = store._get_provider().batch_engine
    view = store.registry.get_any_feature_view("item_embedding_bc0", pair.projects["ray"])
    task = MaterializationTask(project=pair.projects["ray"], feature_view=view, start_time=START, end_time=_end())
    from feast_bc.materialize import latest_file
    from feast_bc.ray_engine import slice_row_groups

    path = latest_file(store.config, view, store.registry, pair.projects["ray"])
    context, groups = engine._prepare([task], path, store.registry)
    slices = slice_row_groups(groups, 2, engine.config.row_groups_per_task)
    assert len(slices) == 3
    assert run_slice(context, slices[0]) == [2 * ROW_GROUP_ROWS]
    size, mtime = context.file_state
    stale = dataclasses.replace(context, file_state=(size, mtime - 1))
    with pytest.raises(ChecksumMismatchError, match="changed after the driver verified"):
        run_slice(stale, slices[1])
    assert len({key[1] for key in pair.rows("ray")}) == 2 * ROW_GROUP_ROWS  # the entities of the first slice only


def test_views_that_are_not_feast_bc_views_go_to_feasts_local_engine(tmp_path, monkeypatch):
    """Without Ray: a plain Feast view is handed to Feast's local engine, and Ray is not started."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.infra.common.materialization_job import MaterializationTask
    from feast.infra.compute_engines.local.compute import LocalComputeEngine
    from feast.types import Float32

    from feast_bc.ray_engine import BCRayEngine

    pair = _pair(tmp_path, "sqlite")
    publish_users_and_items(pair.catalog, versions=1, seed=1)
    store = pair.apply()["ray"]
    engine = store._get_provider().batch_engine
    seen = []
    monkeypatch.setattr(
        LocalComputeEngine, "_materialize_one", lambda self, registry, task, **kw: seen.append(task) or "local-job"
    )
    monkeypatch.setattr(BCRayEngine, "_ray", lambda self: pytest.fail("Ray started without a feast_bc view"))
    view = FeatureView(
        name="plain_view",
        entities=[Entity(name="thing", join_keys=["thing_id"], value_type=ValueType.INT64)],
        schema=[Field(name="score", dtype=Float32)],
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
    )
    task = MaterializationTask(project=pair.projects["ray"], feature_view=view, start_time=START, end_time=_end())
    assert engine.materialize(store.registry, [task]) == ["local-job"]
    assert seen == [task]


def test_slices_cover_every_row_group_once_about_four_per_worker():
    from feast_bc.ray_engine import SLICES_PER_WORKER, slice_row_groups

    for groups in (1, 3, 16, 17, 100):
        for workers in (1, 2, 8):
            for per_task in (None, 1, 3):
                slices = slice_row_groups(groups, workers, per_task)
                assert [g for s in slices for g in s] == list(range(groups))  # in order, each once
                if per_task is not None:
                    assert all(len(s) == per_task for s in slices[:-1])
                else:  # as many as SLICES_PER_WORKER per worker, as row groups allow
                    assert len(slices) <= SLICES_PER_WORKER * workers
                    assert len(slices) == groups or len(slices) > SLICES_PER_WORKER * workers // 2
    assert slice_row_groups(16, 1, None) == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15)]


def test_a_slice_stops_once_the_registry_serves_a_newer_latest(small_row_groups, tmp_path):
    """Case 3 of issue 22 on the Ray path, without Ray: slices prepared from the registry of version 1
    keep running while version 2 is only published (the registry still serves their file), and are
    refused once `feast apply` made the registry serve version 2's file -- a late slice never writes
    the older latest's values over the newer ones."""
    from feast.infra.common.materialization_job import MaterializationTask

    from feast_bc.errors import LatestSupersededError
    from feast_bc.materialize import latest_file
    from feast_bc.ray_engine import run_slice, slice_row_groups

    pair = _pair(tmp_path, "sqlite")
    fams = publish_users_and_items(pair.catalog, versions=2, seed=2)
    store = pair.apply()["ray"]
    project = pair.projects["ray"]
    engine = store._get_provider().batch_engine
    view = store.registry.get_any_feature_view("item_embedding_bc1", project)
    task = MaterializationTask(project=project, feature_view=view, start_time=START, end_time=_end())
    context, groups = engine._prepare([task], latest_file(store.config, view, store.registry, project), store.registry)
    slices = slice_row_groups(groups, 2, engine.config.row_groups_per_task)
    rng = np.random.default_rng(8)
    for fam in fams.values():
        fam.publish_next(pair.catalog, rng)
    assert run_slice(context, slices[0]) == [2 * ROW_GROUP_ROWS]  # published, not applied: still served
    pair.apply()
    with pytest.raises(LatestSupersededError, match="registry reads v0002"):
        run_slice(context, slices[1])


def test_a_worker_that_dies_on_every_retry_is_one_clear_error(ray_session, small_row_groups, tmp_path, monkeypatch):
    """Ray retries exhausted ended in a `WorkerCrashedError` traceback; now `WorkerLostError` names
    the views, what was kept and what to do, and a rerun with healthy workers completes."""
    from feast_bc.errors import WorkerLostError
    from feast_bc.ray_engine import BCRayEngine

    def dying_slice(context, row_groups):  # a closure: Ray ships it by value to the workers
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer or an operator would

    pair = _pair(tmp_path, "sqlite", max_retries=1)
    fams = publish_users_and_items(pair.catalog, versions=2, seed=3)
    store = pair.apply()["ray"]
    with monkeypatch.context() as patch:
        patch.setattr(BCRayEngine, "slice_function", staticmethod(dying_slice))
        with pytest.raises(WorkerLostError, match=r"died \(.*also on each of its 1 retries") as caught:
            store.materialize(START, _end())
    assert "run `feast materialize` again" in str(caught.value)
    store.materialize(START, _end())
    assert_online_matches(store, fams)


@pytest.mark.parametrize("pair", ["sqlite"], indirect=True)
def test_ray_slices_write_pushed_values_as_bcengine(pair):
    """Pushes recorded in the catalog (issue 25): the Ray slices skip the pushed entities' published
    rows and one slice writes the pushed ones -- the same bytes as BCEngine's single pass."""
    from feast_bc.pusher import push

    fams = publish_users_and_items(pair.catalog, versions=3, seed=5)
    fam = fams["item_embedding"]
    k = fam.latest
    ids = np.array([fam.ids[k][0], fam.ids[k][20], 10_001], dtype=np.int64)
    z = np.random.default_rng(5).normal(size=(3, fam.vectors[k].shape[1])).astype(np.float32)
    result = push(pair.repos["ray"], fam.name, ids, z, version=k)  # nothing applied yet: recorded only
    assert result.written == []
    fam.push(ids, z)
    stores = pair.apply()
    for store in stores.values():
        store.materialize(START, _end())
    assert pair.rows("ray") == pair.rows("bc") != {}
    assert_online_matches(stores["ray"], fams)
