"""Push into a 5-version family on Redis (issue 25): feast_bc's push vs. Feast's own writer.

One family ``item_embedding`` of ``--versions`` versions at dim ``--dim`` (the latest holds
``--entities`` ids, B's random orthogonal: :func:`materialize_family.publish_family`) is published,
applied and materialized into the local Redis. Then, per repeat and in this order:

* ``push batch``   -- :class:`feast_bc.pusher.Pusher` pushes ``--batches`` batches of ``--batch`` new
  entities each (every pin written, the durable record included);
* ``feast batch``  -- what a user without feast_bc would do to reach every pin: compute each
  version's values with the same precomposed matrices in numpy and hand them to Feast's own
  ``online_write_batch`` (Feast protobuf rows; what `store.push` / materialization write with), one
  call per pin -- no durable record;
* ``log batch``    -- the durable record alone (:func:`feast_bc.catalog.push_log.append_push` of a
  batch into a scratch family directory: parquet write, fsync, rename, directory fsync);
* the same three with one entity per push (``--singles`` pushes): per-push latency, p50/p99.

Rows per second count entities; version-rows count entities x pins written. After the pushes every
pin of a sample of pushed entities is read through Feast (``get_online_features`` on its
FeatureService) and compared with the numpy chain (1e-5): the figures are of pushes that land.

    python benchmarks/push.py --entities 100000 --dim 256 --versions 5 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from common import check_pins, delete_project_keys, machine, median, percentiles, write_json  # noqa: E402
from materialize_family import FAMILY, publish_family  # noqa: E402


def _feast_writers(store, family: str, manifest):
    """(view, dim, ProtoWriter) per pin: Feast's own ``online_write_batch`` with Feast protobuf rows."""
    from feast_bc.naming import TAG_FAMILY, TAG_VERSION
    from feast_bc.online_writers import ProtoWriter, StoreTarget, ViewTarget

    online = store._get_provider().online_store
    out = []
    for view in store.list_batch_feature_views():
        if view.tags.get(TAG_FAMILY) == family:
            v = int(view.tags[TAG_VERSION])
            out.append(
                (
                    v,
                    ProtoWriter(
                        StoreTarget(store.config, online, "item_id", "int64"), ViewTarget(view, manifest.version(v).dim)
                    ),
                )
            )
    return sorted(out, key=lambda t: t[0])


def _feast_push(catalog, manifest, writers, ids, z, event_time) -> None:
    k = manifest.latest_version
    for v, writer in writers:
        values = catalog.transform_vectors(FAMILY, z, k, v, manifest)
        writer.write(ids, values, k, event_time)


def _check_pins(store, catalog, manifest, ids, z) -> int:
    return check_pins(store, catalog, manifest, FAMILY, "item_id", ids, z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--versions", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--singles", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "push.json"))
    args = ap.parse_args()

    from feast_bc import Catalog
    from feast_bc.catalog.push_log import append_push
    from feast_bc.pusher import Pusher
    from feast_bc.repo import apply, init_repo

    work = Path(tempfile.mkdtemp(prefix="feast-bc-push-bench-"))
    project = f"pushbench{os.getpid()}"
    try:
        repo = init_repo(work / "repo", project=project, online_store="redis", redis_url=args.redis_url)
        publish_family(repo, args.entities, args.versions, args.dim)
        store = apply(repo)
        t = time.perf_counter()
        store.materialize(
            start_date=datetime(2000, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC) + timedelta(seconds=1)
        )
        materialize_s = time.perf_counter() - t
        catalog = Catalog.for_repo(repo)
        manifest = catalog.manifest(FAMILY)
        k, pins = manifest.latest_version, len(manifest.served_versions)
        pusher = Pusher(repo, FAMILY)
        writers = _feast_writers(store, FAMILY, manifest)
        scratch = work / "scratch-family"
        rng = np.random.default_rng(0)
        next_id = [10**9]

        def fresh(n):
            ids = np.arange(next_id[0], next_id[0] + n, dtype=np.int64)
            next_id[0] += n
            return ids, rng.standard_normal((n, args.dim), dtype=np.float32)

        pusher.push(*fresh(1), version=k)  # warm: Feast objects, connections
        _feast_push(catalog, manifest, writers, *fresh(1), datetime.now(UTC))
        runs = {name: [] for name in ("push_batch", "feast_batch", "log_batch")}
        singles = {name: [] for name in ("push_single", "feast_single", "log_single")}
        checked = 0
        for repeat in range(args.repeats):
            batches = [fresh(args.batch) for _ in range(args.batches)]
            t = time.perf_counter()
            for ids, z in batches:
                pusher.push(ids, z, version=k)
            runs["push_batch"].append(time.perf_counter() - t)
            checked += _check_pins(store, catalog, manifest, batches[-1][0][:50], batches[-1][1][:50])

            batches = [fresh(args.batch) for _ in range(args.batches)]
            t = time.perf_counter()
            for ids, z in batches:
                _feast_push(catalog, manifest, writers, ids, z, datetime.now(UTC))
            runs["feast_batch"].append(time.perf_counter() - t)
            checked += _check_pins(store, catalog, manifest, batches[-1][0][:50], batches[-1][1][:50])

            batches = [fresh(args.batch) for _ in range(args.batches)]
            t = time.perf_counter()
            for ids, z in batches:
                append_push(scratch, k, "item_id", ids, z, datetime.now(UTC))
            runs["log_batch"].append(time.perf_counter() - t)
            shutil.rmtree(scratch)

            for name, call in (
                ("push_single", lambda ids, z: pusher.push(ids, z, version=k)),
                ("feast_single", lambda ids, z: _feast_push(catalog, manifest, writers, ids, z, datetime.now(UTC))),
                ("log_single", lambda ids, z: append_push(scratch, k, "item_id", ids, z, datetime.now(UTC))),
            ):
                items = [fresh(1) for _ in range(args.singles)]
                for ids, z in items:
                    t = time.perf_counter()
                    call(ids, z)
                    singles[name].append(time.perf_counter() - t)
                if name != "log_single":
                    checked += _check_pins(store, catalog, manifest, items[-1][0], items[-1][1])
            shutil.rmtree(scratch, ignore_errors=True)
            print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
        rows = args.batch * args.batches
        batch_rows = {
            name: {
                "median_s": median(times),
                "entities_per_s": rows / median(times),
                "version_rows_per_s": rows * (pins if name != "log_batch" else 1) / median(times),
                "runs_s": times,
            }
            for name, times in runs.items()
        }
        single = {name: percentiles(times) for name, times in singles.items()}
        result = {
            "benchmark": "push",
            "args": vars(args),
            "machine": machine(),
            "load_avg": os.getloadavg(),
            "pins": pins,
            "materialize_s": materialize_s,
            "batch": batch_rows,
            "single": single,
            "ratios": {
                "push_vs_feast_batch_throughput": batch_rows["push_batch"]["entities_per_s"]
                / batch_rows["feast_batch"]["entities_per_s"],
                "push_vs_feast_single_p50": single["push_single"]["p50_ms"] / single["feast_single"]["p50_ms"],
                "log_share_batch": batch_rows["log_batch"]["median_s"] / batch_rows["push_batch"]["median_s"],
                "log_share_single_p50": single["log_single"]["p50_ms"] / single["push_single"]["p50_ms"],
            },
            "values_checked": checked,
        }
        write_json(Path(args.out), result)
        _plot(result, Path(args.out).with_suffix(".png"))
        for name, r in batch_rows.items():
            print(
                f"{name:12s} {r['entities_per_s']:>10,.0f} entities/s  {r['version_rows_per_s']:>10,.0f} version-rows/s"
            )
        for name, r in single.items():
            print(f"{name:12s} p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms")
        print("ratios", result["ratios"], "load", os.getloadavg())
    finally:
        delete_project_keys(args.redis_url, project)
        shutil.rmtree(work, ignore_errors=True)


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    names = ["push_batch", "feast_batch", "log_batch"]
    a.bar(
        ["feast_bc push", "Feast writer x pins", "durable record alone"],
        [result["batch"][n]["entities_per_s"] for n in names],
    )
    a.set_ylabel("entities / s")
    a.set_title(f"batches of {result['args']['batch']}, {result['pins']} pins, d={result['args']['dim']}")
    names = ["push_single", "feast_single", "log_single"]
    a2 = [result["single"][n]["p50_ms"] for n in names]
    b.bar(["feast_bc push", "Feast writer x pins", "durable record alone"], a2)
    b.set_ylabel("p50 ms per single-entity push")
    b.set_title("one entity per push")
    for ax in (a, b):
        ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
