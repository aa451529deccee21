"""`feast-bc` commands that run things against a repo's stores: serve, push, selfcheck."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from feast_bc.cli.arguments import existing_repo, whole_number
from feast_bc.embeddings import list_array_to_matrix
from feast_bc.errors import InvalidInputError
from feast_bc.feature_server import ServeConfig
from feast_bc.manifest import validation_summary
from feast_bc.naming import EMBEDDING_FEATURE
from feast_bc.selfcheck import render, run_selfcheck

_SERVE_DEFAULTS = ServeConfig()


def cmd_serve(args) -> int:
    from feast_bc.feature_server import serve

    existing_repo(args.repo)
    yaml = args.feature_store_yaml or "feature_store.yaml"
    if not (Path(args.repo) / yaml).is_file():
        raise InvalidInputError(f"{args.repo} has no {yaml}: pass the feature repo (`feast-bc init` creates one)")
    try:
        config = ServeConfig(
            host=args.host,
            port=args.port,
            registry_ttl_sec=args.registry_ttl_sec,
            access_log=not args.no_access_log,
            feature_store_yaml=args.feature_store_yaml,
        )
    except ValidationError as exc:
        raise InvalidInputError(f"invalid server settings: {validation_summary(exc)}") from None
    serve(args.repo, config)
    return 0


def cmd_push(args) -> int:
    from feast_bc.pusher import Pusher

    existing_repo(args.repo)
    pusher = Pusher(args.repo, args.family)
    ids, vectors = read_push_file(args.file, pusher.catalog.manifest(args.family).entity.join_key, args.id_column)
    result = pusher.push(ids, vectors, version=args.version)
    pins = (
        "; ".join(f"{w.profile}: v{', v'.join(map(str, w.versions))}" for w in result.written) or "no applied profile"
    )
    print(
        f"pushed {result.rows} entities of {args.family} version {result.version} at {result.event_time.isoformat()} "
        f"(recorded as {result.segment}) into {pins}"
    )
    for line in result.skipped:
        print(f"  skipped {line}")
    return 0


def cmd_selfcheck(args) -> int:
    report = run_selfcheck(
        args.workdir,
        online_store=args.online_store,
        redis_url=args.redis_url,
        entities=args.entities,
        versions=args.versions,
        seed=args.seed,
    )
    print(render(report))
    print(f"report: {Path(args.workdir) / 'report.json'}")
    return 0 if report.ok else 1


def register(sub) -> None:
    """serve, push, selfcheck: Feast's feature server, pushes into every pin, the whole lifecycle checked."""
    s = sub.add_parser(
        "serve", help="Feast's feature server, with the entity values of each read checked (422 in one line)"
    )
    s.add_argument("--repo", default=".", help="feature repo (default: the current directory)")
    s.add_argument("--host", default=_SERVE_DEFAULTS.host)
    s.add_argument("--port", type=whole_number(1), default=_SERVE_DEFAULTS.port)
    s.add_argument("--registry-ttl-sec", type=whole_number(0), default=_SERVE_DEFAULTS.registry_ttl_sec)
    s.add_argument("--no-access-log", action="store_true")
    s.add_argument(
        "-f",
        "--feature-store-yaml",
        help="the profile's yaml, relative to the repo (as `feast -f`; default feature_store.yaml)",
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("selfcheck", help="run publish/apply/materialize/read on generated embeddings and check values")
    s.add_argument("--workdir", default="demo")
    s.add_argument("--online-store", choices=["sqlite", "redis"], default="sqlite")
    s.add_argument("--redis-url", help="redis://host:port/db (with --online-store redis)")
    s.add_argument("--entities", type=int, default=2000)
    s.add_argument("--versions", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_selfcheck)

    s = sub.add_parser(
        "push",
        help="new or changed entities' vectors (from the latest version's model) into every pin, recorded in the catalog",
    )
    s.add_argument("--repo", required=True)
    s.add_argument("--family", required=True)
    s.add_argument(
        "--version", required=True, type=int, help="the version whose model embedded the vectors (the latest)"
    )
    s.add_argument("--file", required=True, help="parquet file: the join key column and `embedding` (list<float>)")
    s.add_argument("--id-column", help="the id column of the file (default: the family's join key)")
    s.set_defaults(func=cmd_push)


def read_push_file(path: str | Path, join_key: str, id_column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a parquet file holding the id column and ``embedding`` (list<float>)."""
    column = id_column or join_key
    try:
        table = pq.read_table(path, columns=[column, EMBEDDING_FEATURE])
    except FileNotFoundError:
        raise InvalidInputError(f"--file {path}: no such file") from None
    except (OSError, KeyError, pa.ArrowInvalid) as exc:
        raise InvalidInputError(
            f"--file {path}: not a parquet file with columns {column!r} and {EMBEDDING_FEATURE!r} ({exc}); "
            "name another id column with --id-column"
        ) from None
    ids = table.column(column).to_numpy(zero_copy_only=False)
    return ids, list_array_to_matrix(table.column(EMBEDDING_FEATURE), what=f"--file {path}: {EMBEDDING_FEATURE}")
