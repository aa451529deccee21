"""Feast's Ray engine (local Ray) vs feast_bc's engine vs Feast's local engine on the same table.

Same catalog and per-view subprocesses as ``materialize_throughput.py`` (one family, latest v4 with
n rows, views bc4 = the latest itself, bc3 = one transform, bc0 = four). With the Ray engine, Feast
starts a local Ray in each subprocess during ``apply`` (not timed); the timed materialize includes
Ray Data starting its workers, as a cold ``feast materialize`` would. Note that Feast's Ray plan for
a derived view also re-reads and re-writes the latest view (docs/SCALING.md). ``--engines bcray``
adds feast_bc's own engine on Ray (``feast_bc.ray_engine.BCRayEngine``, local Ray started inside
the timed materialize, one task per row group of the latest file).

    nice -n 19 python benchmarks/materialize_ray.py --out docs/benchmarks/materialize_ray.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402
from materialize_throughput import VERSIONS, publish, run_one  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--views", nargs="+", type=int, default=[4, 3, 0], help="versions whose views to materialize")
    p.add_argument("--engines", nargs="+", default=["bc", "local", "ray"], choices=["bc", "local", "ray", "bcray"])
    p.add_argument("--backends", nargs="+", default=["redis", "sqlite"])
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks/materialize_ray.json"))
    args = p.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bc-ray-"))
    results = {
        "machine": machine(),
        "loadavg_at_start": os.getloadavg(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": [],
    }
    try:
        catalog = publish(root, args.rows, args.dim)
        for backend in args.backends:
            for engine in args.engines:
                for j in args.views:
                    view = f"item_embedding_bc{j}"
                    out = run_one(root, catalog, args.rows, args.dim, view, backend, engine, args.redis_url)
                    row = {
                        "rows": args.rows,
                        "dim": args.dim,
                        "backend": backend,
                        "engine": engine,
                        "view": view,
                        "chain_length": VERSIONS - 1 - j,
                        "rows_per_s": args.rows / out["seconds"],
                        **out,
                    }
                    results["runs"].append(row)
                    print(
                        f"{backend:6} {engine:5} {view} k={row['chain_length']} {row['rows_per_s']:>9,.0f} rows/s "
                        f"{out['seconds']:6.2f}s  peak {out['peak_rss_mib']:6.0f} MiB",
                        flush=True,
                    )
                    write_json(args.out, results)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    results["loadavg_at_end"] = os.getloadavg()
    write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
