"""Issue 24, deliverable 4: BCRayEngine on several Ray nodes of this machine -- a head and two worker
nodes, separate `ray start` processes, each worker in its own directory with its own feast_bc
cache -- materializing a family whose catalog is on S3: the workers read the latest file and the
transforms from object storage into their own mirrors, never from the repo; a worker node stopped
mid-way, then a rerun, leaves every entity with the new values."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import assert_online_matches, delete_project_keys, publish_users_and_items, redis_url, unique_project
from feast_bc import Catalog
from feast_bc.repo import apply, init_repo
from local_ray_nodes import LocalRayNodes
from local_s3 import client_env, new_bucket

pytestmark = pytest.mark.redis


# A `feast materialize` of the repo as its own process (a fresh Ray driver each run), every slice
# delayed by argv[2] seconds so that a node can be stopped while slices are in flight.
DRIVER = """
import sys
import time
from datetime import UTC, datetime, timedelta

from feast import FeatureStore

from feast_bc.ray_engine import BCRayEngine
from feast_bc.ray_worker import run_slice


DELAY = float(sys.argv[2])  # read here: the function runs on the workers, whose argv is their own


def slow_slice(context, row_groups):
    time.sleep(DELAY)
    return run_slice(context, row_groups)


BCRayEngine.slice_function = staticmethod(slow_slice)
FeatureStore(repo_path=sys.argv[1]).materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(minutes=5))

import ray.util.client

print("ray client mode:", ray.util.client.ray.is_connected())
"""


def _driver(tmp_path, repo, delay: float, env: dict) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen(
        [sys.executable, str(script), str(repo), str(delay)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


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


def _first_materialize(tmp_path, repo, env: dict) -> tuple[dict, str]:
    """Publish three versions of both families, apply, and materialize from a driver process; every
    pin == the numpy chain. Returns the families and the driver's output."""
    from feast import FeatureStore

    fams = publish_users_and_items(Catalog.for_repo(repo), versions=3)
    apply(repo)
    driver = _driver(tmp_path, repo, 0, env)
    out = driver.communicate(timeout=600)[0]
    assert driver.returncode == 0, out
    assert_online_matches(FeatureStore(repo_path=str(repo)), fams)
    return fams, out


def _mirrors_with_latest(repo, nodes: LocalRayNodes) -> list:
    """The worker nodes whose own feast_bc mirror holds the item family's latest file."""
    latest = Catalog.for_repo(repo).manifest("item_embedding").latest.embeddings.path
    return [d for d in nodes.node_dirs if list((d / "cache").glob(f"catalogs/*/item_embedding/{latest}"))]


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
    env = client_env(s3_endpoint)
    try:
        fams, _ = _first_materialize(tmp_path, repo, env)
        # every worker node pulled the latest file into its own mirror (the repo and the driver's
        # mirror are not where it read it from)
        assert len(_mirrors_with_latest(repo, nodes)) == 2, nodes.node_dirs

        # a new version; a worker node stopped while slices (2 s each, 10 on 2 one-CPU nodes) run
        rng = np.random.default_rng(7)
        for fam in fams.values():
            fam.publish_next(Catalog.for_repo(repo), rng)
        apply(repo)
        run = _driver(tmp_path, repo, 2.0, env)
        time.sleep(6.0)
        nodes.kill_node(0)
        deadline = time.monotonic() + 90
        while nodes.alive_nodes() != 2 and time.monotonic() < deadline:  # GCS marks the node dead
            time.sleep(1)
        assert nodes.alive_nodes() == 2  # the head and one worker node
        out = run.communicate(timeout=600)[0]
        print("the run during which a node stopped:", "completed" if run.returncode == 0 else out[-400:])
        rerun = _driver(tmp_path, repo, 0, env)  # on the remaining node
        out = rerun.communicate(timeout=600)[0]
        assert rerun.returncode == 0, out
        assert_online_matches(FeatureStore(repo_path=str(repo)), fams)
    finally:
        delete_project_keys(redis_url(), project)
        os.environ.pop("RAY_ADDRESS", None)


@pytest.mark.usefixtures("redis_available")
def test_a_ray_client_driver_materializes_through_ray_url(nodes, s3_endpoint, tmp_path):
    """``ray_address: ray://head:port``: the `feast materialize` process is a Ray *client* (it does
    not join the cluster: no raylet, no object store of its own), as a scheduled job container
    outside the cluster would be. The tasks run on the worker nodes, which read the catalog from
    object storage; every pin == the numpy chain."""

    uri = f"s3://{new_bucket(s3_endpoint)}/catalog"
    repo, project = _repo(tmp_path, nodes.client_address, uri)
    env = client_env(s3_endpoint)
    try:
        _, out = _first_materialize(tmp_path, repo, env)
        assert "ray client mode: True" in out, out[-400:]  # the driver was a client, not a cluster node
        assert _mirrors_with_latest(repo, nodes), "no worker node read the latest file from object storage"
    finally:
        delete_project_keys(redis_url(), project)
