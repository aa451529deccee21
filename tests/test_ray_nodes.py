"""Issue 24, deliverable 4: BCRayEngine on several Ray nodes of this machine -- a head and two worker
nodes, separate `ray start` processes, each worker in its own directory with its own feast_bc
cache -- materializing a family whose catalog is on S3: the workers read the latest file and the
transforms from object storage into their own mirrors, never from the repo; a worker node stopped
mid-way, then a rerun, leaves every entity with the new values."""

from __future__ import annotations

import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conftest import assert_online_matches, delete_project_keys, publish_users_and_items, redis_url, unique_project
from feast_bc import Catalog
from feast_bc.repo import apply, init_repo
from local_ray_nodes import LocalRayNodes
from local_s3 import client_env, new_bucket

pytestmark = pytest.mark.redis


def _slow_slice(context, row_groups):
    """The real slice, two seconds late (shipped to the nodes by value)."""
    from feast_bc.ray_worker import run_slice

    time.sleep(2.0)
    return run_slice(context, row_groups)


@pytest.fixture
def nodes(s3_endpoint, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    import ray

    env = client_env(s3_endpoint)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FEAST_BC_CACHE_DIR", str(tmp_path / "driver-cache"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    if ray.is_initialized():
        ray.shutdown()
    cluster = LocalRayNodes(tmp_path / "ray", workers=2, env=env).start()
    try:
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


def _repo(tmp_path, address: str, uri: str):
    project = unique_project("nodes")
    repo = init_repo(tmp_path / "repo", project=project, online_store="redis", redis_url=redis_url(), catalog=uri)
    engine = "  type: feast_bc.engine.BCEngine\n  batch_rows: 65536\n"
    ray_block = (
        "  type: feast_bc.ray_engine.BCRayEngine\n  num_workers: 2\n  row_groups_per_task: 1\n  batch_rows: 16\n"
        f"  ray_address: {address}\n  ray_conf:\n    log_to_driver: false\n"
    )
    for yaml in repo.glob("feature_store*.yaml"):
        yaml.write_text(yaml.read_text().replace(engine, ray_block))
    return repo, project


@pytest.mark.usefixtures("redis_available")
def test_worker_nodes_read_the_catalog_from_object_storage_and_survive_a_node_stopped_midway(
    nodes,
    s3_endpoint,
    tmp_path,
    monkeypatch,
):
    from feast import FeatureStore

    import feast_bc.embeddings as embeddings

    monkeypatch.setattr(embeddings, "ROW_GROUP_ROWS", 8)  # 40 rows: 5 row groups, 5 slices per family
    uri = f"s3://{new_bucket(s3_endpoint)}/catalog"
    repo, project = _repo(tmp_path, nodes.address, uri)
    try:
        fams = publish_users_and_items(Catalog.for_repo(repo), versions=3)
        apply(repo)
        start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(minutes=5)
        FeatureStore(repo_path=str(repo)).materialize(start, end)
        assert_online_matches(FeatureStore(repo_path=str(repo)), fams)
        latest = Catalog.for_repo(repo).manifest("item_embedding").latest.embeddings.path
        mirrors = [d / "cache" for d in nodes.node_dirs]
        # every worker node pulled the latest file into its own mirror (the repo and the driver's
        # mirror are not where it read it from)
        assert all(list(m.glob(f"catalogs/*/item_embedding/{latest}")) for m in mirrors), mirrors

        # a new version; a worker node stopped while the materialization runs, then a rerun
        rng = np.random.default_rng(7)
        for fam in fams.values():
            fam.publish_next(Catalog.for_repo(repo), rng)
        apply(repo)
        errors: list[BaseException] = []

        def materialize():
            try:
                FeatureStore(repo_path=str(repo)).materialize(start, end)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        import ray.cloudpickle

        from feast_bc.ray_engine import BCRayEngine

        # slow slices (2 s each; 10 slices on 2 one-CPU nodes) so the node dies with slices in flight
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        real_slice = BCRayEngine.__dict__["slice_function"]
        monkeypatch.setattr(BCRayEngine, "slice_function", staticmethod(_slow_slice))
        run = threading.Thread(target=materialize)
        run.start()
        time.sleep(4.0)
        nodes.kill_node(nodes.node_not_serving_this_driver())
        deadline = time.monotonic() + 90
        while nodes.alive_nodes() != 2 and time.monotonic() < deadline:  # GCS marks the node dead
            time.sleep(1)
        assert nodes.alive_nodes() == 2  # the head and one worker node
        run.join(timeout=600)
        assert not run.is_alive()
        monkeypatch.setattr(BCRayEngine, "slice_function", real_slice)
        FeatureStore(repo_path=str(repo)).materialize(start, end)  # the rerun, on the remaining node
        assert_online_matches(FeatureStore(repo_path=str(repo)), fams)
        print("first run after the node stopped:", errors[0] if errors else "completed (Ray retried its slices)")
    finally:
        delete_project_keys(redis_url(), project)
        os.environ.pop("RAY_ADDRESS", None)
