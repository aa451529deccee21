"""Serving latency: a pinned older version vs a plain FeatureView of the same dimension.

For each online store (SQLite, Redis; PostgreSQL with ``--backends postgres``: a local server of
pgserver's binaries, tests/local_postgres.py) and dim (256, 512) the same repo holds
  * item_embedding v0 (derived from v1 through B_1 by `feast materialize`) and v1 (latest),
  * plain_embedding: an ordinary Feast FeatureView with vectors of the same dim,
  * (Redis) the raw floor: one pipelined HMGET of the same fields + protobuf decode with numpy;
  * ``feast_bc.pin_reader.PinReader`` on the v0 pin (the opt-in fast path, issue 26).
Every call is ``get_online_features(features=<FeatureService>, entity_rows=...).to_dict()``, as a
consumer makes it, with 1 and 100 entities. Targets are measured interleaved in random order,
``--runs`` times; the report gives medians over runs of p50/p99 and of the per-run ratio
pinned-old / plain.

    python benchmarks/serving_latency.py --out docs/benchmarks/serving.json
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "tests")]
from common import delete_project_keys, machine, median, percentiles, write_json  # noqa: E402


def build_repo(root: Path, backend: str, dim: int, n: int, redis_url: str, project: str, postgres=None):
    import pandas as pd
    from feast import FeatureService, FeatureView, Field, FileSource
    from feast.types import Array, Float32, Int64

    from feast_bc import Catalog, EntitySpec
    from feast_bc.repo import apply, init_repo

    repo = init_repo(
        root / project,
        project=project,
        online_store="redis" if backend == "redis" else "sqlite",
        redis_url=redis_url if backend == "redis" else None,
    )
    rng = np.random.default_rng(0)
    ids = np.arange(n, dtype=np.int64)
    cat = Catalog.for_repo(repo)
    spec = EntitySpec(name="item", join_key="item_id")
    z0, z1 = (rng.normal(size=(n, dim)).astype(np.float32) for _ in range(2))
    b1 = (rng.normal(size=(dim, dim)) / np.sqrt(dim)).astype(np.float32)
    cat.publish("item_embedding", ids=ids, vectors=z0, entity=spec)
    cat.publish("item_embedding", ids=ids, vectors=z1, transform=b1)
    yaml = repo / {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}.get(backend, "")
    if backend == "postgres":
        yaml = repo / postgres.write_profile(repo, project)
    store = apply(repo, fs_yaml_file=yaml)
    plain_path = repo / "data" / "plain.parquet"
    pd.DataFrame(
        {
            "item_id": ids,
            "embedding": list(rng.normal(size=(n, dim)).astype(np.float32)),
            "event_timestamp": pd.Timestamp.now(tz="UTC").floor("s"),
        }
    ).to_parquet(plain_path)
    plain = FeatureView(
        name="plain_embedding",
        entities=[store.get_entity("item")],
        schema=[Field(name="item_id", dtype=Int64), Field(name="embedding", dtype=Array(Float32))],
        source=FileSource(path=str(plain_path), timestamp_field="event_timestamp"),
        ttl=timedelta(0),
    )
    service = FeatureService(name="plain_embedding_service", features=[plain[["embedding"]]])
    store.apply([plain, service])
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=5))
    store.refresh_registry()
    return repo, store


def raw_redis_reader(store, repo_config, view: str, dim: int):
    """One pipelined HMGET per entity of exactly the fields Feast asks for, decoded to numpy."""
    from feast.infra.online_stores.helpers import _mmh3

    from feast_bc.online_writers import RedisBulkWriter, StoreTarget, ViewTarget
    from feast_bc.online_writers.encoding import vector_prefix

    provider = store._get_provider()
    writer = RedisBulkWriter(
        StoreTarget(repo_config, provider.online_store, "item_id", "int64"),
        ViewTarget(store.get_feature_view(view), dim),
    )
    client = writer.client
    fields = [_mmh3(f"{view}:embedding"), f"_ts:{view}".encode()]
    skip = len(vector_prefix(dim))

    def read(ids):
        pipe = client.pipeline(transaction=False)
        for key in writer.redis_keys(np.asarray(ids)):
            pipe.hmget(key, fields)
        return [np.frombuffer(r[0], dtype="<f4", offset=skip) for r in pipe.execute()]

    return read


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", nargs="+", default=["sqlite", "redis"])
    p.add_argument("--dims", nargs="+", type=int, default=[256, 512])
    p.add_argument("--entities", type=int, default=10_000, help="rows per view")
    p.add_argument("--calls", type=int, default=300, help="calls per target per run")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/serving.json"))
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bc-serving-"))
    results = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "configs": []}
    postgres = None
    if "postgres" in args.backends:
        from local_postgres import LocalPostgres

        postgres = LocalPostgres().start()
    try:
        for backend in args.backends:
            for dim in args.dims:
                project = f"bench_serve_{backend}_{dim}"
                repo, store = build_repo(root, backend, dim, args.entities, args.redis_url, project, postgres)
                fs = {
                    "pinned_old (v0, derived)": store.get_feature_service("item_embedding_v0"),
                    "pinned_latest (v1)": store.get_feature_service("item_embedding_v1"),
                    "plain FeatureView": store.get_feature_service("plain_embedding_service"),
                }
                targets = {
                    name: (
                        lambda rows, s=s, store=store: store.get_online_features(features=s, entity_rows=rows).to_dict()
                    )
                    for name, s in fs.items()
                }
                raw = None
                if backend == "redis":
                    raw = raw_redis_reader(store, store.config, "item_embedding_bc0", dim)
                from feast_bc.pin_reader import PinReader

                pin_reader = PinReader(repo, "item_embedding_v0", store=store)
                targets["feast_bc PinReader (v0)"] = lambda rows, r=pin_reader: r.read([row["item_id"] for row in rows])
                rng = random.Random(1)
                for batch in (1, 100):
                    runs: dict[str, list[dict]] = {
                        name: [] for name in [*targets, *(["raw HMGET+decode"] if raw else [])]
                    }
                    ratios = []
                    for _ in range(args.runs):
                        order = list(runs)
                        rng.shuffle(order)
                        per_run = {}
                        for name in order:
                            lat = []
                            for _ in range(args.calls):
                                ids = rng.sample(range(args.entities), batch)
                                rows = [{"item_id": i} for i in ids]
                                t = time.perf_counter()
                                if name == "raw HMGET+decode":
                                    raw(ids)
                                else:
                                    targets[name](rows)
                                lat.append(time.perf_counter() - t)
                            per_run[name] = percentiles(lat)
                            runs[name].append(per_run[name])
                        ratios.append(
                            per_run["pinned_old (v0, derived)"]["p50_ms"] / per_run["plain FeatureView"]["p50_ms"]
                        )
                    summary = {
                        name: {
                            "p50_ms": median([r["p50_ms"] for r in rs]),
                            "p99_ms": median([r["p99_ms"] for r in rs]),
                        }
                        for name, rs in runs.items()
                    }
                    cfg = {
                        "backend": backend,
                        "dim": dim,
                        "entities_per_call": batch,
                        "targets": summary,
                        "ratio_pinned_old_vs_plain_p50_median": median(ratios),
                        "ratio_runs": ratios,
                    }
                    results["configs"].append(cfg)
                    print(
                        f"{backend:6} dim {dim} x{batch:<3} "
                        + "  ".join(f"{n}: {v['p50_ms']:.3f}/{v['p99_ms']:.3f} ms" for n, v in summary.items())
                        + f"  ratio {cfg['ratio_pinned_old_vs_plain_p50_median']:.3f}",
                        flush=True,
                    )
                if backend == "redis":
                    delete_project_keys(args.redis_url, project)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if postgres is not None:
            postgres.stop()
    results["load_avg"] = os.getloadavg()
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
