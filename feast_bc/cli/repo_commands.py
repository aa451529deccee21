"""`feast-bc` commands that create a repo and read what it holds: init, export, verify, status, audit."""

from __future__ import annotations

import sys
from pathlib import Path

from feast_bc.audit import DEFAULT_SAMPLE
from feast_bc.catalog import Catalog
from feast_bc.cli.arguments import emit, existing_repo, parse_ids, whole_number
from feast_bc.errors import InvalidInputError
from feast_bc.export import export_version, write_parquet
from feast_bc.repo import init_repo
from feast_bc.status import repo_status
from feast_bc.status_render import render_status


def cmd_init(args) -> int:
    repo = init_repo(
        args.repo,
        project=args.project,
        online_store=args.online_store,
        redis_url=args.redis_url,
        engine=args.engine,
        catalog=args.catalog,
        overwrite=args.force,
    )
    print(f"feature repo ready at {repo} (online store: {args.online_store}); publish a family, then `feast apply`")
    return 0


def cmd_export(args) -> int:
    if Path(args.out).is_dir():
        raise InvalidInputError(
            f"--out {args.out} is a directory; name the parquet file to write, e.g. {Path(args.out) / 'v.parquet'}"
        )
    existing_repo(args.repo)
    catalog = Catalog.locate(args.repo)
    manifest = catalog.manifest(args.family)
    ids = parse_ids(args.ids, args.ids_file, manifest.entity.dtype)
    table = export_version(catalog, args.family, args.version, ids=ids)
    out = write_parquet(table, args.out)
    print(
        f"wrote {table.num_rows} rows of {args.family} version {args.version} "
        f"(dim {manifest.version(args.version).dim}, computed from version {manifest.latest_version}) to {out}"
    )
    return 0


def cmd_verify(args) -> int:
    existing_repo(args.repo)
    catalog = Catalog.locate(args.repo)
    families = [args.family] if args.family else catalog.families()
    for note in catalog.ignored_entries():
        print(f"note: {note}")
    if not families:
        print(f"no embedding families in {catalog.location}")
    failed = []
    for family in families:
        manifest, errors = catalog.inspect(family)
        if errors:
            failed.append(family)
            for exc in errors:
                print(f"feast-bc: error: {exc}", file=sys.stderr)
            continue
        gone = manifest.pruned_versions()
        print(
            f"{family}: versions 0..{manifest.latest_version} verified (checksums, transforms decoded, every chain "
            f"composed, latest embeddings layout)"
            + (f"; retired and pruned, not computable any more: {gone}" if gone else "")
        )
    for family in catalog.dropped_families():
        print(f"{family}: dropped (`feast-bc drop-family`), not verified")
    if failed:
        print(f"feast-bc: verify failed for {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


def cmd_status(args) -> int:
    existing_repo(args.repo)
    report = repo_status(args.repo, feast=not args.no_feast, sample=args.sample)
    emit(report, render_status, args.json)
    return 0 if report.ok else 2


def cmd_audit(args) -> int:
    from feast_bc.audit import audit_repo, render_audit  # loads Feast on use

    existing_repo(args.repo)
    report = audit_repo(args.repo, sample=args.sample)
    emit(report, render_audit, args.json)
    return 0 if report.ok else 1


def register(sub) -> None:
    """init, export, verify, status, audit: creating a repo and reading what it holds."""
    s = sub.add_parser("init", help="create a feast_bc feature repo")
    s.add_argument("repo")
    s.add_argument("--project", default="feast_bc")
    s.add_argument("--online-store", choices=["sqlite", "redis"], default="sqlite")
    s.add_argument("--redis-url", help="redis://host:port/db written into the yaml (default: $FEAST_BC_REDIS)")
    s.add_argument(
        "--engine",
        choices=["bc", "local", "ray"],
        default="bc",
        help="bulk feast_bc engine, Feast's stock local engine, or Feast's Ray engine",
    )
    s.add_argument(
        "--catalog", help="where the catalog lives, relative to the repo (default: bc_catalog); written into the yaml"
    )
    s.add_argument("--force", action="store_true", help="overwrite repo files that differ from what init writes")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("export", help="write one version's embeddings (all ids or some) to parquet")
    s.add_argument("--repo", required=True, help="feature repo (or catalog directory)")
    s.add_argument("--family", required=True)
    s.add_argument("--version", required=True, type=int)
    s.add_argument("--out", required=True)
    s.add_argument("--ids", nargs="+", help="entity ids (space or comma separated; ids containing ',' need --ids-file)")
    s.add_argument("--ids-file", help="file with one id per line (UTF-8)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser(
        "verify",
        help="check every artifact's checksum, decode every transform, compose every chain, check the latest parquet",
    )
    s.add_argument("--repo", required=True)
    s.add_argument("--family")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("status", help="versions, dims, checksums, materialization of a repo")
    s.add_argument("--repo", required=True)
    s.add_argument("--json", action="store_true")
    s.add_argument("--no-feast", action="store_true", help="catalog only; skip reading the Feast registry")
    s.add_argument(
        "--sample",
        type=whole_number(0),
        default=DEFAULT_SAMPLE,
        help=f"ids read per pinned version through Feast and compared with the catalog (0: skip; default {DEFAULT_SAMPLE})",
    )
    s.set_defaults(func=cmd_status)

    s = sub.add_parser(
        "audit",
        help="read a sample of ids of every pinned version through Feast (every applied profile) and compare "
        "with `export`; exit 1 on any finding",
    )
    s.add_argument("--repo", required=True)
    s.add_argument(
        "--sample",
        type=whole_number(0),
        default=DEFAULT_SAMPLE,
        help=f"ids per pinned version (default {DEFAULT_SAMPLE})",
    )
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_audit)
