"""The bulk writers' reply reader (issue 26): feast_bc's hand-written RESP reader vs. hiredis.

Is `feast_bc.resp.RawReplies` (replies read straight off the socket, runs of identical replies
compared in C by bytes equality) worth keeping now that redis-py reads with the ``hiredis`` parser
(installed with ``feast[redis]``)? The commands stay as the writers build them (whole chunks of
RESP bytes); only the reader changes: ``HiredisReplies`` below answers the same three questions
(``integers``, ``integer``, ``field_arrays``) by feeding the socket's bytes to ``hiredis.Reader``
and taking one parsed reply per ``gets()`` -- what a writer built on hiredis would do.

One family ``item_embedding`` of ``--versions`` versions at dim ``--dim`` (``--entities`` ids in the
latest: :func:`materialize_family.publish_family`) is applied to the local Redis; then, per repeat
and reader (in random order), two fused ``store.materialize`` runs of every view:

* ``fresh``    -- into an empty project (the key probe: one EXISTS per chunk, then HSETs: integer
  replies only);
* ``rewrite``  -- every hash found with its ``_ts`` fields stamped 2001-01-01 (one HMGET per entity,
  an array reply of one field per view, then HSETs), as after a new version.

After every run 64 ids of every pin are read through Feast and compared with the numpy chain.

    python benchmarks/resp_reader.py --entities 200000 --dim 256 --versions 5 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from common import check_pins, delete_project_keys, machine, median, write_json  # noqa: E402
from materialize_family import FAMILY, Target, publish_family  # noqa: E402


class HiredisReplies:
    """:class:`feast_bc.resp.RawReplies`'s interface on ``hiredis.Reader``: one parsed reply per ``gets()``."""

    def __init__(self, sock, recv_bytes: int = 1 << 20):
        import hiredis

        self.sock, self.recv_bytes = sock, recv_bytes
        self.reader = hiredis.Reader()
        self._buffered = 0  # bytes fed but not yet known to be consumed (0 when gets() returned False)

    def _next(self):
        from redis.exceptions import ResponseError

        while True:
            reply = self.reader.gets()
            if reply is not False:
                if isinstance(reply, Exception):
                    raise ResponseError(str(reply))
                return reply
            chunk = self.sock.recv(self.recv_bytes)
            if not chunk:
                raise ConnectionError("Redis closed the connection while replies were pending")
            self.reader.feed(chunk)

    @property
    def idle(self) -> bool:
        return self.reader.gets() is False  # nothing complete left (a partial reply would show up later)

    def integers(self, count: int) -> None:
        for _ in range(count):
            if not isinstance(self._next(), int):
                raise ValueError("expected an integer reply")

    def integer(self) -> int:
        reply = self._next()
        if not isinstance(reply, int):
            raise ValueError("expected an integer reply")
        return reply

    def field_arrays(self, count: int, fields: int) -> list[list[tuple[bytes | None, int]]]:
        out: list[list[tuple[bytes | None, int]]] = [[] for _ in range(fields)]
        for _ in range(count):
            reply = self._next()
            if not isinstance(reply, list) or len(reply) != fields:
                raise ValueError(f"expected a {fields}-element array")
            for runs, value in zip(out, reply, strict=True):
                if runs and runs[-1][0] == value:
                    runs[-1] = (value, runs[-1][1] + 1)
                else:
                    runs.append((value, 1))
        return out


def _check(store, catalog, manifest) -> int:
    ids = np.arange(0, manifest.latest.embeddings.rows, max(1, manifest.latest.embeddings.rows // 64))[:64]
    _, z = catalog.latest_embeddings(FAMILY, ids=ids, manifest=manifest)
    return check_pins(store, catalog, manifest, FAMILY, "item_id", ids, z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--versions", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "resp_reader.json"))
    args = ap.parse_args()

    import feast_bc.resp as resp
    from feast_bc import Catalog
    from feast_bc.repo import apply, init_repo

    readers = {"feast_bc RawReplies": resp.RawReplies, "hiredis.Reader": HiredisReplies}
    work = Path(tempfile.mkdtemp(prefix="feast-bc-resp-bench-"))
    project = f"respbench{os.getpid()}"
    try:
        repo = init_repo(work / "repo", project=project, online_store="redis", redis_url=args.redis_url)
        publish_family(repo, args.entities, args.versions, args.dim)
        store = apply(repo)
        catalog = Catalog.for_repo(repo)
        manifest = catalog.manifest(FAMILY)
        views = [f"{FAMILY}_bc{v}" for v in manifest.served_versions]
        rows = args.entities * len(views)
        window = (datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(seconds=1))
        target = Target("redis", [args.redis_url], "", cluster=False)
        store.materialize(*window)  # warm: page cache, connections
        runs: dict[str, dict[str, list[float]]] = {name: {"fresh": [], "rewrite": []} for name in readers}
        checked = 0
        for repeat in range(args.repeats):
            order = list(readers)
            random.Random(repeat).shuffle(order)
            for name in order:
                resp.RawReplies = readers[name]  # what resp.Pipeline reads replies with
                delete_project_keys(args.redis_url, project)
                t = time.perf_counter()
                store.materialize(*window)
                runs[name]["fresh"].append(time.perf_counter() - t)
                checked += _check(store, catalog, manifest)
                target.age_timestamps(project, views)
                t = time.perf_counter()
                store.materialize(*window)
                runs[name]["rewrite"].append(time.perf_counter() - t)
                checked += _check(store, catalog, manifest)
            print(f"repeat {repeat + 1}/{args.repeats} done", flush=True)
        resp.RawReplies = readers["feast_bc RawReplies"]
        table = {
            name: {
                case: {"median_s": median(t), "version_rows_per_s": rows / median(t), "runs_s": t}
                for case, t in cases.items()
            }
            for name, cases in runs.items()
        }
        raw, hi = table["feast_bc RawReplies"], table["hiredis.Reader"]
        result = {
            "benchmark": "resp_reader",
            "args": vars(args),
            "machine": machine(),
            "load_avg": os.getloadavg(),
            "views": len(views),
            "readers": table,
            "raw_vs_hiredis": {c: raw[c]["version_rows_per_s"] / hi[c]["version_rows_per_s"] for c in raw},
            "values_checked": checked,
        }
        write_json(Path(args.out), result)
        for name, cases in table.items():
            print(f"{name:22s} " + "  ".join(f"{c} {r['version_rows_per_s']:>10,.0f}/s" for c, r in cases.items()))
        print("RawReplies / hiredis:", {c: round(x, 3) for c, x in result["raw_vs_hiredis"].items()})
    finally:
        delete_project_keys(args.redis_url, project)


if __name__ == "__main__":
    main()
