"""Operators' changes to published families: retire, serving mode, drop-family, garbage collection.

Each change holds the family's lock, reads the current manifest and replaces it atomically (or
writes a tombstone); none of them writes artifacts. Garbage collection deletes only what it can
prove unused: the family must verify, its artifacts directory must be its own, and every Feast
registry of the repo is read first (:mod:`feast_bc.registries`).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from feast_bc.atomic import atomic_write_bytes, fsync_dir
from feast_bc.catalog.layout import ARTIFACTS_DIRNAME, CATALOG_DIRNAME, tombstone_path
from feast_bc.catalog.push_log import obsolete_segments
from feast_bc.catalog.reader import CatalogReader
from feast_bc.errors import (
    ArtifactError,
    CatalogRollbackError,
    FeastBCError,
    InvalidInputError,
    RegistryLagError,
    UnsafeDeletionError,
)
from feast_bc.manifest import MANIFEST_FILENAME, FamilyManifest, VersionRecord
from feast_bc.registries import PROFILE_GLOB, RepoRegistries, repo_registries, rollback_problem

SERVING_MODES = ("stored",)

#: Why a version cannot be served on read (said by `feast-bc serving --mode on-read`, `feast apply`
#: and `feast-bc status` for a manifest that still asks for it).
ON_READ_REFUSED = (
    "Feast 0.67 cannot serve an on-read version correctly: its get_online_features keeps the latest "
    "view's `embedding` (the on-read transform's input) beside the pin's own `embedding`, so the feature "
    "server's JSON and the response proto carry two columns of one name and the first holds the LATEST "
    "version (docs/RELIABILITY.md section 15, case 1)"
)

logger = logging.getLogger(__name__)


def on_read_problem(family: str, versions: list[int]) -> str:
    """The one line for a manifest that still asks for on-read versions (refused: :data:`ON_READ_REFUSED`)."""
    repair = "; ".join(f"`feast-bc serving --repo . --family {family} --version {j} --mode stored`" for j in versions)
    return (
        f"family {family!r}: version(s) {versions} are set to be served on read. {ON_READ_REFUSED}. "
        f"Serve them stored ({repair}), then `feast apply` and `feast materialize`"
    )


class Maintenance:
    """The operator's changes to one catalog (what ``Catalog.retire``, ``set_serving``,
    ``drop_family`` and ``collect_garbage`` run)."""

    def __init__(self, catalog: CatalogReader):
        self.catalog = catalog

    # ------------------------------------------------------------------------------ versions
    def retire(self, family: str, version: int) -> FamilyManifest:
        """Stop serving ``version``: after `feast apply` its view, service and online values are gone.

        Its backward transform stays in the chain (older versions still need it). Retiring the
        latest version is refused; retiring twice is a no-op.
        """
        with self.catalog.lock(family):
            manifest = self.catalog.manifest(family)
            rec = manifest.version(version)
            if rec.retired_at is not None:
                return manifest
            if version == manifest.latest_version:
                raise InvalidInputError(f"family {family!r}: the latest version {version} cannot be retired")
            return self._replace_version(manifest, rec.model_copy(update={"retired_at": datetime.now(UTC)}))

    def set_serving(self, family: str, version: int, mode: str) -> FamilyManifest:
        """Serve ``version`` from stored values ('stored'): what a manifest that still asks for
        'on_read' (computed at request time, offered before Feast's duplicate column was found) is
        switched back with; the change takes effect at the next `feast apply` + `feast materialize`.

        'on_read' itself is refused (:data:`ON_READ_REFUSED`); a version nobody reads is retired
        instead (:meth:`retire`), which frees its online storage.
        """
        if mode == "on_read":
            raise InvalidInputError(
                f"{ON_READ_REFUSED}. Keep version {version} of {family!r} stored, or retire it if nobody reads it "
                f"(`feast-bc retire --family {family} --version {version}`) to free its online storage"
            )
        if mode not in SERVING_MODES:
            raise InvalidInputError(f"serving mode must be 'stored', not {mode!r}")
        with self.catalog.lock(family):
            manifest = self.catalog.manifest(family)
            rec = manifest.version(version)
            if rec.serving == mode:
                return manifest
            return self._replace_version(manifest, rec.model_copy(update={"serving": mode}))

    def _replace_version(self, manifest: FamilyManifest, rec: VersionRecord) -> FamilyManifest:
        """Write ``manifest`` with ``rec`` in place of its version (the caller holds the lock)."""
        versions = list(manifest.versions)
        versions[rec.version] = rec
        updated = FamilyManifest(family=manifest.family, entity=manifest.entity, versions=versions)
        atomic_write_bytes(self.catalog.family_dir(manifest.family) / MANIFEST_FILENAME, updated.to_json_bytes())
        return updated

    # ------------------------------------------------------------------------------ families
    def drop_family(self, family: str) -> dict:
        """Remove ``family`` from serving on purpose: the next `feast apply` deletes its views,
        FeatureServices and online values instead of refusing. Its files are kept (delete the
        directory by hand once no registry serves it any more); :meth:`undo_drop` brings it back.
        Returns the tombstone."""
        family_dir = self.catalog.family_dir(family)
        with self.catalog.lock(family):
            state = self.catalog.family_state(family)
            if state == "dropped":
                return self.catalog.dropped_families()[family]
            checksum = None
            if (family_dir / MANIFEST_FILENAME).is_file():
                try:
                    checksum = self.catalog.manifest(family).checksum
                except FeastBCError as exc:
                    logger.warning(
                        "dropping %s: its manifest is unreadable (%s); the tombstone records no checksum", family, exc
                    )
            record = {
                "family": family,
                "dropped_at": datetime.now(UTC).isoformat(),
                "manifest_sha256": checksum,
                "state_when_dropped": state,
            }
            atomic_write_bytes(
                tombstone_path(self.catalog.root, family), (json.dumps(record, indent=2) + "\n").encode()
            )
            return record

    def undo_drop(self, family: str) -> None:
        """Serve a dropped family again (a no-op for a family that is not dropped)."""
        tombstone = tombstone_path(self.catalog.root, family)
        with self.catalog.lock(family):
            if tombstone.exists():
                tombstone.unlink()
                fsync_dir(tombstone.parent)

    # ------------------------------------------------------------------------------ garbage
    def collect_garbage(
        self, family: str, *, prune: bool = False, dry_run: bool = False, registries: RepoRegistries | None = None
    ) -> list[Path]:
        """Delete orphaned artifacts and, with ``prune``, artifacts no served version needs any more.

        Prunable: embeddings of versions older than the latest and the transforms B_v of which every
        older version is retired. Nothing is deleted unless it is provably unused:

        * the family must pass every check of :meth:`~CatalogReader.inspect` -- on a damaged family
          the files gc would remove may be the only data a missing artifact can be rebuilt from;
        * the family's artifacts directory must be its own (no symlinked or shared directory);
        * every registry of the repo (all ``feature_store*.yaml`` profiles, see
          :mod:`feast_bc.registries`) is read: a file any of them still reads is kept; ``prune``
          is refused until every registry serves exactly the catalog's versions and latest, and
          everything is refused while a registry is *ahead* of the catalog (a restored manifest).

        The manifest is rewritten before any referenced file is deleted, so a crash in between
        leaves at worst an orphan, never a manifest pointing at a missing file. Returns what was
        (or, with ``dry_run``, would be) removed.
        """
        family_dir = self.catalog.family_dir(family)
        with self.catalog.lock(family):
            manifest, errors = self.catalog.inspect(family)
            if manifest is None:
                raise errors[0]
            if errors:
                raise UnsafeDeletionError(
                    f"family {family!r} does not verify ({errors[0]}); gc deletes nothing from a damaged family: "
                    "the files it would remove may be the only data the damaged or missing artifact can be rebuilt "
                    "from. Restore the artifact (or publish a new version), then run gc again"
                )
            art_dir = self._owned_artifacts_dir(family)
            if registries is None:
                registries = self._repo_registries()
            protected, temp_only = self._registry_guard(manifest, registries, prune)

            def deletable(path: Path) -> bool:
                if path.name.endswith(".tmp") and path.name.startswith("."):
                    return True  # a temp file is never referenced by anything
                if temp_only:
                    return False
                if path.resolve() in protected:
                    logger.info("gc keeps %s: a Feast registry of the repo still reads it", path)
                    return False
                return True

            doomed = [p for p in self.catalog.orphans(family, manifest) if deletable(p)]
            # pushes folded into a later publish, unless a registry still serves their version as its latest
            served_latest = {manifest.latest_version} | {
                rec.version
                for rec in manifest.versions
                if rec.embeddings is not None
                and self.catalog.artifact_path(family, rec.embeddings).resolve() in protected
            }
            doomed += [
                p for p in obsolete_segments(family_dir, served_latest) if temp_only is False or p.name.endswith(".tmp")
            ]
            if prune:
                pruned, dropped = self._pruned(manifest, deletable, art_dir)
                if dropped:
                    doomed += dropped
                    if not dry_run:
                        atomic_write_bytes(family_dir / MANIFEST_FILENAME, pruned.to_json_bytes())
            if not dry_run:
                stuck = []
                for path in doomed:
                    try:
                        path.unlink()
                    except FileNotFoundError:
                        pass
                    except OSError as exc:  # the rest are still removed: each is unreferenced on its own
                        stuck.append(f"{path} ({exc.strerror or exc})")
                if stuck:
                    raise ArtifactError(
                        f"family {family!r}: gc removed {len(doomed) - len(stuck)} of {len(doomed)} unused files but "
                        f"could not remove {', '.join(stuck)}. Nothing references them (the manifest is consistent); "
                        "fix the permissions or attributes (e.g. `chattr -i`), then run gc again, or delete them by hand"
                    )
            return doomed

    def _pruned(self, manifest: FamilyManifest, deletable, art_dir: Path) -> tuple[FamilyManifest, list[Path]]:
        """The manifest without what no served version needs, and the files that leaves unreferenced."""
        family = manifest.family
        versions, dropped = [], []
        for i, rec in enumerate(manifest.versions):
            update = {}
            if rec.embeddings is not None and i < manifest.latest_version:
                path = self.catalog.artifact_path(family, rec.embeddings)
                if deletable(path):
                    update["embeddings"] = None
                    dropped.append(path)
            if rec.reference is not None and rec.retired_at is not None:  # nobody reads it: no drift to show
                update["reference"] = None
                dropped.append(self.catalog.artifact_path(family, rec.reference))
            if rec.transform is not None and all(r.retired_at is not None for r in manifest.versions[:i]):
                update["transform"] = None
                dropped.append(self.catalog.artifact_path(family, rec.transform))
            versions.append(rec.model_copy(update=update) if update else rec)
        for path in dropped:
            if path.resolve().parent != art_dir:
                raise UnsafeDeletionError(
                    f"family {family!r}: {path} is not inside the family's own artifacts directory; "
                    "gc --prune deletes nothing"
                )
        return (
            FamilyManifest(family=family, entity=manifest.entity, versions=versions) if dropped else manifest
        ), dropped

    def _registry_guard(
        self, manifest: FamilyManifest, registries: RepoRegistries | None, prune: bool
    ) -> tuple[set[Path], bool]:
        """(files some registry reads, whether only temp files may go); raises where gc must not run."""
        if registries is None:
            return set(), False
        family = manifest.family
        regs = registries.of(family)
        for reg in regs:
            problem = rollback_problem(reg, manifest)
            if problem:
                raise CatalogRollbackError(problem + "; gc deletes nothing meanwhile")
        temp_only = False
        if registries.unreadable:
            if prune:
                raise UnsafeDeletionError(
                    f"family {family!r}: gc --prune needs to read every registry of the repo; "
                    + "; ".join(registries.unreadable)
                )
            temp_only = True
            logger.warning("gc keeps every artifact of %s: %s", family, "; ".join(registries.unreadable))
        if prune:
            served = set(manifest.served_versions)
            lagging = [r for r in regs if r.latest != manifest.latest_version or set(r.versions) != served]
            if lagging:
                details = "; ".join(
                    f"{r.profile.name} registers versions {sorted(r.versions)} (latest {r.latest}) -- run "
                    f"`{r.profile.feast_args()} apply`"
                    for r in lagging
                )
                raise RegistryLagError(
                    f"family {family!r}: the catalog serves versions {sorted(served)} (latest "
                    f"{manifest.latest_version}) but {details}. gc --prune deletes nothing until every "
                    "registry of the repo matches the catalog (a registered version still reads what "
                    "--prune would delete)"
                )
        return registries.sources(), temp_only

    def _owned_artifacts_dir(self, family: str) -> Path:
        """The family's own artifacts directory, resolved; refuses one shared with anything else."""
        family_dir = self.catalog.family_dir(family)
        art_dir = family_dir / ARTIFACTS_DIRNAME
        real_family = family_dir.resolve()
        if family_dir.is_symlink() or real_family != self.catalog.root.resolve() / family:
            raise UnsafeDeletionError(
                f"family {family!r}: {family_dir} is a symlink to {real_family}; gc deletes nothing in a "
                "directory it cannot prove belongs to this family alone"
            )
        if art_dir.is_symlink() or (art_dir.exists() and art_dir.resolve() != real_family / ARTIFACTS_DIRNAME):
            raise UnsafeDeletionError(
                f"family {family!r}: {art_dir} is a symlink to {art_dir.resolve()} (shared or moved storage); gc "
                "deletes nothing there because files other families or copies rely on would look unreferenced. "
                "Give the family its own artifacts directory, or clean the shared one by hand"
            )
        return real_family / ARTIFACTS_DIRNAME

    def _repo_registries(self) -> RepoRegistries | None:
        """The registries of the Feast repo this catalog belongs to (None if it is not in one)."""
        root = self.catalog.root
        if self.catalog.repo is not None:
            return repo_registries(self.catalog.repo)
        if root.name != CATALOG_DIRNAME or not any(root.parent.glob(PROFILE_GLOB)):
            logger.info("%s is not the catalog of a Feast repo: gc reads no registry", root)
            return None
        return repo_registries(root.parent)
