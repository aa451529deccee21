"""Shared fixtures: real Redis (never mocked), unique Feast projects, synthetic families.

Redis: ``REDIS_URL`` if set, else redis://127.0.0.1:6379/0. When it is unreachable the Redis tests
are skipped locally but *fail* under ``CI=true`` -- a CI run must never pass by skipping them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every Ray the tests start (local ones, the multi-node cluster of test_ray_nodes.py) runs without
# token auth, driver and servers alike: Ray >= 2.5x otherwise lets a token file left in ~/.ray by an
# earlier Ray decide, and a GCS and its client that disagree fail with "Failed to start GCS".
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
VENV_BIN = Path(sys.executable).parent


def unique_project(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def redis_url() -> str:
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_available() -> str:
    url = redis_url()
    if not _reachable(url):
        msg = f"Redis is not reachable at {url} (set REDIS_URL or start redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " -- under CI=true this is a failure, not a skip")
        pytest.skip(msg)
    return url


def delete_project_keys(url: str, project: str) -> int:
    """Remove every Redis key of one Feast project (keys end with the project name)."""
    import redis

    client = redis.Redis.from_url(url)
    suffix = project.encode()
    doomed = [k for k in client.scan_iter(count=1000) if k.endswith(suffix)]
    if doomed:
        client.delete(*doomed)
    return len(doomed)


@pytest.fixture
def redis_project(redis_available):
    """A unique project name whose Redis keys are deleted afterwards."""
    project = unique_project("rd")
    yield project
    delete_project_keys(redis_available, project)


def run_cli(
    args: list[str], cwd: Path | None = None, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run a console script of this venv (feast, feast-bc) as a real subprocess."""
    exe = VENV_BIN / args[0]
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([str(exe), *args[1:]], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\nSTDOUT:\n{proc.stdout}\nSTDERR:\n{proc.stderr}"
        )
    return proc


def ask_on_read(catalog, family: str, version: int) -> None:
    """Rewrite ``family``'s manifest as an earlier feast_bc left it after `feast-bc serving --mode
    on-read` (which is refused now): ``version`` marked ``serving: on_read``, sealed as usual."""
    from feast_bc.atomic import atomic_write_bytes
    from feast_bc.manifest import MANIFEST_FILENAME, FamilyManifest

    m = catalog.manifest(family)
    versions = list(m.versions)
    versions[version] = versions[version].model_copy(update={"serving": "on_read"})
    updated = FamilyManifest(family=family, entity=m.entity, versions=versions)
    atomic_write_bytes(catalog.family_dir(family) / MANIFEST_FILENAME, updated.to_json_bytes())


# ----------------------------------------------------------------------------- synthetic data
@dataclass
class SyntheticFamily:
    """What was published for one family, so tests can compute expectations with plain numpy."""

    name: str
    entity: str
    join_key: str
    dims: list[int]
    ids: dict[int, np.ndarray] = field(default_factory=dict)  # version -> ids
    vectors: dict[int, np.ndarray] = field(default_factory=dict)  # version -> z_v
    transforms: dict[int, np.ndarray] = field(default_factory=dict)  # v -> B_v (d_{v-1} x d_v)

    @property
    def latest(self) -> int:
        return max(self.vectors)

    def expected(self, version: int, ids=None) -> np.ndarray:
        """The numpy B-chain of the latest embeddings (float64 reference)."""
        k = self.latest
        z = self.vectors[k].astype(np.float64)
        if ids is not None:
            index = {int(i): r for r, i in enumerate(self.ids[k])}
            z = z[[index[int(i)] for i in ids]]
        for v in range(k, version, -1):
            z = z @ self.transforms[v].astype(np.float64).T
        return z

    def push(self, ids, z) -> None:
        """Record a push into the latest version: changed ids take ``z`` in place, new ids follow."""
        k = self.latest
        index = {int(i): r for r, i in enumerate(self.ids[k])}
        vectors, extra_ids, extra = self.vectors[k].copy(), [], []
        for i, v in zip(ids, z, strict=True):
            if int(i) in index:
                vectors[index[int(i)]] = v
            else:
                extra_ids.append(int(i))
                extra.append(v)
        if extra:
            self.ids[k] = np.concatenate([self.ids[k], np.asarray(extra_ids, dtype=np.int64)])
            vectors = np.concatenate([vectors, np.asarray(extra, dtype=np.float32)])
        self.vectors[k] = vectors

    def publish_next(self, catalog, rng: np.random.Generator, n: int | None = None, dim: int | None = None):
        from feast_bc import EntitySpec

        v = 0 if not self.vectors else self.latest + 1
        dim = dim or self.dims[v]
        n = n or (len(self.ids[self.latest]) if self.vectors else 40)
        ids = np.arange(n, dtype=np.int64) * 7 + 3  # non-contiguous ids
        z = rng.normal(size=(n, dim)).astype(np.float32)
        b = None
        if v > 0:
            prev = self.vectors[self.latest].shape[1]
            b = (rng.normal(size=(prev, dim)) / np.sqrt(dim)).astype(np.float32)
        catalog.publish(
            self.name,
            ids=ids,
            vectors=z,
            transform=b,
            entity=EntitySpec(name=self.entity, join_key=self.join_key),
            metrics={"val_recall@50": 0.1 + 0.01 * v},
        )
        self.ids[v], self.vectors[v] = ids, z
        if b is not None:
            self.transforms[v] = b
        return v


def publish_users_and_items(catalog, versions: int = 3, seed: int = 0) -> dict[str, SyntheticFamily]:
    rng = np.random.default_rng(seed)
    fams = {
        "user_embedding": SyntheticFamily("user_embedding", "user", "user_id", [8, 12, 16, 20, 24]),
        "item_embedding": SyntheticFamily("item_embedding", "item", "item_id", [6, 10, 14, 18, 22]),
    }
    for _ in range(versions):
        for fam in fams.values():
            fam.publish_next(catalog, rng)
    return fams


def online_vectors(store, family: str, version: int, join_key: str, ids) -> list:
    resp = store.get_online_features(
        features=store.get_feature_service(f"{family}_v{version}"),
        entity_rows=[{join_key: int(i)} for i in ids],
    ).to_dict()
    assert set(resp) == {join_key, "embedding"}, resp.keys()
    return resp["embedding"]


def assert_online_matches(store, fams: dict[str, SyntheticFamily], atol: float = 1e-5) -> int:
    """Every version of every family, read through its pinned FeatureService, equals the numpy chain."""
    checked = 0
    for fam in fams.values():
        ids = fam.ids[fam.latest]
        for v in range(fam.latest + 1):
            got = online_vectors(store, fam.name, v, fam.join_key, ids)
            assert all(g is not None for g in got), f"{fam.name} v{v}: missing online values"
            got = np.asarray(got, dtype=np.float64)
            want = fam.expected(v)
            assert got.shape == (len(ids), fam.vectors[v].shape[1]), (fam.name, v, got.shape)
            np.testing.assert_allclose(got, want, atol=atol, rtol=0, err_msg=f"{fam.name} version {v}")
            checked += got.size
    return checked


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models gain nothing from a second thread; on a shared 2-core machine it only contends.
    (torch is imported here, not at the top, so tests without torch don't pay for it.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextmanager
def local_ray() -> Iterator:
    """A local 2-CPU Ray for one test module (never the cluster $RAY_ADDRESS names), shut down after.

    Skipped without ray, but a failure under CI=true: `make test` installs the ray extra."""
    try:
        import ray
    except ImportError as exc:
        msg = f"ray is not installed ({exc}); pip install -e '.[ray]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " -- under CI=true this is a failure, not a skip")
        pytest.skip(msg)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=256 * 1024**2,  # the test data is a few hundred KiB: nothing spills
        logging_level="ERROR",
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        import feast.infra.ray_initializer as ray_initializer

        ray_initializer._ray_initialized = False  # a later Ray user in this process starts afresh


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """``$FEAST_BC_TEST_S3_ENDPOINT`` (`.ci/run` starts one), else a moto server of this worker."""
    from local_s3 import ENDPOINT_ENV_VAR, LocalS3

    if os.environ.get(ENDPOINT_ENV_VAR):
        yield os.environ[ENDPOINT_ENV_VAR]
        return
    try:
        server = LocalS3(tmp_path_factory.mktemp("s3")).start()
    except (OSError, RuntimeError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no S3-compatible server: {exc} -- under CI=true this is a failure, not a skip")
        pytest.skip(f"no S3-compatible server: {exc}")
    yield server.endpoint
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL + pgvector server of this worker on a free loopback port (tests/local_postgres.py)."""
    from local_postgres import LocalPostgres

    try:
        server = LocalPostgres().start()
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"no PostgreSQL with pgvector: {exc} -- under CI=true this is a failure, not a skip")
        pytest.skip(f"no PostgreSQL with pgvector: {exc}")
    yield server
    server.stop()
