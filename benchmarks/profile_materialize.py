"""Where one BCEngine materialization into Redis spends its time: per-stage timers and Redis CPU.

One family with a tiny v0 and a latest v1 of n rows; the derived view ``item_embedding_bc0`` (one
matmul per batch) is materialized once into an empty project. Stage timers wrap the engine's and
the writer's functions (cProfile cannot see the writer thread); Redis's own CPU comes from
``INFO cpu`` before and after. Timers of different threads overlap, so they do not add up to the
wall time; "writer: read ... replies" is mostly waiting for Redis.

    python benchmarks/profile_materialize.py --rows 1000000 --dim 256
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import delete_project_keys, peak_rss_mib, reset_peak_rss, rss_mib  # noqa: E402

TIMERS: dict[str, float] = collections.defaultdict(float)


def timed(owner, name: str, label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMERS[label] += time.perf_counter() - start

    setattr(owner, name, wrapper)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--skip-dedup", action="store_true", help="configure the store with skip_dedup: true")
    args = p.parse_args()

    import redis

    import feast_bc.online_writers as writers
    import feast_bc.resp as resp
    from feast_bc import Catalog, EntitySpec
    from feast_bc.repo import apply, init_repo

    timed(Catalog, "transform_vectors", "main: matmul (transform_vectors)")
    timed(Catalog, "verify", "verify thread: sha256 of the artifacts")
    timed(writers.RedisFamilyWriter, "write_part", "main: write_part() incl. waiting for a queue slot")
    timed(writers.RedisFamilyWriter, "_hset_payload", "writer: build HSET payloads")
    timed(writers.RedisFamilyWriter, "_hmget_payload", "writer: build HMGET payloads")
    timed(resp.Pipeline, "send", "writer: send")
    timed(resp.RawReplies, "integers", "writer: read HSET replies")
    timed(resp.RawReplies, "field_arrays", "writer: read HMGET replies")

    root = Path(tempfile.mkdtemp(prefix="bc-profile-"))
    project = f"bench_profile_{args.rows}_{args.dim}"
    repo = init_repo(root / "repo", project=project, online_store="redis", redis_url=args.redis_url)
    cat = Catalog.for_repo(repo)
    rng = np.random.default_rng(0)
    spec = EntitySpec(name="item", join_key="item_id")
    for version, rows in enumerate((16, args.rows)):
        vectors = rng.standard_normal((rows, args.dim), dtype=np.float32)
        b = None if version == 0 else (rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)).astype(np.float32)
        cat.publish("item_embedding", ids=np.arange(rows, dtype=np.int64), vectors=vectors, transform=b, entity=spec)
        del vectors
    yaml = repo / "feature_store.redis.yaml"
    if args.skip_dedup:
        text = yaml.read_text()
        yaml.write_text(text.replace("  type: redis\n", "  type: redis\n  skip_dedup: true\n", 1))
    store = apply(repo, fs_yaml_file=yaml)
    client = redis.Redis.from_url(args.redis_url)
    delete_project_keys(args.redis_url, project)
    try:
        cpu_before = client.info("cpu")
        rss_before = rss_mib()
        reset_peak_rss()
        start = time.perf_counter()
        store.materialize(
            datetime(2000, 1, 1, tzinfo=UTC),
            datetime.now(UTC) + timedelta(seconds=5),
            feature_views=["item_embedding_bc0"],
        )
        seconds = time.perf_counter() - start
        cpu_after = client.info("cpu")
    finally:
        delete_project_keys(args.redis_url, project)
    redis_cpu = sum(cpu_after[k] - cpu_before[k] for k in ("used_cpu_user", "used_cpu_sys"))
    print(
        f"{args.rows:,} rows x d={args.dim}: {seconds:.2f} s = {args.rows / seconds:,.0f} rows/s; "
        f"Redis CPU {redis_cpu:.2f} s; materialize added {peak_rss_mib() - rss_before:,.0f} MiB"
    )
    for label, value in sorted(TIMERS.items()):
        print(f"  {label:48s} {value:6.2f} s")


if __name__ == "__main__":
    main()
