"""The catalog: a directory holding every embedding family's manifest and artifacts.

Layout (inside a Feast repo the catalog is ``<repo>/bc_catalog``)::

    <catalog>/<family>/manifest.json                        # FamilyManifest, sealed with its sha256
    <catalog>/<family>/artifacts/v0003-embeddings-<sha16>.parquet
    <catalog>/<family>/artifacts/v0003-transform-<sha16>.safetensors
    <catalog>/.locks/<family>.lock                          # serializes writers of one family
    <catalog>/.dropped/<family>.json                        # tombstone: family removed on purpose

Publishing is the only writer. It validates everything in memory first, then writes new
content-addressed artifacts, then replaces the manifest atomically: a crash at any point leaves
the previous manifest in force and at worst some unreferenced files (reported by
:meth:`Catalog.orphans`). Readers verify size and sha256 of every artifact they use.

A family directory without its manifest is never treated as "no family": serving it would mean
deleting its Feast views and online values, so every reader refuses it with a
:class:`~feast_bc.errors.ManifestError` until the manifest is restored or the family is dropped on
purpose (:meth:`Catalog.drop_family`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from feast_bc.artifacts import load_transform, verify_file, write_transform
from feast_bc.atomic import atomic_write_bytes, exclusive_lock, fsync_dir
from feast_bc.embeddings import (
    check_embeddings_file,
    embeddings_table,
    read_embeddings,
    validate_ids,
    validate_vectors,
    write_embeddings,
)
from feast_bc.errors import (
    ArtifactError,
    CatalogRollbackError,
    DimensionMismatchError,
    FeastBCError,
    InvalidInputError,
    InvalidNameError,
    ManifestError,
    RegistryLagError,
    RetiredVersionError,
    UnknownFamilyError,
    UnsafeDeletionError,
    VersionConflictError,
)
from feast_bc.manifest import (
    MANIFEST_FILENAME,
    MAX_MANIFEST_BYTES,
    EmbeddingsArtifact,
    EntitySpec,
    FamilyManifest,
    TransformArtifact,
    VersionRecord,
    validation_summary,
)
from feast_bc.naming import family_name_problem
from feast_bc.transforms import BackwardTransform, LinearTransform, compose

CATALOG_DIRNAME = "bc_catalog"
ARTIFACTS_DIRNAME = "artifacts"
LOCKS_DIRNAME = ".locks"
DROPPED_DIRNAME = ".dropped"
_COMPOSED_CACHE_SIZE = 64

logger = logging.getLogger(__name__)


class Catalog:
    """Families of versioned embeddings stored under one directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root).absolute()

    @classmethod
    def for_repo(cls, repo_path: str | Path) -> "Catalog":
        return cls(Path(repo_path) / CATALOG_DIRNAME)

    @classmethod
    def locate(cls, where: "str | Path | Catalog") -> "Catalog":
        """A catalog given either a feature repo (uses its ``bc_catalog/``) or a catalog directory."""
        if isinstance(where, Catalog):
            return where
        path = Path(where)
        looks_like_catalog = (
            path.name == CATALOG_DIRNAME
            or any(path.glob(f"*/{MANIFEST_FILENAME}"))
            or (path / LOCKS_DIRNAME).is_dir()
            or (path / DROPPED_DIRNAME).is_dir()
        )
        return cls(path) if looks_like_catalog else cls.for_repo(path)

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    # ------------------------------------------------------------------------------ reading
    def family_dir(self, family: str) -> Path:
        problem = family_name_problem(family)
        if problem:
            raise InvalidNameError(problem)
        return self.root / family

    def _lock(self, family: str):
        """The writers' lock of one family. It lives outside the family directory so that a refused
        first publish leaves no directory behind."""
        self.family_dir(family)  # validates the name
        return exclusive_lock(self.root / LOCKS_DIRNAME / f"{family}.lock")

    def family_state(self, family: str) -> str:
        """'published' (manifest present), 'absent' (no directory, or one holding nothing but a lock
        or an empty artifacts dir: never published), 'missing_manifest' (files but no manifest) or
        'dropped' (removed on purpose, see :meth:`drop_family`)."""
        if family in self.dropped_families():
            return "dropped"
        family_dir = self.family_dir(family)
        if (family_dir / MANIFEST_FILENAME).exists() or (family_dir / MANIFEST_FILENAME).is_symlink():
            return "published"
        if not family_dir.is_dir():
            return "absent"
        return "absent" if not self._family_files(family_dir) else "missing_manifest"

    @staticmethod
    def _family_files(family_dir: Path) -> list[Path]:
        """What a family directory holds besides a legacy lock file and an empty artifacts dir.

        A symlinked artifacts directory is not looked into: what it holds may belong to other
        families sharing it, so it says nothing about this one.
        """
        found = []
        for entry in family_dir.iterdir():
            if entry.name == ".lock":
                continue
            if entry.name == ARTIFACTS_DIRNAME and entry.is_symlink():
                continue
            if entry.name == ARTIFACTS_DIRNAME and entry.is_dir():
                found += list(entry.iterdir())
                continue
            found.append(entry)
        return found

    def families(self) -> list[str]:
        """Every family of the catalog, including one whose directory lost its manifest (reading it
        raises a :class:`ManifestError`, never "no such family"); dropped families excluded."""
        if not self.root.is_dir():
            return []
        out = []
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not path.is_dir():
                continue
            if family_name_problem(path.name):
                logger.warning("ignoring %s in the catalog: %s", path, family_name_problem(path.name))
                continue
            state = self.family_state(path.name)
            if state in ("published", "missing_manifest"):
                out.append(path.name)
        return out

    def ignored_entries(self) -> list[str]:
        """Directories in the catalog that cannot be families (invalid names): reported, never served."""
        if not self.root.is_dir():
            return []
        return [
            f"{p} is not a family directory: {family_name_problem(p.name)}"
            for p in sorted(self.root.iterdir())
            if not p.name.startswith(".") and p.is_dir() and family_name_problem(p.name)
        ]

    def has_family(self, family: str) -> bool:
        return (self.family_dir(family) / MANIFEST_FILENAME).is_file()

    def manifest(self, family: str) -> FamilyManifest:
        path = self.family_dir(family) / MANIFEST_FILENAME
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_MANIFEST_BYTES + 1)
        except FileNotFoundError:
            if path.is_symlink():
                raise ManifestError(
                    f"manifest of family {family!r} ({path}) is a symlink to {os.readlink(path)}, which does not exist"
                ) from None
            raise self._no_manifest_error(family, path) from None
        except OSError as exc:
            raise ManifestError(f"manifest of family {family!r} ({path}) cannot be read: {exc}") from None
        manifest = FamilyManifest.from_json_bytes(data, origin=f"manifest of family {family!r} ({path})")
        if manifest.family != family:
            raise ManifestError(f"{path} describes family {manifest.family!r}, not {family!r}")
        return manifest

    def _no_manifest_error(self, family: str, path: Path) -> FeastBCError:
        state = self.family_state(family)
        if state == "dropped":
            return UnknownFamilyError(f"family {family!r} was dropped from {self.root} (`feast-bc drop-family`)")
        if state == "missing_manifest":
            files = self._family_files(self.family_dir(family))
            return ManifestError(
                f"family {family!r}: {path} is missing although {path.parent} still holds {len(files)} of its "
                "files (manifest deleted, renamed or not synced). Nothing of the family can be served or "
                "changed without it: restore the manifest (the newest one you have); to remove the family "
                f"on purpose run `feast-bc drop-family --family {family}`"
            )
        known = self.families()
        return UnknownFamilyError(
            f"no embedding family {family!r} in {self.root}; available families: "
            f"{', '.join(known) if known else '(none published yet)'}"
        )

    def dropped_families(self) -> dict[str, dict]:
        """Family -> its tombstone (when and from which manifest it was dropped)."""
        folder = self.root / DROPPED_DIRNAME
        if not folder.is_dir():
            return {}
        out = {}
        for path in sorted(folder.glob("*.json")):
            if family_name_problem(path.stem):
                continue
            try:
                out[path.stem] = json.loads(path.read_bytes())
            except (OSError, ValueError, RecursionError):
                out[path.stem] = {"family": path.stem, "note": f"unreadable tombstone {path}"}
        return out

    def drop_family(self, family: str, *, undo: bool = False) -> dict | None:
        """Remove ``family`` from serving on purpose: the next `feast apply` deletes its views,
        FeatureServices and online values instead of refusing. Its files are kept (delete the
        directory by hand once no registry serves it any more); ``undo`` brings it back."""
        family_dir = self.family_dir(family)
        tombstone = self.root / DROPPED_DIRNAME / f"{family}.json"
        with self._lock(family):
            if undo:
                if tombstone.exists():
                    tombstone.unlink()
                    fsync_dir(tombstone.parent)
                return None
            state = self.family_state(family)
            if state == "dropped":
                return self.dropped_families()[family]
            checksum = None
            if (family_dir / MANIFEST_FILENAME).is_file():
                with contextlib.suppress(FeastBCError):
                    checksum = self.manifest(family).checksum
            record = {
                "family": family,
                "dropped_at": datetime.now(timezone.utc).isoformat(),
                "manifest_sha256": checksum,
                "state_when_dropped": state,
            }
            atomic_write_bytes(tombstone, (json.dumps(record, indent=2) + "\n").encode())
            return record

    def artifact_path(self, family: str, ref) -> Path:
        return self.family_dir(family) / ref.path

    def verify(self, family: str, manifest: FamilyManifest | None = None) -> FamilyManifest:
        """Check size and sha256 of every artifact the manifest references (hashing cached per file state)."""
        manifest = manifest or self.manifest(family)
        for rec in manifest.versions:
            for ref, what in ((rec.transform, f"B_{rec.version}"), (rec.embeddings, f"embeddings of version {rec.version}")):
                if ref is not None:
                    verify_file(self.artifact_path(family, ref), ref, origin=f"family {family!r}, {what}")
        return manifest

    def inspect(self, family: str) -> tuple[FamilyManifest | None, list[FeastBCError]]:
        """Every check `feast-bc verify` makes, collected instead of raised.

        The manifest (seal, schema, invariants); size and sha256 of every referenced artifact; every
        transform decoded as `feast materialize` would (safetensors header, dtype, shape, finite
        values); every served version's chain composed; the latest embeddings file opened as parquet
        with the expected columns, row count, version and publish time. ``feast-bc status`` runs
        exactly this, so it never says OK about a family that verify or materialize would refuse.
        """
        try:
            manifest = self.manifest(family)
        except FeastBCError as exc:
            return None, [exc]
        errors: list[FeastBCError] = []

        def attempt(fn, *args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except FeastBCError as exc:
                errors.append(exc)
            except OSError as exc:
                errors.append(ArtifactError(f"family {family!r}: {exc}"))
            return None

        for rec in manifest.versions:
            for ref, what in ((rec.transform, f"B_{rec.version}"), (rec.embeddings, f"embeddings of version {rec.version}")):
                if ref is not None:
                    attempt(verify_file, self.artifact_path(family, ref), ref, origin=f"family {family!r}, {what}")
        if errors:
            return manifest, errors  # decoding files that fail their checksum proves nothing more
        for rec in manifest.versions:
            if rec.transform is not None:
                attempt(self.transform, family, rec.version, manifest)
        if not errors:
            for v in range(manifest.latest_version):
                if manifest.versions[v].retired_at is not None and any(
                    manifest.versions[u].transform is None for u in range(v + 1, manifest.latest_version + 1)
                ):
                    continue  # retired and pruned: nothing serves or can compute it any more
                attempt(self.composed, family, manifest.latest_version, v, manifest)
        latest = manifest.latest
        attempt(
            check_embeddings_file,
            self.artifact_path(family, latest.embeddings),
            manifest.entity.join_key,
            manifest.entity.dtype,
            latest,
            f"family {family!r}, embeddings of version {latest.version}",
        )
        return manifest, errors

    def check(self, family: str) -> FamilyManifest:
        """:meth:`inspect`, raising its first problem."""
        manifest, errors = self.inspect(family)
        if errors:
            raise errors[0]
        return manifest

    def transform(self, family: str, version: int, manifest: FamilyManifest | None = None) -> BackwardTransform:
        """The verified B_version (version -> version-1)."""
        manifest = manifest or self.manifest(family)
        rec = manifest.version(version)
        if rec.transform is None:
            if version == 0:
                raise InvalidInputError(f"family {family!r}: version 0 has no backward transform")
            raise RetiredVersionError(
                f"family {family!r}: B_{version} was pruned (every version older than {version} is retired)"
            )
        return load_transform(
            self.artifact_path(family, rec.transform), rec.transform, origin=f"family {family!r}, B_{version}"
        )

    def composed(self, family: str, source: int, target: int, manifest: FamilyManifest | None = None) -> BackwardTransform:
        """B_{target+1} o ... o B_source as one transform (one matrix for linear chains), cached by content."""
        manifest = manifest or self.manifest(family)
        chain = manifest.chain(source, target)
        key = (manifest.version(source).dim, tuple(t.sha256 for t in chain))
        for ref, v in zip(chain, range(source, target, -1)):
            verify_file(self.artifact_path(family, ref), ref, origin=f"family {family!r}, B_{v}")
        cached = _composed_cache.get(key)
        if cached is not None:
            return cached
        steps = [self.transform(family, v, manifest) for v in range(source, target, -1)]
        result = compose(steps, dim=manifest.version(source).dim)
        _composed_cache.put(key, result)
        return result

    def latest_embeddings(self, family: str, ids=None, manifest: FamilyManifest | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Verified (ids, vectors) of the latest version; with ``ids``, those rows in that order."""
        manifest = self.verify(family, manifest)
        latest = manifest.latest
        return read_embeddings(
            self.artifact_path(family, latest.embeddings),
            manifest.entity.join_key,
            latest.dim,
            ids=ids,
            id_dtype=manifest.entity.dtype,
        )

    def orphans(self, family: str, manifest: FamilyManifest | None = None) -> list[Path]:
        """Files the manifest does not reference: leftovers of a killed publish (artifacts, temp files).

        Raises (like :meth:`manifest`) when the family has no readable manifest: then *every* file
        would look unreferenced, and none of them is an orphan.
        """
        family_dir = self.family_dir(family)
        art_dir = family_dir / ARTIFACTS_DIRNAME
        if not family_dir.is_dir():
            return []
        manifest = manifest or self.manifest(family)
        # temp files of a manifest replacement that was killed before its rename
        stale = sorted(family_dir.glob(f".{MANIFEST_FILENAME}.*.tmp"))
        if not art_dir.is_dir():
            return stale
        referenced = {self.artifact_path(family, ref).resolve() for ref in _refs(manifest)}
        return stale + sorted(p for p in art_dir.iterdir() if p.is_file() and p.resolve() not in referenced)

    def _owned_artifacts_dir(self, family: str) -> Path:
        """The family's own artifacts directory, resolved; refuses one shared with anything else."""
        family_dir = self.family_dir(family)
        art_dir = family_dir / ARTIFACTS_DIRNAME
        real_family = family_dir.resolve()
        if family_dir.is_symlink() or real_family != self.root.resolve() / family:
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

    def _repo_registries(self, extra=()):
        """The registries of the Feast repo this catalog belongs to (None if it is not in one)."""
        from feast_bc.registries import PROFILE_GLOB, repo_registries

        repo = self.root.parent
        if self.root.name != CATALOG_DIRNAME or not any(repo.glob(PROFILE_GLOB)):
            return None
        return repo_registries(repo, extra)

    def collect_garbage(
        self, family: str, *, prune: bool = False, dry_run: bool = False, registries=None
    ) -> list[Path]:
        """Delete orphaned artifacts and, with ``prune``, artifacts no served version needs any more.

        Prunable: embeddings of versions older than the latest and the transforms B_v of which every
        older version is retired. Nothing is deleted unless it is provably unused:

        * the family must pass every check of :meth:`inspect` -- on a damaged family the files gc
          would remove may be the only data a missing artifact can be rebuilt from;
        * the family's artifacts directory must be its own (no symlinked or shared directory);
        * every registry of the repo (all ``feature_store*.yaml`` profiles, see
          :mod:`feast_bc.registries`) is read: a file any of them still reads is kept; ``prune``
          is refused until every registry serves exactly the catalog's versions and latest, and
          everything is refused while a registry is *ahead* of the catalog (a restored manifest).

        The manifest is rewritten before any referenced file is deleted, so a crash in between
        leaves at worst an orphan, never a manifest pointing at a missing file. Returns what was
        (or, with ``dry_run``, would be) removed.
        """
        from feast_bc.registries import rollback_problem

        family_dir = self.family_dir(family)
        with self._lock(family):
            manifest, errors = self.inspect(family)
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
            protected: set[Path] = set()
            temp_only = False
            if registries is not None:
                regs = registries.of(family)
                for reg in regs:
                    problem = rollback_problem(reg, manifest)
                    if problem:
                        raise CatalogRollbackError(problem + "; gc deletes nothing meanwhile")
                protected = registries.sources()
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
                    lagging = [
                        r for r in regs if r.latest != manifest.latest_version or set(r.versions) != served
                    ]
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

            def deletable(path: Path) -> bool:
                if path.name.endswith(".tmp") and path.name.startswith("."):
                    return True  # a temp file is never referenced by anything
                if temp_only:
                    return False
                real = path.resolve()
                if real in protected:
                    logger.info("gc keeps %s: a Feast registry of the repo still reads it", path)
                    return False
                return True

            doomed = [p for p in self.orphans(family, manifest) if deletable(p)]
            if prune:
                versions, dropped = [], []
                for i, rec in enumerate(manifest.versions):
                    update = {}
                    if rec.embeddings is not None and i < manifest.latest_version:
                        path = self.artifact_path(family, rec.embeddings)
                        if deletable(path):
                            update["embeddings"] = None
                            dropped.append(path)
                    if rec.transform is not None and all(r.retired_at is not None for r in manifest.versions[:i]):
                        update["transform"] = None
                        dropped.append(self.artifact_path(family, rec.transform))
                    versions.append(rec.model_copy(update=update) if update else rec)
                for path in dropped:
                    if path.resolve().parent != art_dir:
                        raise UnsafeDeletionError(
                            f"family {family!r}: {path} is not inside the family's own artifacts directory; "
                            "gc --prune deletes nothing"
                        )
                if dropped:
                    doomed += dropped
                    if not dry_run:
                        pruned = FamilyManifest(family=family, entity=manifest.entity, versions=versions)
                        atomic_write_bytes(family_dir / MANIFEST_FILENAME, pruned.to_json_bytes())
            if not dry_run:
                for path in doomed:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
            return doomed

    def retire(self, family: str, version: int) -> FamilyManifest:
        """Stop serving ``version``: after `feast apply` its view, service and online values are gone.

        Its backward transform stays in the chain (older versions still need it). Retiring the
        latest version is refused; retiring twice is a no-op.
        """
        return self._update_version(family, version, "retired_at", datetime.now(timezone.utc), "be retired")

    def set_serving(self, family: str, version: int, mode: str) -> FamilyManifest:
        """Serve ``version`` from stored values ('stored') or compute it at request time ('on_read').

        On-read versions cost no online storage and no materialization, and a bit of latency per
        read (see docs/BENCHMARKS.md); the change takes effect at the next `feast apply`.
        """
        if mode not in ("stored", "on_read"):
            raise InvalidInputError(f"serving mode must be 'stored' or 'on_read', not {mode!r}")
        return self._update_version(family, version, "serving", mode, "be served on read" if mode == "on_read" else "")

    def _update_version(self, family: str, version: int, field: str, value, refused_for_latest: str) -> FamilyManifest:
        family_dir = self.family_dir(family)
        with self._lock(family):
            manifest = self.manifest(family)
            rec = manifest.version(version)
            if field == "retired_at" and rec.retired_at is not None:
                return manifest
            if version == manifest.latest_version and refused_for_latest:
                raise InvalidInputError(f"family {family!r}: the latest version {version} cannot {refused_for_latest}")
            if getattr(rec, field) == value:
                return manifest
            versions = list(manifest.versions)
            versions[version] = rec.model_copy(update={field: value})
            updated = FamilyManifest(family=family, entity=manifest.entity, versions=versions)
            atomic_write_bytes(family_dir / MANIFEST_FILENAME, updated.to_json_bytes())
            return updated

    # ------------------------------------------------------------------------------ writing
    def publish(
        self,
        family: str,
        *,
        ids,
        vectors,
        transform: BackwardTransform | np.ndarray | None = None,
        entity: EntitySpec | Mapping | None = None,
        metrics: Mapping[str, float] | None = None,
        expected_version: int | None = None,
        description: str = "",
    ) -> VersionRecord:
        """Publish the next version of ``family``: its embeddings for all entities and B_{k+1}.

        Everything is validated before the first byte is written (entity, ids, finiteness,
        B_{k+1} of shape d_k x d_{k+1}, metrics); on any error the catalog is unchanged.
        ``expected_version`` guards against two publishers racing for the same version number.
        """
        family_dir = self.family_dir(family)
        if expected_version is not None:
            if isinstance(expected_version, (bool, np.bool_)):
                raise InvalidInputError(f"expected_version must be a version number, not {expected_version!r}")
            try:
                expected_version = operator.index(expected_version)
            except TypeError:
                raise InvalidInputError(
                    f"expected_version must be an integer version number, not {expected_version!r} "
                    f"({type(expected_version).__name__})"
                ) from None
        with self._lock(family):
            state = self.family_state(family)
            if state == "dropped":
                raise InvalidInputError(
                    f"family {family!r} was dropped (`feast-bc drop-family`); run `feast-bc drop-family --undo "
                    f"--family {family}` before publishing it again"
                )
            # 'missing_manifest' raises here: publishing version 0 over a family that lost its
            # manifest would orphan every version Feast still serves.
            current = None if state == "absent" else self.manifest(family)
            version = 0 if current is None else current.latest_version + 1
            if expected_version is not None and expected_version != version:
                raise VersionConflictError(
                    f"family {family!r}: expected to publish version {expected_version}, but the next "
                    f"version is {version}"
                )
            entity_spec = self._entity_for(family, current, entity)
            ids_arr = validate_ids(ids, entity_spec.dtype)
            mat = validate_vectors(vectors, len(ids_arr))
            b = self._transform_for(family, current, version, transform, mat.shape[1])
            created_at = _next_timestamp(current)

            # Validate the would-be manifest fully (metrics, chain) before writing anything.
            placeholder = "0" * 64
            record_fields = dict(
                version=version,
                dim=int(mat.shape[1]),
                created_at=created_at,
                metrics=dict(metrics or {}),
                description=description,
            )
            try:
                draft = VersionRecord(
                    **record_fields,
                    embeddings=EmbeddingsArtifact(path="x", sha256=placeholder, size_bytes=0, rows=len(ids_arr)),
                    transform=None
                    if b is None
                    else TransformArtifact(
                        path="x", sha256=placeholder, size_bytes=0, kind=b.kind, in_dim=b.in_dim, out_dim=b.out_dim
                    ),
                )
                FamilyManifest(family=family, entity=entity_spec, versions=[*(current.versions if current else []), draft])
            except ValidationError as exc:
                raise InvalidInputError(f"family {family!r}, version {version}: {validation_summary(exc)}") from None

            art_dir = family_dir / ARTIFACTS_DIRNAME
            written: list[Path] = []
            try:
                table = embeddings_table(entity_spec.join_key, ids_arr, mat, created_at, version)
                emb_path, emb_sha, emb_size = write_embeddings(art_dir, f"v{version:04d}-embeddings", table)
                written.append(emb_path)
                t_ref = None
                if b is not None:
                    t_path, t_sha, t_size = write_transform(art_dir, f"v{version:04d}-transform", b)
                    written.append(t_path)
                    t_ref = TransformArtifact(
                        path=f"{ARTIFACTS_DIRNAME}/{t_path.name}", sha256=t_sha, size_bytes=t_size,
                        kind=b.kind, in_dim=b.in_dim, out_dim=b.out_dim,
                    )
                record = VersionRecord(
                    **record_fields,
                    embeddings=EmbeddingsArtifact(
                        path=f"{ARTIFACTS_DIRNAME}/{emb_path.name}", sha256=emb_sha, size_bytes=emb_size, rows=len(ids_arr)
                    ),
                    transform=t_ref,
                )
                manifest = FamilyManifest(
                    family=family, entity=entity_spec, versions=[*(current.versions if current else []), record]
                )
                atomic_write_bytes(family_dir / MANIFEST_FILENAME, manifest.to_json_bytes())
            except BaseException:
                # The old manifest is still in force; drop what this attempt wrote (unless a previous
                # identical publish already referenced the same content-addressed file).
                keep = {p.resolve() for p in self._referenced(family, current)}
                for p in written:
                    if p.resolve() not in keep:
                        with contextlib.suppress(OSError):
                            p.unlink()
                if current is None:  # a failed first publish leaves no (empty) family directory
                    for d in (art_dir, family_dir):
                        with contextlib.suppress(OSError):
                            d.rmdir()
                raise
            return record

    def _referenced(self, family: str, manifest: FamilyManifest | None) -> list[Path]:
        if manifest is None:
            return []
        return [self.artifact_path(family, ref) for ref in _refs(manifest)]

    @staticmethod
    def _entity_for(family: str, current: FamilyManifest | None, entity) -> EntitySpec:
        if entity is not None and not isinstance(entity, EntitySpec):
            try:
                entity = EntitySpec.model_validate(dict(entity))
            except ValidationError as exc:
                raise InvalidInputError(f"family {family!r}: invalid entity spec: {validation_summary(exc)}") from None
            except (TypeError, ValueError) as exc:
                raise InvalidInputError(f"family {family!r}: invalid entity spec: {exc}") from None
        if current is None:
            if entity is None:
                raise InvalidInputError(
                    f"family {family!r} does not exist yet: the first publish must name its entity "
                    "(EntitySpec(name=..., join_key=..., dtype='int64'|'string'))"
                )
            return entity
        if entity is not None and entity != current.entity:
            raise InvalidInputError(
                f"family {family!r} belongs to entity {current.entity.model_dump()}; cannot publish with "
                f"{entity.model_dump()}"
            )
        return current.entity

    @staticmethod
    def _transform_for(
        family: str, current: FamilyManifest | None, version: int, transform, new_dim: int
    ) -> BackwardTransform | None:
        if current is None:
            if transform is not None:
                raise InvalidInputError(
                    f"family {family!r}: version 0 has no older version, so it takes no backward transform"
                )
            return None
        if transform is None:
            raise InvalidInputError(
                f"family {family!r}: version {version} needs its backward transform B_{version} "
                f"(shape {current.latest.dim} x {new_dim}) so older versions can still be served"
            )
        if not isinstance(transform, BackwardTransform):
            w = np.asarray(transform)
            if w.ndim != 2:
                raise DimensionMismatchError(
                    f"family {family!r}: B_{version} must be a matrix of shape d_{version - 1} x d_{version} = "
                    f"{current.latest.dim} x {new_dim}; got shape {w.shape}"
                )
            if w.shape != (current.latest.dim, new_dim):
                raise DimensionMismatchError(
                    f"family {family!r}: B_{version} must have shape d_{version - 1} x d_{version} = "
                    f"{current.latest.dim} x {new_dim}; got {w.shape[0]} x {w.shape[1]}"
                )
            try:
                transform = LinearTransform(w)
            except FeastBCError as exc:
                raise type(exc)(f"family {family!r}, B_{version}: {exc}") from None
        if (transform.out_dim, transform.in_dim) != (current.latest.dim, new_dim):
            raise DimensionMismatchError(
                f"family {family!r}: B_{version} must map {new_dim} -> {current.latest.dim} "
                f"(d_{version} -> d_{version - 1}); got {transform.in_dim} -> {transform.out_dim}"
            )
        return transform


def _refs(manifest: FamilyManifest) -> list:
    """Every artifact reference of a manifest."""
    return [ref for rec in manifest.versions for ref in (rec.transform, rec.embeddings) if ref is not None]


def _next_timestamp(current: FamilyManifest | None) -> datetime:
    """Now (UTC, microseconds); strictly after the previous version even if the clock stepped back.

    The value doubles as the event timestamp of every row of this version, which is what makes
    Feast's online stores overwrite the previous version's values on re-materialization.
    """
    now = datetime.now(timezone.utc)
    if current is not None and now <= current.latest.created_at:
        now = current.latest.created_at + timedelta(microseconds=1)
    return now


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


_composed_cache = _LRU(_COMPOSED_CACHE_SIZE)
