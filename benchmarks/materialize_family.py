"""Family materialization: a 5-version family of N entities, fused vs per-view, one Redis vs a cluster, Ray.

Per dimension d (``--dims``) the script builds, in a temp dir, one feast_bc repo with ONE family
``item_embedding`` of ``--versions`` versions (default 5), all of dim d, published through the public
``Catalog`` API: the latest version holds ``--entities`` ids (default 1,000,000); the older versions
hold 16 rows each (materialization reads only the latest file, so their size does not matter); every
backward transform B_v is a random orthogonal d x d matrix (condition number 1). Every view is
therefore materialized for all N entities, and a run that materializes all views writes N x versions
"version-rows".

Configurations (``--configs``, default all; each timed run in its own subprocess):

* ``fused-redis`` / ``perview-redis``: ``BCEngine`` with ``fused: true`` / ``false`` into the Redis of
  ``--redis-url``; ONE ``store.materialize(start, end, feature_views=<all views>)`` call.
* ``fused-cluster`` / ``perview-cluster``: the same into a local 3-master Redis Cluster (no replicas,
  no persistence) that the script starts on free ports and stops by PID (``tests/local_redis.py``).
* ``ray1-redis`` / ``ray2-redis``: ``feast_bc.ray_engine.BCRayEngine`` (fused, local Ray with 1 / 2
  CPUs and workers) into Redis. Skipped, with a message, when ``feast_bc.ray_engine`` or ``ray`` is
  not importable. Ray is started and its workers warmed up (they import feast_bc) before the timer;
  that start-up is reported separately (``ray_start_s``).
* ``kflat-redis``: "cost flat in k": fused ``BCEngine`` into Redis materializing only the latest view
  (k = 0), only one older view (k = 1), only the oldest (k = versions - 1), and all views (reused
  from ``fused-redis`` when that ran for the same d).
* ``rewrite-redis`` / ``rewrite-cluster``: the steady state of a family that publishes a new version:
  an untimed fused run writes the family, every hash's ``_ts:<view>`` fields are then stamped
  2001-01-01 (as if an earlier version had written them), and the timed fused run finds every hash
  (the key probe sees them: one HMGET per entity) and replaces every view's value in place --
  Redis reuses the memory of the values it replaces instead of taking fresh pages from the OS.

Every other run starts from an empty project: the project's keys are deleted before and after each
configuration (the number deleted after a run must equal N; a different count is flagged), and
Redis hands the freed memory back to the OS (``MEMORY PURGE``), so each such run pays Redis's first
touch of ~7 KB (d=256) / ~14 KB (d=512) of fresh memory per entity: page faults that are most of
Redis's system CPU. Before the first timed run on each Redis target, one untimed fused run warms
the OS page cache of the latest file and Redis's connections (``--no-warmup`` skips it).

What each figure means (one row per configuration and d; JSON: ``runs``):

* ``wall_s``: wall time of the one ``store.materialize`` call in the worker (apply, imports and Ray's
  start-up excluded).
* ``version_rows_per_s`` = N x (views materialized) / ``wall_s``. Targets (issue 14): 5 versions of
  1M x 256 at >= 300,000; 1M x 512 at >= 150,000; Ray with one worker >= 0.8 x ``fused-redis``.
* ``peak_rss_mib``: the worker's VmHWM during ``materialize`` (reset after ``apply``); for Ray also
  ``ray_processes_peak_rss_mib`` (VmHWM of every process Ray started -- raylet, workers, GCS --
  reset before the timer) and ``total_peak_rss_mib`` = driver + those.
* ``redis_cpu_s``: ``used_cpu_sys + used_cpu_user`` (INFO cpu) after minus before ``materialize``,
  summed over the nodes; ``redis_cpu_s_per_node`` gives each.
* ``redis_bytes_per_entity``: ``used_memory`` after minus before, summed over the nodes, / N.
* ``redis_cpu_us_per_version_row`` = ``redis_cpu_s`` / (N x views) in microseconds: one Redis node
  (one core, single-threaded) cannot ingest more than 1e6 / this many version-rows/s.
* ``client_cpu_s``: user + system CPU of the worker process (all threads) during ``materialize``,
  plus, for Ray, of every process Ray runs; ``client_cpu_us_per_version_row`` the same per
  version-row (1e6 / it = version-rows/s one fully used client core could produce).
* ``loadavg_before`` / ``loadavg_after``: ``os.getloadavg()`` around each configuration (other
  jobs on the machine distort every figure above; run this alone).
* ``content``: 100 entity keys sampled after the first all-views run of each d; after every later
  all-views run their ``HGETALL`` must be byte-identical ("match"), else "MISMATCH" is printed
  loudly and the script exits with status 1.

Commands (run alone on the machine; the 1M x 512 family needs ~13 GiB of Redis memory at a time,
predicted by ``load_redis.predicted_bytes_per_entity``: the script refuses to start a d whose
prediction exceeds 70% of MemAvailable unless ``--force``). Estimated duration on the 2-core machine
at 1M entities, all configurations: ~10-12 min for d=256 and ~15-20 min for d=512 (mostly the
materializations themselves, plus per run ~5-10 s of apply and ~10-20 s deleting 1M keys):

    # the measurement (issue 14, deliverable 4)
    python benchmarks/materialize_family.py --dims 256,512 \\
        --out docs/benchmarks/materialize_family.json --plot docs/benchmarks/materialize_family.png
    # one part only, e.g. the Ray runs at d=256 (then merge the JSONs by hand, or use another --out)
    python benchmarks/materialize_family.py --dims 256 --configs fused-redis,ray1-redis,ray2-redis --out /tmp/ray.json
    # smoke test
    nice -n 19 python benchmarks/materialize_family.py --entities 20000 --dims 16 \\
        --configs fused-redis,perview-redis,fused-cluster --out /tmp/mf.json --plot /tmp/mf.png
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
from common import machine, peak_rss_mib, reset_peak_rss, rss_mib, write_json  # noqa: E402
from load_redis import predicted_bytes_per_entity  # noqa: E402

from local_redis import LocalRedisCluster  # noqa: E402

FAMILY = "item_embedding"
OLDER_ROWS = 16
SAMPLE_KEYS = 100
TARGETS = {256: 300_000, 512: 150_000}  # version-rows/s for a 5-version family of 1M entities
RAY_TARGET_RATIO = 0.8  # Ray with one worker vs the single-process engine

CONFIGS = {
    "fused-redis": {"target": "redis", "engine": "bc", "fused": True},
    "perview-redis": {"target": "redis", "engine": "bc", "fused": False},
    "fused-cluster": {"target": "cluster", "engine": "bc", "fused": True},
    "perview-cluster": {"target": "cluster", "engine": "bc", "fused": False},
    "ray1-redis": {"target": "redis", "engine": "ray", "fused": True, "workers": 1},
    "ray2-redis": {"target": "redis", "engine": "ray", "fused": True, "workers": 2},
    "kflat-redis": {"target": "redis", "engine": "bc", "fused": True},
    "rewrite-redis": {"target": "redis", "engine": "bc", "fused": True, "rewrite": True},
    "rewrite-cluster": {"target": "cluster", "engine": "bc", "fused": True, "rewrite": True},
}

YAML = """project: {project}
provider: local
registry:
  path: data/registry_{name}.db
  cache_ttl_seconds: 60
online_store:
  type: redis
{online}offline_store:
  type: file
batch_engine:
{engine}entity_key_serialization_version: 3
"""


def view_name(version: int) -> str:
    return f"{FAMILY}_bc{version}"


# ----------------------------------------------------------------------------- /proc helpers
def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process so far (all its threads), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


_FINISHED_THREADS: dict[str, list[float]] = {}


def _stat_cpu(path: Path) -> tuple[float, float]:
    fields = path.read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def track_python_threads() -> None:
    """Make every Python thread add its CPU to ``_FINISHED_THREADS`` under its name when it ends
    (its /proc entry goes with it)."""
    import threading

    original = threading.Thread.run

    def run(self):
        try:
            original(self)
        finally:
            user, system = _stat_cpu(Path("/proc/thread-self/stat"))
            acc = _FINISHED_THREADS.setdefault(self.name, [0.0, 0.0])
            acc[0] += user
            acc[1] += system

    threading.Thread.run = run


def thread_cpu() -> dict[str, list[float]]:
    """This process's CPU so far by thread: {name: [user s, system s]} -- Python threads by their
    name (ended ones included, see :func:`track_python_threads`), the main thread as "main", threads
    Python did not start (BLAS, Arrow) together as "native".

    Why: the client's CPU splits into the main thread (parquet read, matmul), BLAS's threads and the
    writer thread (RESP payloads, socket sends -- on loopback a send's system time includes the
    kernel delivering it to Redis's socket); this says where a change must cut.
    """
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {name: list(us) for name, us in _FINISHED_THREADS.items()}
    for task in Path("/proc/self/task").iterdir():
        try:
            user, system = _stat_cpu(task / "stat")
        except OSError:
            continue
        tid = int(task.name)
        name = "main" if tid == os.getpid() else names.get(tid, "native")
        acc = out.setdefault(name, [0.0, 0.0])
        acc[0] += user
        acc[1] += system
    return out


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Ray's raylet, GCS and workers are children of the driver)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def process_name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        return " ".join(c.decode(errors="replace") for c in cmd[:2])[:80]
    except OSError:
        return "?"


# ----------------------------------------------------------------------------- Redis targets
class Target:
    """Where a configuration writes: the Redis of --redis-url, or the local cluster."""

    def __init__(self, name: str, node_urls: list[str], online_block: str, cluster: bool):
        self.name, self.node_urls, self.online_block, self.cluster = name, node_urls, online_block, cluster

    def node_clients(self):
        import redis

        return [redis.Redis.from_url(u) for u in self.node_urls]

    def key_client(self):
        """A client that finds any key (cluster: redirected to the master of its slot)."""
        import redis
        from redis.cluster import RedisCluster

        if self.cluster:
            first = self.node_clients()[0].connection_pool.connection_kwargs
            return RedisCluster(host=first["host"], port=first["port"])
        return redis.Redis.from_url(self.node_urls[0])

    def delete_project(self, project: str) -> int:
        """Delete every key of ``project`` on every node (one UNLINK per key: no cross-slot commands)."""
        suffix, deleted = project.encode(), 0
        for client in self.node_clients():
            pipe = client.pipeline(transaction=False)
            pending = 0
            for key in client.scan_iter(count=5000):
                if key.endswith(suffix):
                    pipe.unlink(key)
                    pending += 1
                    if pending >= 5000:
                        deleted += sum(pipe.execute())
                        pending = 0
            if pending:
                deleted += sum(pipe.execute())
            try:  # hand the freed pages back now, so the next target (or the cluster) finds the memory free
                client.execute_command("MEMORY", "PURGE")
            except Exception:  # not jemalloc, or the command is disabled
                pass
        return deleted

    def age_timestamps(self, project: str, views: list[str]) -> int:
        """Stamp every view's ``_ts:<view>`` field of every hash of ``project`` with 2001-01-01, as if
        an earlier version had written them; return the hashes changed (one pipelined HSET each, on
        the node that holds the key)."""
        from feast_bc.online_writers.encoding import timestamp_bytes

        older = timestamp_bytes(datetime(2001, 1, 1, tzinfo=UTC))
        mapping = {f"_ts:{v}": older for v in views}
        suffix, changed = project.encode(), 0
        for client in self.node_clients():
            pipe = client.pipeline(transaction=False)
            for key in client.scan_iter(count=5000):
                if key.endswith(suffix):
                    pipe.hset(key, mapping=mapping)
                    changed += 1
                    if len(pipe) >= 5000:
                        pipe.execute()
            pipe.execute()
        return changed

    def sample_keys(self, project: str, n: int) -> list[bytes]:
        suffix, keys = project.encode(), []
        per_node = -(-n // len(self.node_urls))
        for client in self.node_clients():
            taken = 0
            for key in client.scan_iter(count=1000):
                if key.endswith(suffix):
                    keys.append(key)
                    taken += 1
                    if taken >= per_node:
                        break
        return keys[:n]

    def fetch(self, keys: list[bytes]) -> dict[bytes, dict]:
        client = self.key_client()
        return {k: dict(sorted(client.hgetall(k).items())) for k in keys}

    def settings(self) -> list[dict]:
        out = []
        for url, c in zip(self.node_urls, self.node_clients(), strict=True):
            info = c.info("server")
            out.append(
                {
                    "node": url,
                    "redis_version": info.get("redis_version"),
                    "appendonly": c.config_get("appendonly").get("appendonly"),
                    "save": c.config_get("save").get("save"),
                    "maxmemory": c.config_get("maxmemory").get("maxmemory"),
                }
            )
        return out


def redis_counters(node_urls: list[str]) -> list[dict]:
    import redis

    out = []
    for url in node_urls:
        c = redis.Redis.from_url(url)
        cpu, mem = c.info("cpu"), c.info("memory")
        out.append(
            {
                "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
                "used_memory": int(mem["used_memory"]),
                "used_memory_rss": int(mem["used_memory_rss"]),
            }
        )
    return out


# ----------------------------------------------------------------------------- the worker
def worker(args) -> None:
    """Apply the repo with one yaml, materialize the given views in ONE call, print JSON."""
    from feast_bc.repo import apply

    track_python_threads()
    repo = Path(args.repo)
    t = time.perf_counter()
    store = apply(repo, fs_yaml_file=repo / args.yaml)
    apply_s = time.perf_counter() - t
    node_urls = args.node_urls.split(",")
    views = args.views.split(",")
    extra: dict = {"apply_s": apply_s}

    ray_pids: list[int] = []
    if args.ray_workers:
        import ray

        t = time.perf_counter()
        ray.init(
            address="local",
            num_cpus=args.ray_workers,
            include_dashboard=False,
            object_store_memory=args.ray_object_store_mib * 2**20,
        )

        @ray.remote(num_cpus=1)
        def warm() -> int:
            import feast_bc.engine  # noqa: F401 - what every slice task imports first

            time.sleep(0.5)  # hold the CPU so the next warm-up task starts another worker
            return os.getpid()

        warm_pids = set(ray.get([warm.remote() for _ in range(args.ray_workers)]))
        extra.update(ray_start_s=time.perf_counter() - t, ray_warm_worker_pids=len(warm_pids))
        ray_pids = descendants(os.getpid())
        for pid in ray_pids:
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    before = redis_counters(node_urls)
    cpu_before = {pid: cpu_s(pid) for pid in [os.getpid(), *ray_pids]}
    rss_before = rss_mib()
    threads_before = thread_cpu()
    reset_peak_rss()
    t = time.perf_counter()
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5), feature_views=views)
    seconds = time.perf_counter() - t
    peak = peak_rss_mib()
    after = redis_counters(node_urls)
    threads = {
        name: [round(u - threads_before.get(name, [0, 0])[0], 2), round(s - threads_before.get(name, [0, 0])[1], 2)]
        for name, (u, s) in thread_cpu().items()
    }
    extra["client_thread_cpu_s"] = {name: us for name, us in threads.items() if us[0] + us[1] > 0}
    client_cpu = cpu_s(os.getpid()) - cpu_before[os.getpid()]
    if args.ray_workers:  # Ray processes started during the run count from 0
        client_cpu += sum(cpu_s(pid) - cpu_before.get(pid, 0.0) for pid in descendants(os.getpid()))

    if args.ray_workers:
        procs = []
        for pid in sorted(set(ray_pids) | set(descendants(os.getpid()))):
            hwm = _status_kib(pid, "VmHWM")
            if hwm is not None:
                procs.append({"pid": pid, "name": process_name(pid), "peak_rss_mib": hwm / 1024})
        ray_total = sum(p["peak_rss_mib"] for p in procs)
        extra.update(
            ray_processes=procs,
            ray_processes_peak_rss_mib=ray_total,
            total_peak_rss_mib=peak + ray_total,
        )
        import ray

        ray.shutdown()

    cpu = [a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True)]
    mem = [a["used_memory"] - b["used_memory"] for a, b in zip(after, before, strict=True)]
    print(
        json.dumps(
            {
                "wall_s": seconds,
                "peak_rss_mib": peak,
                "rss_before_mib": rss_before,
                "materialize_added_mib": peak - rss_before,
                "client_cpu_s": client_cpu,
                "redis_cpu_s": sum(cpu),
                "redis_cpu_s_per_node": cpu,
                "redis_used_memory_delta": sum(mem),
                "redis_used_memory_delta_per_node": mem,
                "redis_used_memory_after": [a["used_memory"] for a in after],
                "redis_used_memory_rss_after": [a["used_memory_rss"] for a in after],
                **extra,
            }
        )
    )


# ----------------------------------------------------------------------------- the parent
def publish_family(repo: Path, entities: int, versions: int, dim: int) -> float:
    """Publish versions 0..versions-1 of dim ``dim`` (latest: ``entities`` rows); return seconds."""
    from feast_bc import Catalog, EntitySpec

    cat = Catalog.for_repo(repo)
    rng = np.random.default_rng(dim)
    spec = EntitySpec(name="item", join_key="item_id")
    t = time.perf_counter()
    for v in range(versions):
        rows = entities if v == versions - 1 else OLDER_ROWS
        vectors = np.empty((rows, dim), dtype=np.float32)
        for s in range(0, rows, 65536):  # in chunks: no float64 copy of the whole table
            vectors[s : s + 65536] = rng.standard_normal((min(65536, rows - s), dim), dtype=np.float32)
        b = None
        if v > 0:  # a random orthogonal B_v (d x d): perfectly conditioned, keeps the scale of the vectors
            q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
            b = (q * np.sign(np.diag(r))).astype(np.float32)
        cat.publish(FAMILY, ids=np.arange(rows, dtype=np.int64), vectors=vectors, transform=b, entity=spec)
        del vectors
    return time.perf_counter() - t


def engine_block(
    cfg: dict, batch_rows: int, ray_object_store_mib: int, blas_threads: str = "1", transform_threads: int = 2
) -> str:
    fused = "true" if cfg["fused"] else "false"
    blas = f"  blas_threads: {blas_threads}\n  transform_threads: {transform_threads}\n"
    if cfg["engine"] == "ray":
        n = cfg["workers"]
        return (
            "  type: feast_bc.ray_engine.BCRayEngine\n"
            f"  num_workers: {n}\n"
            f"  batch_rows: {batch_rows}\n"
            f"  fused: {fused}\n"
            f"  ray_conf: {{num_cpus: {n}, object_store_memory: {ray_object_store_mib * 2**20}}}\n" + blas
        )
    return f"  type: feast_bc.engine.BCEngine\n  batch_rows: {batch_rows}\n  fused: {fused}\n" + blas


def ray_available() -> str | None:
    """None if the Ray engine can run, else why not."""
    import feast_bc

    try:
        spec = importlib.util.find_spec("feast_bc.ray_engine")
    except ImportError as exc:
        return f"feast_bc.ray_engine is not importable: {exc}"
    if spec is None:
        return "feast_bc.ray_engine is not importable (the Ray engine is not on this branch / PYTHONPATH)"
    here = Path(feast_bc.__file__).resolve().parent
    if spec.origin is None or Path(spec.origin).resolve().parent != here:
        # an editable install of another checkout can serve a submodule this checkout lacks
        return f"feast_bc.ray_engine resolves to {spec.origin}, outside the feast_bc in use ({here})"
    if importlib.util.find_spec("ray") is None:
        return "ray is not installed (pip install 'feast-bc[ray]')"
    return None


def run_worker(repo: Path, yaml_name: str, views: list[str], target: Target, cfg: dict, args) -> dict:
    import feast_bc

    env = dict(os.environ)
    pkg_root = str(Path(feast_bc.__file__).resolve().parents[1])  # the same feast_bc in the worker (and Ray)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, *filter(None, [env.get("PYTHONPATH")])])
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--repo",
        str(repo),
        "--yaml",
        yaml_name,
        "--views",
        ",".join(views),
        "--node-urls",
        ",".join(target.node_urls),
        "--ray-workers",
        str(cfg.get("workers", 0) if cfg["engine"] == "ray" else 0),
        "--ray-object-store-mib",
        str(args.ray_object_store_mib),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({' '.join(cmd)}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_memory(entities: int, versions: int, dim: int, project: str, force: bool) -> int:
    """Predicted Redis bytes per entity for all versions (load_redis's layout model); refuse if it cannot fit."""
    per_entity = predicted_bytes_per_entity([dim] * versions, project)
    predicted = per_entity * entities
    available = None
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    if available is not None and predicted > 0.7 * available:
        msg = (
            f"d={dim}: the family needs ~{predicted / 2**30:.1f} GiB of Redis memory (layout prediction), "
            f"over 70% of the {available / 2**30:.1f} GiB available"
        )
        if not force:
            raise SystemExit(msg + "; free memory or pass --force")
        print("WARNING: " + msg, flush=True)
    return per_entity


def print_table(runs: list[dict]) -> None:
    head = (
        f"{'config':26} {'d':>4} {'views':>5} {'wall s':>7} {'vrows/s':>10} {'target':>8} "
        f"{'peak MiB':>8} {'+Ray MiB':>8} {'client CPU s':>12} {'Redis CPU s':>11} {'B/entity':>9} {'load':>9} content"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in runs:
        target = r.get("target_version_rows_per_s")
        ray_mib = r.get("ray_processes_peak_rss_mib")
        label = r["config"] + (" " + r["subset"].split()[0] if "subset" in r else "")
        print(
            f"{label:26} {r['dim']:>4} {len(r['views']):>5} {r['wall_s']:>7.2f} "
            f"{r['version_rows_per_s']:>10,.0f} {f'{target:,}' if target else '-':>8} "
            f"{r['peak_rss_mib']:>8.0f} {f'{ray_mib:.0f}' if ray_mib else '-':>8} {r['client_cpu_s']:>12.2f} {r['redis_cpu_s']:>11.2f} "
            f"{r['redis_bytes_per_entity']:>9,.0f} {r['loadavg_before'][0]:>4.1f}/{r['loadavg_after'][0]:<4.1f} "
            f"{r['content']}"
        )


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    main = [r for r in runs if not r["config"].startswith("kflat")]
    kflat = [r for r in runs if r["config"].startswith("kflat")]
    dims = sorted({r["dim"] for r in runs})
    fig, axes = plt.subplots(1, 2 if kflat else 1, figsize=(14 if kflat else 9, 5), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    width = 0.8 / max(1, len(dims))

    ax = axes[0][0]
    configs = list(dict.fromkeys(r["config"] for r in main))
    for i, d in enumerate(dims):
        values = [
            next((r["version_rows_per_s"] for r in main if r["config"] == c and r["dim"] == d), 0) for c in configs
        ]
        xs = [j + (i - (len(dims) - 1) / 2) * width for j in range(len(configs))]
        ax.bar(xs, values, width, label=f"d={d}", color=colors[i % len(colors)])
        if d in TARGETS:
            ax.axhline(TARGETS[d], color=colors[i % len(colors)], linestyle="--", label=f"target d={d}")
    ax.set_xticks(range(len(configs)), configs, rotation=20)
    ax.set_ylabel("version-rows/s (N x views / wall)")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    n = runs[0]["entities"]
    ax.set_title(f"{runs[0]['versions']}-version family, {n:,} entities")
    ax.legend(fontsize=8)

    if kflat:
        ax = axes[0][1]
        labels = list(dict.fromkeys(r["subset"] for r in kflat))
        for i, d in enumerate(dims):
            values = [
                next((r["version_rows_per_s"] for r in kflat if r["subset"] == s and r["dim"] == d), 0) for s in labels
            ]
            xs = [j + (i - (len(dims) - 1) / 2) * width for j in range(len(labels))]
            ax.bar(xs, values, width, label=f"d={d}", color=colors[i % len(colors)])
        ax.set_xticks(range(len(labels)), labels, rotation=20)
        ax.set_ylabel("version-rows/s")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_title("cost flat in k (fused, Redis)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--repo", help=argparse.SUPPRESS)
    p.add_argument("--yaml", help=argparse.SUPPRESS)
    p.add_argument("--views", help=argparse.SUPPRESS)
    p.add_argument("--node-urls", help=argparse.SUPPRESS)
    p.add_argument("--ray-workers", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--entities", type=int, default=1_000_000)
    p.add_argument("--versions", type=int, default=5)
    p.add_argument("--dims", default="256,512", help="comma-separated, e.g. 256,512")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--batch-rows", type=int, default=65_536)
    p.add_argument("--blas-threads", default="1", help="the engines' blas_threads (a number, or null: BLAS's default)")
    p.add_argument("--transform-threads", type=int, default=2, help="the engines' transform_threads")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--ray-object-store-mib", type=int, default=256)
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed run before each target's first")
    p.add_argument("--force", action="store_true", help="run even if Redis may not fit in memory")
    p.add_argument("--workdir", type=Path, default=None, help="keep the repos here (default: a temp dir, removed)")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/materialize_family.json"))
    p.add_argument("--plot", type=Path, default=Path("docs/benchmarks/materialize_family.png"))
    args = p.parse_args()
    if args.worker:
        return worker(args)

    from feast_bc.repo import init_repo, redis_url_to_connection_string

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {list(CONFIGS)}")
    if args.versions < 2:
        p.error("--versions must be at least 2")
    dims = [int(d) for d in args.dims.split(",")]
    no_ray = ray_available()
    skipped = {}
    if no_ray:
        for c in [c for c in configs if CONFIGS[c]["engine"] == "ray"]:
            print(f"SKIPPED {c}: {no_ray}", flush=True)
            skipped[c] = no_ray
            configs.remove(c)

    project = f"bench_family_{uuid.uuid4().hex[:8]}"
    all_views = [view_name(v) for v in range(args.versions - 1, -1, -1)]  # latest first
    results = {
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items() if k not in ("worker", "repo", "yaml", "views")},
        "project": project,
        "targets_version_rows_per_s": TARGETS,
        "ray_target_ratio_vs_fused_redis": RAY_TARGET_RATIO,
        "skipped": skipped,
        "runs": [],
    }
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bc-family-"))
    root.mkdir(parents=True, exist_ok=True)
    cluster = None
    mismatches = []
    targets: dict[str, Target] = {}
    try:
        if any(CONFIGS[c]["target"] == "redis" for c in configs):
            conn = redis_url_to_connection_string(args.redis_url)
            targets["redis"] = Target("redis", [args.redis_url], f'  connection_string: "{conn}"\n', False)
        if any(CONFIGS[c]["target"] == "cluster" for c in configs):
            missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
            if missing:
                raise SystemExit(f"{' and '.join(missing)} not found: the cluster configurations need them")
            (root / "cluster").mkdir(exist_ok=True)
            t = time.perf_counter()
            cluster = LocalRedisCluster(root / "cluster").start()
            print(f"started a 3-master Redis Cluster on ports {cluster.ports} in {time.perf_counter() - t:.1f}s")
            targets["cluster"] = Target(
                "cluster",
                [f"redis://127.0.0.1:{port}/0" for port in cluster.ports],
                f'  redis_type: redis_cluster\n  connection_string: "{cluster.connection_string}"\n',
                True,
            )
        results["redis_targets"] = {name: t.settings() for name, t in targets.items()}

        for dim in dims:
            predicted = check_memory(args.entities, args.versions, dim, project, args.force)
            repo = init_repo(root / f"repo_d{dim}", project=project)
            seconds = publish_family(repo, args.entities, args.versions, dim)
            print(
                f"d={dim}: published {args.versions} versions ({args.entities:,} entities) in {seconds:.1f}s",
                flush=True,
            )

            def yaml_for(name: str, cfg: dict, repo=repo) -> str:
                text = YAML.format(
                    project=project,
                    name=name,
                    online=targets[cfg["target"]].online_block,
                    engine=engine_block(
                        cfg, args.batch_rows, args.ray_object_store_mib, args.blas_threads, args.transform_threads
                    ),
                )
                (repo / f"feature_store.{name}.yaml").write_text(text)
                return f"feature_store.{name}.yaml"

            for target in targets.values():
                target.delete_project(project)
            warmed: set[str] = set()
            reference: dict[bytes, dict] | None = None
            sample_source = None
            for name in configs:
                cfg = CONFIGS[name]
                target = targets[cfg["target"]]
                if not args.no_warmup and target.name not in warmed:
                    t = time.perf_counter()
                    warm_cfg = {"target": target.name, "engine": "bc", "fused": True}
                    run_worker(repo, yaml_for(f"warmup-{target.name}", warm_cfg), all_views, target, warm_cfg, args)
                    target.delete_project(project)
                    warmed.add(target.name)
                    print(f"  d={dim} warm-up on {target.name}: {time.perf_counter() - t:.1f}s (untimed)", flush=True)

                subsets = [("all", all_views)]
                if name == "kflat-redis":
                    older = [(f"k=1 ({view_name(args.versions - 2)})", [view_name(args.versions - 2)])]
                    if args.versions > 2:
                        older.append((f"k={args.versions - 1} ({view_name(0)})", [view_name(0)]))
                    subsets = [(f"k=0 ({view_name(args.versions - 1)})", [view_name(args.versions - 1)]), *older]
                    prev = next((r for r in results["runs"] if r["config"] == "fused-redis" and r["dim"] == dim), None)
                    if prev is None:
                        subsets.append(("all", all_views))
                    else:
                        results["runs"].append(
                            {
                                **prev,
                                "config": "kflat-redis",
                                "subset": f"all {args.versions}",
                                "reused_from": "fused-redis",
                            }
                        )
                        print(f"  d={dim} kflat-redis all {args.versions}: reused fused-redis", flush=True)

                for subset, views in subsets:
                    yaml_name = yaml_for(name, cfg)
                    if cfg.get("rewrite"):  # the hashes exist, stamped older: what the next version finds
                        t = time.perf_counter()
                        run_worker(repo, yaml_name, views, target, cfg, args)
                        aged = target.age_timestamps(project, views)
                        print(
                            f"  d={dim} {name}: wrote the family and aged {aged:,} hashes in "
                            f"{time.perf_counter() - t:.1f}s (untimed)",
                            flush=True,
                        )
                    load_before = os.getloadavg()
                    out = run_worker(repo, yaml_name, views, target, cfg, args)
                    load_after = os.getloadavg()
                    content = "not checked (subset of views)"
                    if views == all_views:
                        if reference is None:
                            keys = target.sample_keys(project, SAMPLE_KEYS)
                            reference, sample_source = target.fetch(keys), name
                            fields = {len(f) for f in reference.values()}
                            content = f"reference ({len(keys)} keys, {'/'.join(map(str, sorted(fields)))} fields each)"
                            if len(keys) < min(SAMPLE_KEYS, args.entities) or fields != {2 * args.versions}:
                                # one embedding and one _ts field per view in every entity's hash
                                mismatches.append((name, dim, "reference sample incomplete"))
                                print(
                                    f"!!!!! {name} d={dim}: the reference sample is incomplete: {content}", flush=True
                                )
                        else:
                            got = target.fetch(list(reference))
                            bad = [k for k in reference if got.get(k) != reference[k]]
                            content = "match" if not bad else f"MISMATCH ({len(bad)}/{len(reference)} keys)"
                            if bad:
                                mismatches.append((name, dim, len(bad)))
                                print(
                                    f"!!!!! MISMATCH: {name} d={dim}: {len(bad)} of {len(reference)} sampled keys differ "
                                    f"from {sample_source} (e.g. {bad[0]!r}) !!!!!",
                                    flush=True,
                                )
                    deleted = target.delete_project(project)
                    if deleted != args.entities:
                        print(
                            f"!!!!! {name} d={dim}: {deleted:,} keys of the project, expected {args.entities:,}",
                            flush=True,
                        )
                    label = subset if name == "kflat-redis" else None
                    if label == "all":
                        label = f"all {args.versions}"
                    row = {
                        "config": name,
                        **({"subset": label} if label else {}),
                        "target": target.name,
                        "engine": "BCRayEngine" if cfg["engine"] == "ray" else "BCEngine",
                        "fused": cfg["fused"],
                        "ray_workers": cfg.get("workers"),
                        "dim": dim,
                        "entities": args.entities,
                        "versions": args.versions,
                        "views": views,
                        "batch_rows": args.batch_rows,
                        **out,
                        "version_rows_per_s": args.entities * len(views) / out["wall_s"],
                        "redis_bytes_per_entity": out["redis_used_memory_delta"] / args.entities,
                        "redis_cpu_us_per_version_row": out["redis_cpu_s"] / (args.entities * len(views)) * 1e6,
                        "client_cpu_us_per_version_row": out["client_cpu_s"] / (args.entities * len(views)) * 1e6,
                        "redis_bytes_per_entity_predicted": predicted if len(views) == args.versions else None,
                        "target_version_rows_per_s": TARGETS.get(dim) if len(views) == args.versions else None,
                        "keys_deleted_after": deleted,
                        "loadavg_before": load_before,
                        "loadavg_after": load_after,
                        "content": content,
                    }
                    results["runs"].append(row)
                    extra = ""
                    if "total_peak_rss_mib" in row:
                        extra = f" (+ Ray processes {row['ray_processes_peak_rss_mib']:.0f} MiB)"
                    print(
                        f"  d={dim} {name}{f' [{label}]' if label else ''}: {row['version_rows_per_s']:,.0f} version-rows/s "
                        f"({out['wall_s']:.2f}s), peak RSS {out['peak_rss_mib']:.0f} MiB{extra}, "
                        f"Redis CPU {out['redis_cpu_s']:.2f}s, {row['redis_bytes_per_entity']:,.0f} B/entity, "
                        f"load {load_before[0]:.1f}->{load_after[0]:.1f}, content: {content}",
                        flush=True,
                    )
                    write_json(args.out, results)
            shutil.rmtree(repo, ignore_errors=True)
        # Ray with one worker vs the single-process engine, per d
        for dim in dims:
            base = next((r for r in results["runs"] if r["config"] == "fused-redis" and r["dim"] == dim), None)
            for r in results["runs"]:
                if base and r["dim"] == dim and r["engine"] == "BCRayEngine":
                    r["ratio_vs_fused_redis"] = r["version_rows_per_s"] / base["version_rows_per_s"]
    finally:
        for target in targets.values():
            try:
                target.delete_project(project)
            except Exception as exc:  # the cluster may already be gone
                print(f"cleanup of {target.name} failed: {exc}")
        if cluster is not None:
            cluster.stop()
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    results["mismatches"] = mismatches
    write_json(args.out, results)
    print_table(results["runs"])
    for r in results["runs"]:
        if "ratio_vs_fused_redis" in r:
            print(
                f"{r['config']} d={r['dim']}: {r['ratio_vs_fused_redis']:.2f} x fused-redis (target >= {RAY_TARGET_RATIO})"
            )
    if args.plot and results["runs"]:
        plot(results["runs"], args.plot)
        print(f"wrote {args.plot}")
    print(f"wrote {args.out}")
    if mismatches:
        print(f"!!!!! Redis contents differed between configurations: {mismatches}", flush=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
