"""Garbage collection of a catalog family: orphans, folded-in pushes and (``prune``) what no served
version needs, deleted only when provably unused.

The family must verify, its artifacts directory must be its own, and every Feast registry of the
repo is read first (:mod:`feast_bc.registries`): a file a registry still reads stays, and pruning
waits until every registry serves exactly the catalog's versions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from feast_bc.atomic import atomic_write_bytes
from feast_bc.catalog.layout import ARTIFACTS_DIRNAME, CATALOG_DIRNAME
from feast_bc.catalog.push_log import obsolete_segments
from feast_bc.catalog.reader import CatalogReader
from feast_bc.errors import ArtifactError, CatalogRollbackError, RegistryLagError, UnsafeDeletionError
from feast_bc.manifest import MANIFEST_FILENAME, FamilyManifest
from feast_bc.registries import PROFILE_GLOB, RepoRegistries, repo_registries, rollback_problem

logger = logging.getLogger(__name__)


class GarbageCollector:
    """What ``Catalog.collect_garbage`` runs (see the module docstring)."""

    def __init__(self, catalog: CatalogReader):
        self.catalog = catalog

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
