"""Materialization from a catalog on object storage vs the same catalog on local disk (issue 24).

One family ``item_embedding`` of ``--versions`` versions at dim ``--dim`` (the latest holds
``--entities`` ids; older versions 16 rows; B's random orthogonal -- the family of
``materialize_family.py``) is published twice: into a local catalog (``bc_catalog/``) and into a
catalog on an S3-compatible server (moto's standalone server on a loopback port, started here and
stopped by PID). Both repos write to the same Redis under their own project. Per repeat, three
configurations, in this order, each from an empty project (keys deleted, ``MEMORY PURGE``):

* ``local``        -- BCEngine over the local catalog;
* ``remote-cold``  -- BCEngine over the S3 catalog with this machine's mirror deleted first: the run
  includes listing the bucket and downloading every artifact (the latest parquet file included);
* ``remote-warm``  -- the same with the mirror in place (what every later materialize pays: one LIST).

And the floor of ``remote-cold`` on this server: ``raw-download``, boto3's ``download_file`` of the
latest embeddings object alone into a temp file (what any client pays to fetch it once), timed in
each repeat just before ``remote-cold``.

Reported per configuration: median wall time of the one ``store.materialize`` call,
version-rows/s (entities x versions / wall), the ratio to ``local``, and the object-store requests
the run made (LIST, GET = artifact downloads, PUT, DELETE), counted by wrapping
``feast_bc.catalog.object_store.ObjectStore`` in this process. moto runs on the same cores as
feast_bc and Redis (a real object store would not), so ``remote-cold`` is a pessimistic figure.

    python benchmarks/materialize_remote.py --entities 1000000 --dim 256 --versions 5 --repeats 3

``--endpoint URL`` measures another S3-compatible server already running instead of moto, with the
credentials of the environment (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``; the tests' when
unset), e.g. s3rver from the npm registry (its keys are S3RVER / S3RVER; it ignores conditional
writes, so it is fit for this single-writer read benchmark, not for concurrent publishers):

    npx s3rver -d /tmp/s3rver-data -a 127.0.0.1 -p 4569 --silent &
    AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER \
        python benchmarks/materialize_remote.py --endpoint http://127.0.0.1:4569 --server s3rver ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from common import delete_project_keys, machine, median, write_json  # noqa: E402
from materialize_family import publish_family  # noqa: E402

from local_s3 import LocalS3, client_env, new_bucket  # noqa: E402

CONFIGS = ("local", "remote-cold", "remote-warm")


def count_requests(counter: Counter) -> None:
    """Wrap every ObjectStore operation so each call is counted (one call = one request, except a
    multipart upload/download, counted once)."""
    from feast_bc.catalog.object_store import ObjectStore

    for name, kind in (("list", "LIST"), ("download", "GET"), ("upload", "PUT"), ("put", "PUT"), ("delete", "DELETE")):
        original = getattr(ObjectStore, name)

        def wrapped(self, *a, _original=original, _kind=kind, **kw):
            counter[_kind] += 1
            return _original(self, *a, **kw)

        setattr(ObjectStore, name, wrapped)


def raw_download(uri: str, key: str, work: Path) -> float:
    """Seconds boto3 takes to fetch one object of the catalog into a temp file (then deleted)."""
    from feast_bc.catalog.object_store import ObjectStore

    store = ObjectStore(uri)
    target = work / "raw-download.tmp"
    t = time.perf_counter()
    store.client.download_file(store.bucket, store.key(key), str(target))
    wall = time.perf_counter() - t
    target.unlink()
    return wall


def plot(payload: dict, path: Path) -> None:
    """Median wall time per configuration (bars), with the raw-download floor marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = payload["summary"]
    names = [c for c in (*CONFIGS, "raw-download") if c in summary]
    walls = [summary[c]["median_wall_s"] for c in names]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    bars = ax.barh(names, walls, color=["#4c72b0", "#dd8452", "#55a868", "#8c8c8c"][: len(names)])
    for bar, wall in zip(bars, walls, strict=True):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {wall:.1f} s", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("median wall time (s): one materialize, or the download alone")
    ax.set_title(
        f"{payload['entities']:,} x {payload['dim']} x {payload['versions']} versions into Redis; "
        f"S3 = {payload.get('server', 'moto')} on the same 2 cores",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def purge(redis_url: str, project: str) -> None:
    import redis

    delete_project_keys(redis_url, project)
    redis.Redis.from_url(redis_url).execute_command("MEMORY", "PURGE")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entities", type=int, default=300_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--versions", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "materialize_remote.json"))
    p.add_argument("--replot", action="store_true", help="only redraw the PNG beside --out from its JSON")
    p.add_argument("--endpoint", help="an S3-compatible server already running (default: moto, started here)")
    p.add_argument("--server", default=None, help="the server's name in the results (default: moto, or the endpoint)")
    args = p.parse_args()
    if args.replot:
        plot(json.loads(Path(args.out).read_text()), Path(args.out).with_suffix(".png"))
        return

    from feast import FeatureStore

    from feast_bc.catalog.remote import RemoteCatalog
    from feast_bc.repo import apply, init_repo

    work = Path(tempfile.mkdtemp(prefix="bc-remote-bench-"))
    server = None if args.endpoint else LocalS3(work).start()
    endpoint = args.endpoint or server.endpoint
    server_name = args.server or ("moto" if server else endpoint)
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    own_keys = {k: os.environ[k] for k in keys if args.endpoint and k in os.environ}
    os.environ.update({**client_env(endpoint), **own_keys})
    os.environ["FEAST_BC_CACHE_DIR"] = str(work / "cache")
    uri = f"s3://{new_bucket(endpoint, own_keys)}/catalog"
    stamp = datetime.now(UTC).strftime("%H%M%S")
    repos = {
        "local": init_repo(
            work / "local", project=f"bench_local_{stamp}", online_store="redis", redis_url=args.redis_url
        ),
        "remote": init_repo(
            work / "remote",
            project=f"bench_remote_{stamp}",
            online_store="redis",
            redis_url=args.redis_url,
            catalog=uri,
        ),
    }
    projects = {"local": f"bench_local_{stamp}", "remote": f"bench_remote_{stamp}"}
    counter: Counter = Counter()
    count_requests(counter)
    publish_s = {}
    try:
        for name, repo in repos.items():
            counter.clear()
            publish_s[name] = publish_family(repo, args.entities, args.versions, args.dim)
            publish_requests = dict(counter) if name == "remote" else None
            apply(repo)
        mirror = RemoteCatalog(uri).root
        start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(minutes=5)
        purge(args.redis_url, projects["local"])
        FeatureStore(repo_path=str(repos["local"])).materialize(start, end)  # warm-up: page cache, connections
        latest_key = next(
            k for k in RemoteCatalog(uri).store.list() if k.endswith(".parquet") and f"v{args.versions - 1:04d}" in k
        )
        runs = []
        for r in range(args.repeats):
            for config in CONFIGS:
                if config == "remote-cold":
                    runs.append({"repeat": r, "config": "raw-download", "wall_s": raw_download(uri, latest_key, work)})
                    print(
                        f"raw-download repeat {r}: {runs[-1]['wall_s']:6.2f} s  (boto3 download_file of the latest object)"
                    )
                side = "local" if config == "local" else "remote"
                for project in projects.values():
                    purge(args.redis_url, project)
                if config == "remote-cold":
                    shutil.rmtree(mirror, ignore_errors=True)
                store = FeatureStore(repo_path=str(repos[side]))
                counter.clear()
                load = os.getloadavg()[0]
                t = time.perf_counter()
                store.materialize(start, end)
                wall = time.perf_counter() - t
                rows = args.entities * args.versions
                runs.append(
                    {
                        "repeat": r,
                        "config": config,
                        "wall_s": wall,
                        "version_rows_per_s": rows / wall,
                        "requests": dict(counter),
                        "loadavg_before": load,
                    }
                )
                print(f"{config:12s} repeat {r}: {wall:6.2f} s  {rows / wall:10,.0f} version-rows/s  {dict(counter)}")
        raw = [x["wall_s"] for x in runs if x["config"] == "raw-download"]
        summary = {"raw-download": {"median_wall_s": median(raw)}}
        for config in CONFIGS:
            walls = [x["wall_s"] for x in runs if x["config"] == config]
            summary[config] = {
                "median_wall_s": median(walls),
                "median_version_rows_per_s": args.entities * args.versions / median(walls),
            }
        for config in CONFIGS:
            summary[config]["ratio_to_local"] = summary["local"]["median_wall_s"] / summary[config]["median_wall_s"]
            summary[config]["requests"] = next(x["requests"] for x in runs if x["config"] == config)
        payload = {
            "machine": machine(),
            "server": server_name,
            "entities": args.entities,
            "dim": args.dim,
            "versions": args.versions,
            "repeats": args.repeats,
            "publish_s": publish_s,
            "publish_requests_remote": publish_requests,
            "summary": summary,
            "runs": runs,
            "loadavg_after": os.getloadavg(),
        }
        write_json(Path(args.out), payload)
        plot(payload, Path(args.out).with_suffix(".png"))
        print(json.dumps(summary, indent=2))
    finally:
        for project in projects.values():
            delete_project_keys(args.redis_url, project)
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
