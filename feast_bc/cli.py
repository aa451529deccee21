"""`feast-bc`: the command line of the serving side.

Nothing imported here loads Feast (seconds) or torch: only the subcommands that run Feast
(`selfcheck`, `status` without ``--no-feast``) import it, on use. A refusal
(:class:`feast_bc.errors.FeastBCError`) prints one clear line to stderr and exits with status 2;
nothing is written in that case.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from pydantic import ValidationError

from feast_bc.audit import DEFAULT_SAMPLE
from feast_bc.catalog import Catalog
from feast_bc.errors import FeastBCError, InvalidInputError, UnknownFamilyError
from feast_bc.export import export_version, write_parquet
from feast_bc.feature_server import ServeConfig
from feast_bc.manifest import validation_summary
from feast_bc.publish_gate import GateFile, gate_path, read_gate_file
from feast_bc.registries import repo_registries
from feast_bc.repo import init_repo
from feast_bc.selfcheck import render, run_selfcheck
from feast_bc.status import render_status, repo_status


def _parse_ids(raw: list[str] | None, ids_file: str | None, dtype: str):
    values: list[str] = []
    # Ids never start or end with whitespace (the catalog refuses such ids), so stripping loses nothing.
    for item in raw or []:
        values.extend(v.strip() for v in item.split(",") if v.strip())
    if ids_file:
        try:
            text = Path(ids_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"--ids-file {ids_file}: cannot read it ({exc}); give a UTF-8 file, one id per line"
            ) from None
        values.extend(line.strip() for line in text.splitlines() if line.strip())
    if raw is None and ids_file is None:
        return None
    if not values:
        raise InvalidInputError("--ids/--ids-file given but no ids in it")
    if dtype == "int64":
        try:
            return [int(v) for v in values]
        except ValueError as exc:
            raise InvalidInputError(f"ids must be integers for this family: {exc}") from None
    return values


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
    _existing_repo(args.repo)
    catalog = Catalog.locate(args.repo)
    manifest = catalog.manifest(args.family)
    ids = _parse_ids(args.ids, args.ids_file, manifest.entity.dtype)
    table = export_version(catalog, args.family, args.version, ids=ids)
    out = write_parquet(table, args.out)
    print(
        f"wrote {table.num_rows} rows of {args.family} version {args.version} "
        f"(dim {manifest.version(args.version).dim}, computed from version {manifest.latest_version}) to {out}"
    )
    return 0


def cmd_push(args) -> int:
    from feast_bc.push import Pusher, read_push_file

    _existing_repo(args.repo)
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


def cmd_verify(args) -> int:
    _existing_repo(args.repo)
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
    _existing_repo(args.repo)
    report = repo_status(args.repo, feast=not args.no_feast, sample=args.sample)
    _emit(report, render_status, args.json)
    return 0 if report.ok else 2


def cmd_audit(args) -> int:
    from feast_bc.audit import audit_repo, render_audit  # loads Feast on use

    _existing_repo(args.repo)
    report = audit_repo(args.repo, sample=args.sample)
    _emit(report, render_audit, args.json)
    return 0 if report.ok else 1


def _emit(report, render, as_json: bool) -> None:
    """A report (a pydantic model) as JSON, or as its text rendering."""
    print(json.dumps(report.model_dump(mode="json"), indent=2) if as_json else render(report))


def _existing_repo(repo: str) -> None:
    if not Path(repo).is_dir():
        raise InvalidInputError(f"{repo} is not a directory: pass the feature repo (`feast-bc init` creates one)")


def whole_number(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (a bad value is argparse's one-line usage
    error). Shared by feast-bc's and the training CLI's options."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {minimum} or more, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


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


def cmd_gc(args) -> int:
    catalog = Catalog.locate(args.repo)
    families = [args.family] if args.family else catalog.families()
    verb = "would remove" if args.dry_run else "removed"
    for family in families:
        # Refuses (nothing deleted) on a damaged family, a shared/symlinked artifacts directory, a
        # registry of any profile that still reads what would go or is ahead of the catalog.
        removed = catalog.collect_garbage(family, prune=args.prune, dry_run=args.dry_run)
        for path in removed:
            print(f"{family}: {verb} {path}")
        print(f"{family}: {verb} {len(removed)} file(s)")
    return 0


def cmd_drop_family(args) -> int:
    _existing_repo(args.repo)
    catalog = Catalog.locate(args.repo)
    if not args.undo and catalog.family_state(args.family) == "absent":
        served = {f.family for f in repo_registries(catalog.repo or catalog.root.parent).families}
        if args.family not in served:
            known = ", ".join(catalog.families()) or "none"
            raise UnknownFamilyError(
                f"no family {args.family!r} in {catalog.root} nor in any registry of the repo (families: {known}); "
                "check the name"
            )
    if args.undo:
        catalog.drop_family(args.family, undo=True)
        print(f"{args.family}: no longer dropped; `feast apply` serves it again (then `feast materialize`)")
        return 0
    catalog.drop_family(args.family)
    print(
        f"{args.family}: dropped. The next `feast apply` of each profile deletes its views, FeatureServices and "
        f"online values; its files stay in {catalog.root / args.family} (`feast-bc drop-family --undo` reverts)"
    )
    return 0


def cmd_retire(args) -> int:
    manifest = Catalog.locate(args.repo).retire(args.family, args.version)
    print(
        f"{args.family}: version {args.version} retired; still served: {manifest.served_versions}. "
        "Run `feast apply` to remove its view, FeatureService and online values."
    )
    return 0


def cmd_serving(args) -> int:
    mode = args.mode.replace("-", "_")
    manifest = Catalog.locate(args.repo).set_serving(args.family, args.version, mode)
    modes = {v.version: v.serving for v in manifest.versions if v.retired_at is None}
    print(f"{args.family}: version {args.version} is now served {mode.replace('_', ' ')} ({modes}); run `feast apply`")
    return 0


_SERVE_DEFAULTS = ServeConfig()


def cmd_serve(args) -> int:
    from feast_bc.feature_server import serve

    _existing_repo(args.repo)
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


def parse_pairs(items: list[str] | None, option: str, key=str) -> dict:
    """``NAME=NUMBER`` command-line values (limits, metrics) as a dict; a malformed or non-finite
    one is a one-line error naming ``option``. Shared by `feast-bc gate` and `fit-transform --metric`."""
    out = {}
    for item in items or []:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
            out[key(name.strip())] = number
        except ValueError:
            sep = ""
        if not sep or not name.strip() or not math.isfinite(number):
            raise InvalidInputError(f"{option} expects NAME=NUMBER (finite), got {item!r}")
    return out


def cmd_gate(args) -> int:
    catalog = Catalog.locate(args.repo)
    root = catalog.root
    if not root.parent.is_dir():
        raise InvalidInputError(f"{args.repo} does not exist: create the repo first (`feast-bc init`)")
    if args.family and not args.clear and args.family not in catalog.families():
        known = ", ".join(catalog.families()) or "none yet"
        raise UnknownFamilyError(
            f"no family {args.family!r} in {root} (families: {known}): limits for it would gate nothing; "
            "check the name, or publish the family's first version before gating it"
        )
    found = read_gate_file(root)
    declared = found[0].model_dump(exclude_unset=True) if found else {}
    scope = declared.setdefault("families", {}).setdefault(args.family, {}) if args.family else declared
    changes = {
        "max_alignment_error": args.max_alignment_error,
        "max_drift_since_publish": args.max_drift_since_publish,
        "max_alignment_error_per_version": parse_pairs(args.max_alignment_error_for, "--max-alignment-error-for", int)
        or None,
        "min_metrics": parse_pairs(args.min_metric, "--min-metric") or None,
        "max_metrics": parse_pairs(args.max_metric, "--max-metric") or None,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if args.clear:
        scope.clear()
    scope.update(changes)
    if args.clear or changes:
        families = {f: v for f, v in declared.pop("families", {}).items() if v}
        declared.update({"families": families} if families else {})
        try:
            limits = GateFile.model_validate(declared) if declared else None
        except ValidationError as exc:
            raise InvalidInputError(
                f"invalid publish gate limits: {validation_summary(exc)}; nothing written"
            ) from None
        path = catalog.set_gate_limits(limits)
        shown = f"{catalog.location}/{path.name}" if catalog.location != str(root) else str(path)
        found = (limits, "") if limits else None
        print(f"wrote {shown}" if limits else f"removed {shown}: no publish gate")
    if found:
        print(json.dumps(found[0].model_dump(mode="json", exclude_unset=True), indent=2, sort_keys=True))
    else:
        print(f"no limits declared ({gate_path(root)} absent): every publish passes")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `feast-bc` parser: every subcommand with its options (the defaults of shared settings
    come from where they live: the audit's sample, the server's config)."""
    p = argparse.ArgumentParser(prog="feast-bc", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    _add_repo_commands(sub)
    _add_maintenance_commands(sub)
    _add_serving_commands(sub)
    return p


def _add_repo_commands(sub) -> None:
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


def _add_maintenance_commands(sub) -> None:
    """gc, retire, drop-family, serving, gate: what operators change in a repo."""
    s = sub.add_parser(
        "gc", help="delete orphaned artifacts (e.g. from a killed publish); optionally superseded embeddings"
    )
    s.add_argument("--repo", required=True)
    s.add_argument("--family")
    s.add_argument(
        "--prune",
        action="store_true",
        help="also delete what no served version needs: superseded embeddings, transforms behind retired versions",
    )
    s.add_argument("--dry-run", action="store_true")
    s.set_defaults(func=cmd_gc)

    s = sub.add_parser("retire", help="stop serving one old version (its view and service go at the next apply)")
    s.add_argument("--repo", required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--version", required=True, type=int)
    s.set_defaults(func=cmd_retire)

    s = sub.add_parser(
        "drop-family",
        help="remove a whole family on purpose: the next `feast apply` deletes its views, services and online values",
    )
    s.add_argument("--repo", required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--undo", action="store_true", help="serve the family again")
    s.set_defaults(func=cmd_drop_family)

    s = sub.add_parser(
        "serving", help="serve an old version from stored values again (on-read serving is refused: Feast 0.67)"
    )
    s.add_argument("--repo", required=True)
    s.add_argument("--family", required=True)
    s.add_argument("--version", required=True, type=int)
    s.add_argument("--mode", required=True, choices=["stored", "on-read"])
    s.set_defaults(func=cmd_serving)

    s = sub.add_parser("gate", help="show or set the publish gate's limits (bc_catalog/publish_gate.json)")
    s.add_argument("--repo", required=True, help="feature repo (or catalog directory)")
    s.add_argument("--family", help="set limits for this family only (overriding the repo's, field by field)")
    s.add_argument("--max-alignment-error", type=float, help="relative alignment error allowed to every live version")
    s.add_argument("--max-alignment-error-for", nargs="+", metavar="VERSION=LIMIT", help="per target version")
    s.add_argument(
        "--max-drift-since-publish",
        type=float,
        help="drift allowed of every served version from its values at its own publish (feast_bc.drift)",
    )
    s.add_argument("--min-metric", nargs="+", metavar="NAME=VALUE", help="e.g. val_recall@50=0.1")
    s.add_argument("--max-metric", nargs="+", metavar="NAME=VALUE")
    s.add_argument("--clear", action="store_true", help="drop the limits of the scope (--family, or all) first")
    s.set_defaults(func=cmd_gate)


def _add_serving_commands(sub) -> None:
    """serve, selfcheck: running Feast's feature server, checking the whole lifecycle."""
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FeastBCError as exc:
        print(f"feast-bc: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a file that cannot be removed: one line, not a traceback
        print(f"feast-bc: error: {exc.strerror or exc}: {exc.filename or ''} -- nothing was changed", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
