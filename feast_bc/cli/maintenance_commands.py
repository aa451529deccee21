"""`feast-bc` commands that change what a repo serves: gc, retire, drop-family, serving, gate."""

from __future__ import annotations

import json

from pydantic import ValidationError

from feast_bc.catalog import Catalog
from feast_bc.cli.arguments import existing_repo, parse_pairs
from feast_bc.errors import InvalidInputError, UnknownFamilyError
from feast_bc.manifest import validation_summary
from feast_bc.publish_gate import GateFile, gate_path, read_gate_file
from feast_bc.registries import repo_registries


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


def cmd_retire(args) -> int:
    manifest = Catalog.locate(args.repo).retire(args.family, args.version)
    print(
        f"{args.family}: version {args.version} retired; still served: {manifest.served_versions}. "
        "Run `feast apply` to remove its view, FeatureService and online values."
    )
    return 0


def cmd_drop_family(args) -> int:
    existing_repo(args.repo)
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


def cmd_serving(args) -> int:
    mode = args.mode.replace("-", "_")
    manifest = Catalog.locate(args.repo).set_serving(args.family, args.version, mode)
    modes = {v.version: v.serving for v in manifest.versions if v.retired_at is None}
    print(f"{args.family}: version {args.version} is now served {mode.replace('_', ' ')} ({modes}); run `feast apply`")
    return 0


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


def register(sub) -> None:
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
