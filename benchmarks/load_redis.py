"""Load: materialize 1M entities x 3 versions into Redis; peak RSS and Redis memory per entity.

The latest version (v2, dim 384) holds all entities; v1 (320) and v0 (256) are derived. Each view
is materialized by feast_bc's engine in its own subprocess; ``peak_rss_mib`` is that process's
highest resident memory during ``store.materialize`` (VmHWM, reset after apply). Redis ``used_memory`` before/after gives bytes per entity, compared with a prediction from
the layout (one hash per entity; per view an embedding value of 7 + 4d bytes and a timestamp,
each stored as an sds string in jemalloc size classes, plus dict entries).

    python benchmarks/load_redis.py --entities 1000000 --out docs/benchmarks/load.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import delete_project_keys, machine, peak_rss_mib, reset_peak_rss, rss_mib, write_json  # noqa: E402

DIMS = [256, 320, 384]


def jemalloc_class(n: int) -> int:
    """Smallest jemalloc size class >= n (4 classes per doubling above 128 bytes)."""
    if n <= 8:
        return 8
    if n <= 128:
        return (n + 15) // 16 * 16
    size = 128
    while True:
        step = size // 4
        for _ in range(4):
            size += step
            if size >= n:
                return size


def predicted_bytes_per_entity(dims: list[int], project: str) -> int:
    """Hash-table encoded hash (values exceed listpack limits) with 2 fields per view (embedding, _ts:<view>)."""
    sds = lambda n: jemalloc_class(n + 3 + 1)  # sds8 header + NUL  # noqa: E731
    key_len = 4 + 4 + 4 + len("item_id") + 4 + 4 + 8 + len(project)
    total = jemalloc_class(24) + sds(key_len)  # top-level dict entry + key
    total += jemalloc_class(56) + jemalloc_class(16 * 4)  # hash object: dict struct + initial bucket table (grows)
    for d in dims:
        view = f"item_embedding_bc{dims.index(d)}"
        value = 7 + 4 * d if d > 127 else 5 + 4 * d
        fields = [(4, value), (len("_ts:") + len(view), 11)]  # mmh3(view:embedding) is 4 bytes
        for name_len, value_len in fields:
            total += jemalloc_class(24) + sds(name_len) + sds(value_len)  # dictEntry + field + value
    return total


def worker(args) -> None:
    from feast_bc.repo import apply

    store = apply(Path(args.repo), fs_yaml_file=Path(args.repo) / "feature_store.redis.yaml")
    rss_before = rss_mib()
    reset_peak_rss()
    t = time.perf_counter()
    store.materialize(
        datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5), feature_views=[args.view]
    )
    seconds = time.perf_counter() - t
    peak = peak_rss_mib()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mib": peak,
                "rss_before_mib": rss_before,
                "materialize_added_mib": peak - rss_before,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--repo"), p.add_argument("--view")
    p.add_argument("--entities", type=int, default=1_000_000)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/load.json"))
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import redis

    from feast_bc import Catalog, EntitySpec
    from feast_bc.repo import init_repo

    root = Path(tempfile.mkdtemp(prefix="bc-load-"))
    project = "bench_load"
    client = redis.Redis.from_url(args.redis_url)
    delete_project_keys(args.redis_url, project)
    try:
        repo = init_repo(root / "repo", project=project, online_store="redis", redis_url=args.redis_url)
        cat = Catalog.for_repo(repo)
        rng = np.random.default_rng(0)
        spec = EntitySpec(name="item", join_key="item_id")
        t = time.perf_counter()
        for v, d in enumerate(DIMS):
            rows = args.entities if v == len(DIMS) - 1 else 16
            vectors = np.empty((rows, d), dtype=np.float32)
            for s in range(0, rows, 65536):
                vectors[s : s + 65536] = rng.standard_normal((min(65536, rows - s), d), dtype=np.float32)
            b = None if v == 0 else (rng.normal(size=(DIMS[v - 1], d)) / np.sqrt(d)).astype(np.float32)
            cat.publish(
                "item_embedding", ids=np.arange(rows, dtype=np.int64), vectors=vectors, transform=b, entity=spec
            )
            del vectors
        publish_s = time.perf_counter() - t
        used_before = client.info("memory")["used_memory"]
        views = []
        for j in range(len(DIMS) - 1, -1, -1):
            view = f"item_embedding_bc{j}"
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", "--repo", str(repo), "--view", view],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            out.update(view=view, dim=DIMS[j], rows_per_s=args.entities / out["seconds"])
            views.append(out)
            print(
                f"{view} d={DIMS[j]} {out['rows_per_s']:,.0f} rows/s, {out['seconds']:.1f}s, peak RSS {out['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
        used_after = client.info("memory")["used_memory"]
        keys = client.dbsize()
        measured = (used_after - used_before) / args.entities
        predicted = predicted_bytes_per_entity(DIMS, project)
        result = {
            "machine": machine(),
            "entities": args.entities,
            "dims": DIMS,
            "publish_seconds": publish_s,
            "latest_table_mib": args.entities * DIMS[-1] * 4 / 2**20,
            "views": views,
            "redis_used_memory_delta_mib": (used_after - used_before) / 2**20,
            "redis_bytes_per_entity_measured": measured,
            "redis_bytes_per_entity_predicted": predicted,
            "redis_keys_total": keys,
        }
        print(
            f"Redis: {measured:,.0f} B/entity measured vs {predicted:,} predicted; peak RSS max "
            f"{max(v['peak_rss_mib'] for v in views):.0f} MiB (latest table {result['latest_table_mib']:.0f} MiB)"
        )
        write_json(args.out, result)
    finally:
        delete_project_keys(args.redis_url, project)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
