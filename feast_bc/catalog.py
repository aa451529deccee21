"""The catalog: a directory holding every embedding family's manifest and artifacts.

Layout (inside a Feast repo the catalog is ``<repo>/bc_catalog``)::

    <catalog>/<family>/manifest.json                        # FamilyManifest, sealed with its sha256
    <catalog>/<family>/artifacts/v0003-embeddings-<sha16>.parquet
    <catalog>/<family>/artifacts/v0003-transform-<sha16>.safetensors
    <catalog>/<family>/.lock                                # serializes publishers

Publishing is the only writer. It validates everything in memory first, then writes new
content-addressed artifacts, then replaces the manifest atomically: a crash at any point leaves
the previous manifest in force and at worst some unreferenced files (reported by
:meth:`Catalog.orphans`). Readers verify size and sha256 of every artifact they use.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from feast_bc.artifacts import load_transform, verify_file, write_transform
from feast_bc.atomic import atomic_write_bytes, exclusive_lock
from feast_bc.embeddings import embeddings_table, read_embeddings, validate_ids, validate_vectors, write_embeddings
from feast_bc.errors import (
    DimensionMismatchError,
    FeastBCError,
    InvalidInputError,
    InvalidNameError,
    ManifestError,
    UnknownFamilyError,
    VersionConflictError,
)
from feast_bc.manifest import (
    MANIFEST_FILENAME,
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
_COMPOSED_CACHE_SIZE = 64


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
        if path.name != CATALOG_DIRNAME and not any(path.glob(f"*/{MANIFEST_FILENAME}")):
            return cls.for_repo(path)
        return cls(path)

    def __repr__(self) -> str:
        return f"Catalog({str(self.root)!r})"

    # ------------------------------------------------------------------------------ reading
    def family_dir(self, family: str) -> Path:
        problem = family_name_problem(family)
        if problem:
            raise InvalidNameError(problem)
        return self.root / family

    def families(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST_FILENAME).is_file())

    def has_family(self, family: str) -> bool:
        return (self.family_dir(family) / MANIFEST_FILENAME).is_file()

    def manifest(self, family: str) -> FamilyManifest:
        path = self.family_dir(family) / MANIFEST_FILENAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            known = self.families()
            raise UnknownFamilyError(
                f"no embedding family {family!r} in {self.root}; available families: "
                f"{', '.join(known) if known else '(none published yet)'}"
            ) from None
        manifest = FamilyManifest.from_json_bytes(data, origin=f"manifest of family {family!r} ({path})")
        if manifest.family != family:
            raise ManifestError(f"{path} describes family {manifest.family!r}, not {family!r}")
        return manifest

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

    def transform(self, family: str, version: int, manifest: FamilyManifest | None = None) -> BackwardTransform:
        """The verified B_version (version -> version-1)."""
        manifest = manifest or self.manifest(family)
        rec = manifest.version(version)
        if rec.transform is None:
            raise InvalidInputError(f"family {family!r}: version 0 has no backward transform")
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

    def orphans(self, family: str) -> list[Path]:
        """Files the manifest does not reference: leftovers of a killed publish (artifacts, temp files)."""
        family_dir = self.family_dir(family)
        art_dir = family_dir / ARTIFACTS_DIRNAME
        # temp files of a manifest replacement that was killed before its rename
        stale = sorted(family_dir.glob(f".{MANIFEST_FILENAME}.*.tmp")) if family_dir.is_dir() else []
        if not art_dir.is_dir():
            return stale
        referenced: set[Path] = set()
        if self.has_family(family):
            for rec in self.manifest(family).versions:
                for ref in (rec.transform, rec.embeddings):
                    if ref is not None:
                        referenced.add(self.artifact_path(family, ref).resolve())
        return stale + sorted(p for p in art_dir.iterdir() if p.is_file() and p.resolve() not in referenced)

    def collect_garbage(self, family: str, *, prune: bool = False, dry_run: bool = False) -> list[Path]:
        """Delete orphaned artifacts and, with ``prune``, artifacts no served version needs any more.

        Prunable: embeddings of versions older than the latest (they are read only until the Feast
        registry is re-applied, so ``feast-bc gc --prune`` checks the registry first) and the
        transforms B_v of which every older version is retired. The manifest is rewritten before
        any referenced file is deleted, so a crash in between leaves at worst an orphan, never a
        manifest pointing at a missing file. Returns what was (or, with ``dry_run``, would be) removed.
        """
        family_dir = self.family_dir(family)
        with exclusive_lock(family_dir / ".lock"):
            manifest = self.manifest(family)
            doomed = list(self.orphans(family))
            if prune:
                versions, dropped = [], []
                for i, rec in enumerate(manifest.versions):
                    update = {}
                    if rec.embeddings is not None and i < manifest.latest_version:
                        update["embeddings"] = None
                        dropped.append(rec.embeddings)
                    if rec.transform is not None and all(r.retired_at is not None for r in manifest.versions[:i]):
                        update["transform"] = None
                        dropped.append(rec.transform)
                    versions.append(rec.model_copy(update=update) if update else rec)
                if dropped:
                    doomed += [self.artifact_path(family, ref) for ref in dropped]
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
        with exclusive_lock(family_dir / ".lock"):
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
        with exclusive_lock(family_dir / ".lock"):
            current = self.manifest(family) if self.has_family(family) else None
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
                raise
            return record

    def _referenced(self, family: str, manifest: FamilyManifest | None) -> list[Path]:
        if manifest is None:
            return []
        return [
            self.artifact_path(family, ref)
            for rec in manifest.versions
            for ref in (rec.transform, rec.embeddings)
            if ref is not None
        ]

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
