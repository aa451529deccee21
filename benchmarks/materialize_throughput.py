"""Materialization throughput and peak memory: feast_bc's engine vs Feast's stock engine.

For each (entities n, dim d) one catalog holds versions 0..4: v4 is the latest with n rows, so
view bc<j> has a chain of length 4-j (bc3: 1 transform ... bc0: 4) and bc4 is the latest itself.
Each view is materialized into Redis (and SQLite for the smaller sizes) in its own subprocess;
``peak_rss_mib`` is that process's highest resident memory during ``store.materialize`` (VmHWM,
reset after apply; Feast's imports and registry included) and ``materialize_added_mib`` what the
materialization added on top of the process as it was after ``apply``. Before each Redis group
one untimed materialization lets Redis's allocator take the memory from the OS (the keys are
deleted between runs), so the first view timed is not the only one paying for page faults. The
stock engine (Feast's local engine running the same views' UDFs) is measured on the sizes where it
finishes in reasonable time, in the same run, to give the speed-up.

    python benchmarks/materialize_throughput.py --out docs/benchmarks/materialize.json
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

VERSIONS = 5


def publish(root: Path, n: int, dim: int) -> Path:
    """Catalog with tiny v0..v3 and a full v4 of n rows (only the latest is read when materializing)."""
    from feast_bc import Catalog, EntitySpec

    cat_root = root / f"catalog_{n}_{dim}"
    if (cat_root / "item_embedding" / "manifest.json").exists():
        return cat_root
    cat = Catalog(cat_root)
    rng = np.random.default_rng(0)
    spec = EntitySpec(name="item", join_key="item_id")
    for v in range(VERSIONS):
        rows = n if v == VERSIONS - 1 else 16
        ids = np.arange(rows, dtype=np.int64)
        vectors = np.empty((rows, dim), dtype=np.float32)
        for start in range(0, rows, 65536):  # generate in chunks to keep this process small too
            vectors[start : start + 65536] = rng.standard_normal((min(65536, rows - start), dim), dtype=np.float32)
        b = None if v == 0 else (rng.normal(size=(dim, dim)) / np.sqrt(dim)).astype(np.float32)
        cat.publish("item_embedding", ids=ids, vectors=vectors, transform=b, entity=spec)
    return cat_root


def worker(args) -> None:
    """Apply a repo over the shared catalog, materialize one view, print JSON."""
    from feast_bc.repo import apply, init_repo

    engine = "bc" if args.engine == "bcray" else args.engine  # bcray: BCEngine's block, BCRayEngine's type
    repo = init_repo(
        Path(args.repo), project=args.project, online_store=args.backend, redis_url=args.redis_url, engine=engine
    )
    if args.engine == "bcray":
        for name in ("feature_store.yaml", "feature_store.redis.yaml"):
            path = repo / name
            text = path.read_text().replace("type: feast_bc.engine.BCEngine", "type: feast_bc.ray_engine.BCRayEngine")
            path.write_text(text)
    link = repo / "bc_catalog"
    if not link.exists():
        link.symlink_to(Path(args.catalog).resolve(), target_is_directory=True)
    yaml = repo / ("feature_store.yaml" if args.backend == "sqlite" else "feature_store.redis.yaml")
    store = apply(repo, fs_yaml_file=yaml)
    apply_peak = peak_rss_mib()
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
                "apply_peak_rss_mib": apply_peak,
            }
        )
    )


def run_one(root, catalog, n, dim, view, backend, engine, redis_url) -> dict:
    project = f"bench_mat_{backend}_{engine}_{n}_{dim}"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--repo",
        str(root / project),
        "--project",
        project,
        "--catalog",
        str(catalog),
        "--backend",
        backend,
        "--engine",
        engine,
        "--view",
        view,
        "--redis-url",
        redis_url,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if backend == "redis":
        delete_project_keys(redis_url, project)
    else:
        shutil.rmtree(root / project / "data", ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--repo"), p.add_argument("--project"), p.add_argument("--catalog"), p.add_argument("--view")
    p.add_argument("--backend", default="redis", help=argparse.SUPPRESS)
    p.add_argument("--backends", nargs="+", default=["redis", "sqlite"], choices=["redis", "sqlite"])
    p.add_argument("--engines", nargs="+", default=["bc", "local"], choices=["bc", "local"])
    p.add_argument("--engine", default="bc")
    p.add_argument("--sizes", nargs="+", type=int, default=[20_000, 200_000, 1_000_000])
    p.add_argument("--dims", nargs="+", type=int, default=[256, 512])
    p.add_argument("--stock-max-rows", type=int, default=20_000, help="largest size also run on Feast's stock engine")
    p.add_argument("--sqlite-max-rows", type=int, default=200_000)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed Redis warm-up materialization per group")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/materialize.json"))
    args = p.parse_args()
    if args.worker:
        return worker(args)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="bc-mat-"))
    results = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    try:
        for n in args.sizes:
            for dim in args.dims:
                t = time.perf_counter()
                catalog = publish(root, n, dim)
                print(f"published n={n} dim={dim} in {time.perf_counter() - t:.1f}s", flush=True)
                for backend in args.backends:
                    if backend == "sqlite" and n > args.sqlite_max_rows:
                        continue
                    for engine in args.engines:
                        if engine == "local" and n > args.stock_max_rows:
                            continue
                        if backend == "redis" and not args.no_warmup:
                            # Untimed: the first load after Redis freed memory pays its page faults.
                            run_one(
                                root,
                                catalog,
                                n,
                                dim,
                                f"item_embedding_bc{VERSIONS - 1}",
                                backend,
                                engine,
                                args.redis_url,
                            )
                        for j in range(VERSIONS - 1, -1, -1):
                            view = f"item_embedding_bc{j}"
                            out = run_one(root, catalog, n, dim, view, backend, engine, args.redis_url)
                            row = {
                                "rows": n,
                                "dim": dim,
                                "backend": backend,
                                "engine": engine,
                                "view": view,
                                "chain_length": VERSIONS - 1 - j,
                                "rows_per_s": n / out["seconds"],
                                **out,
                            }
                            results["runs"].append(row)
                            print(
                                f"{backend:6} {engine:5} n={n:>8} d={dim} {view} k={row['chain_length']} "
                                f"{row['rows_per_s']:>10,.0f} rows/s  {out['seconds']:7.2f}s  peak {out['peak_rss_mib']:7.0f} MiB",
                                flush=True,
                            )
                            write_json(args.out, results)
                shutil.rmtree(catalog, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
