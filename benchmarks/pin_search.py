"""Search on a pinned version (issue 26): PostgreSQL + pgvector and SQLite, against numpy; bulk writes
against Feast's own writer.

One family ``item_embedding`` of two versions at dim ``--dim`` (``--entities`` ids in the latest,
B random orthogonal: :func:`materialize_family.publish_family`) is published into one repo with
two profiles: the embedded SQLite default and PostgreSQL 16 + pgvector (``pgserver``'s binaries,
started on a free loopback port: tests/local_postgres.py). Both are applied and materialized
(feast_bc's engine). Then, alone on the machine:

* **writes** -- ``--write-rows`` rows of dim ``--dim`` into a scratch project's table of each
  store, ``--repeats`` times: feast_bc's bulk writer (PostgreSQL: one binary COPY + upsert per
  batch of 65,536; SQLite: one executemany) vs. Feast's own ``online_write_batch`` with Feast
  protobuf rows (:class:`feast_bc.online_writers.ProtoWriter`, what Feast's engines write with);
* **search** -- ``--queries`` random queries on each pin (v0: derived through B, v1: the latest),
  top-10, L2, every path once per query in random order: Feast's own ``retrieve_online_documents_v2`` (PostgreSQL), feast_bc's
  :class:`~feast_bc.pin_search.PinSearch` (PostgreSQL: Feast's ids + a pin read; SQLite: the exact
  scan, warm; its first load timed apart) and the floor: numpy brute force over the version's
  matrix already in memory (float32 ``||x||^2 - 2 x.q`` with the norms precomputed, ``argpartition``). recall@10 of each against float64 numpy
  over ``feast-bc export`` of that version (exact indexes: 1.0 expected).

    python benchmarks/pin_search.py --entities 100000 --dim 256 --queries 100 --repeats 2
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

from common import machine, median, percentiles, write_json  # noqa: E402
from materialize_family import FAMILY, publish_family  # noqa: E402

from local_postgres import LocalPostgres  # noqa: E402

PROFILES = {"sqlite": "feature_store.yaml", "postgres": "feature_store.postgres.yaml"}


def _write_speed(store, rows: int, dim: int, repeats: int) -> dict:
    """Rows/s of feast_bc's bulk writer and of Feast's own writer into a scratch project's table."""
    from feast_bc.online_writers import ProtoWriter, StoreTarget, ViewTarget, writer_for

    online = store._get_provider().online_store
    view = next(v for v in store.list_batch_feature_views() if v.name == f"{FAMILY}_bc0")
    rng = np.random.default_rng(1)
    ids = np.arange(rows, dtype=np.int64)
    out = {}
    for name in ("bulk", "feast"):
        times = []
        for r in range(repeats):
            config = store.config.model_copy(update={"project": f"w{name}{r}{os.getpid()}"})
            online.update(config, [], [view], [], [], partial=False)
            vectors = rng.standard_normal((rows, dim), dtype=np.float32)
            target = StoreTarget(config, online, "item_id", "int64")
            writer = (
                writer_for(target, ViewTarget(view, dim))
                if name == "bulk"
                else ProtoWriter(target, ViewTarget(view, dim))
            )
            t = time.perf_counter()
            with writer:
                for s in range(0, rows, 65536):
                    writer.write(ids[s : s + 65536], vectors[s : s + 65536], 1, datetime.now(UTC))
            times.append(time.perf_counter() - t)
            out.setdefault("writer_class", {})[name] = type(writer).__name__
            online.update(config, [view], [], [], [], partial=False)  # drops the scratch table only
        out[name] = {"median_s": median(times), "rows_per_s": rows / median(times), "runs_s": times}
    out["bulk_vs_feast"] = out["bulk"]["rows_per_s"] / out["feast"]["rows_per_s"]
    return out


def _truth(repo: Path, version: int):
    from feast_bc.export import export_version

    table = export_version(repo, FAMILY, version)
    ids = np.asarray(table.column(0).to_pylist(), dtype=np.int64)
    matrix = np.asarray(table.column("embedding").combine_chunks().flatten().to_numpy(), dtype=np.float32)
    return ids, matrix.reshape(len(ids), -1)


def _floor_search(matrix: np.ndarray, sq_norms: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    """What a user with the matrix in memory writes: ||x||^2 - 2 x.q in float32, argpartition."""
    dist = sq_norms - 2.0 * (matrix @ q.astype(np.float32))
    top = np.argpartition(dist, k - 1)[:k]
    return ids[top[np.argsort(dist[top])]].tolist()


def _exact(matrix: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> set[int]:
    dist = np.linalg.norm(matrix.astype(np.float64) - q, axis=1)
    return set(ids[np.argsort(dist, kind="stable")[:k]].tolist())


def _search_runs(stores: dict, repo: Path, queries: int, k: int) -> dict:
    from feast_bc.pin_search import PinSearch

    rng = np.random.default_rng(7)
    out = {}
    for version in (0, 1):
        ids, matrix = _truth(repo, version)
        qs = [rng.standard_normal(matrix.shape[1]) for _ in range(queries)]
        exact = [_exact(matrix, ids, q, k) for q in qs]
        service = f"{FAMILY}_v{version}"
        sq_norms = np.einsum("ij,ij->i", matrix, matrix)
        calls = {"numpy_floor": lambda q, m=matrix, n=sq_norms, i=ids: _floor_search(m, n, i, q, k)}
        pg = stores["postgres"]
        calls["postgres_feast"] = lambda q, s=pg, v=version: s.retrieve_online_documents_v2(
            features=[f"{FAMILY}_bc{v}:embedding"], query=q.tolist(), top_k=k, distance_metric="L2"
        ).to_dict()["item_id"]
        pg_search = PinSearch(repo, service, store=pg)
        calls["postgres_pin_search"] = lambda q, s=pg_search: s.search(q, top_k=k).ids
        sq_search = PinSearch(repo, service, store=stores["sqlite"])
        t = time.perf_counter()
        sq_search.search(qs[0], top_k=k)  # the first call loads and decodes the table
        first_load_s = time.perf_counter() - t
        calls["sqlite_pin_search"] = lambda q, s=sq_search: s.search(q, top_k=k).ids
        result = {"entities": len(ids), "dim": int(matrix.shape[1]), "sqlite_first_load_s": first_load_s}
        for call in calls.values():
            call(qs[0])  # warm
        times = {name: [] for name in calls}
        hits = {name: [] for name in calls}
        order = list(calls)
        for q, want in zip(qs, exact, strict=True):
            rng.shuffle(order)  # interleaved in random order: no path gets the warmer caches or plans
            for name in order:
                t = time.perf_counter()
                got = calls[name](q)
                times[name].append(time.perf_counter() - t)
                hits[name].append(len(set(got) & want) / k)
        for name in calls:
            result[name] = {**percentiles(times[name]), "recall_at_10": float(np.mean(hits[name]))}
            print(
                f"v{version} {name:20s} p50 {result[name]['p50_ms']:8.2f} ms  recall@10 {result[name]['recall_at_10']:.3f}"
            )
        floor = result["numpy_floor"]["p50_ms"]
        result["p50_vs_floor"] = {n: result[n]["p50_ms"] / floor for n in calls if n != "numpy_floor"}
        out[f"v{version}"] = result
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--write-rows", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "pin_search.json"))
    args = ap.parse_args()

    from feast_bc.repo import apply, init_repo

    work = Path(tempfile.mkdtemp(prefix="feast-bc-search-bench-"))
    server = LocalPostgres().start()
    project = f"searchbench{os.getpid()}"
    try:
        repo = init_repo(work / "repo", project=project)
        server.write_profile(repo, project, PROFILES["postgres"])
        publish_family(repo, args.entities, 2, args.dim)
        stores, materialize = {}, {}
        for name, profile in PROFILES.items():
            stores[name] = apply(repo, fs_yaml_file=repo / profile)
            t = time.perf_counter()
            stores[name].materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=1))
            seconds = time.perf_counter() - t
            materialize[name] = {"seconds": seconds, "version_rows_per_s": 2 * args.entities / seconds}
            print(f"materialize {name}: {seconds:.1f} s", flush=True)
        writes = {name: _write_speed(store, args.write_rows, args.dim, args.repeats) for name, store in stores.items()}
        for name, w in writes.items():
            print(
                f"write {name}: bulk {w['bulk']['rows_per_s']:,.0f} rows/s, feast {w['feast']['rows_per_s']:,.0f} rows/s"
            )
        search = _search_runs(stores, repo, args.queries, 10)
        result = {
            "benchmark": "pin_search",
            "args": vars(args),
            "machine": machine(),
            "postgres": "PostgreSQL 16 + pgvector (pgserver 0.1.4 binaries), fsync off, loopback",
            "load_avg": os.getloadavg(),
            "materialize": materialize,
            "writes": writes,
            "search": search,
        }
        write_json(Path(args.out), result)
        plot(result, Path(args.out).with_suffix(".png"))
        print(f"wrote {args.out}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def plot(result: dict, path: Path) -> None:
    """Search p50 per path and pin (log scale); bulk vs Feast write rows/s per store."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    paths = ["numpy_floor", "sqlite_pin_search", "postgres_pin_search", "postgres_feast"]
    labels = ["numpy floor\n(in memory)", "PinSearch\nSQLite scan", "PinSearch\nPostgreSQL", "Feast\nPostgreSQL"]
    for offset, pin in ((-0.2, "v0"), (0.2, "v1")):
        a.bar(
            [i + offset for i in range(len(paths))],
            [result["search"][pin][p]["p50_ms"] for p in paths],
            width=0.4,
            label=f"pin {pin}",
        )
    a.set_xticks(range(len(paths)), labels, fontsize=8)
    a.set_yscale("log")
    a.set_ylabel("search p50, ms (top-10, L2)")
    first = result["search"]["v0"]
    a.set_title(f"{first['entities']:,} entities x {first['dim']}, recall@10 = 1.0 on every path")
    a.legend()
    stores = list(result["writes"])
    for offset, name in ((-0.2, "bulk"), (0.2, "feast")):
        b.bar(
            [i + offset for i in range(len(stores))],
            [result["writes"][s][name]["rows_per_s"] for s in stores],
            width=0.4,
            label="feast_bc bulk writer" if name == "bulk" else "Feast's online_write_batch",
        )
    b.set_xticks(range(len(stores)), stores)
    b.set_ylabel("rows / s")
    b.set_title(f"writes of {result['args']['write_rows']:,} rows, d={result['args']['dim']}")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
