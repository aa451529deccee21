"""The read side of a catalog: which families exist, their manifests, verified artifacts, composed chains.

Readers verify size and sha256 of every artifact they use. A family directory without its
manifest is never treated as "no family": serving it would mean deleting its Feast views and
online values, so every reader refuses it with a :class:`~feast_bc.errors.ManifestError` until the
manifest is restored or the family is dropped on purpose (``feast-bc drop-family``).

:class:`CatalogReader` is everything :class:`feast_bc.catalog.Catalog` does except changing the
catalog; the writers (:mod:`~feast_bc.catalog.publishing`, :mod:`~feast_bc.catalog.maintenance`)
work through it, and ``Catalog`` adds their entry points on top. It is one class, so one module
(~330 lines): the reads, the deep check built on them and the composition that trusts the check.

Why one module of ~340 lines: reading, verifying and composing share the manifest checks and the
composed-chain cache, and every writer builds on exactly this reader; splitting it would split one
invariant (what is read has been verified) across files.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from feast_bc.artifacts import load_transform, verify_file
from feast_bc.atomic import exclusive_lock, file_lock
from feast_bc.catalog.layout import (
    ARTIFACTS_DIRNAME,
    family_files,
    family_state,
    ignored_entries,
    lock_path,
    looks_like_catalog,
    online_lock_path,
    read_tombstones,
)
from feast_bc.catalog.location import catalog_root, repo_location
from feast_bc.catalog.object_store import is_uri
from feast_bc.catalog.push_log import overlay, read_pushes
from feast_bc.embeddings import check_embeddings_file, read_embeddings, select_rows
from feast_bc.errors import (
    ArtifactError,
    FeastBCError,
    InvalidInputError,
    InvalidNameError,
    ManifestError,
    RetiredVersionError,
    UnknownFamilyError,
)
from feast_bc.manifest import MANIFEST_FILENAME, MAX_MANIFEST_BYTES, FamilyManifest
from feast_bc.naming import family_name_problem
from feast_bc.registries import PROFILE_GLOB
from feast_bc.transforms import BackwardTransform, LinearTransform, compose

_COMPOSED_CACHE_SIZE = 64

logger = logging.getLogger(__name__)


class CatalogReader:
    """Families of versioned embeddings stored under one directory, read and verified."""

    def __init__(self, root: str | Path, *, repo: str | Path | None = None):
        self.root = Path(root).absolute()
        #: The feature repo this catalog serves, when known (gc reads its registries).
        self.repo = None if repo is None else Path(repo).absolute()

    @classmethod
    def for_repo(cls, repo_path: str | Path, location: str | None = None):
        """The catalog of a feature repo: where its ``feast_bc:`` block says (``bc_catalog/`` by default)."""
        location = repo_location(repo_path) if location is None else location
        if is_uri(location):
            from feast_bc.catalog.remote import RemoteCatalog  # the catalog package imports this module

            return RemoteCatalog(location, repo=repo_path)
        return cls(catalog_root(repo_path, location), repo=repo_path)

    @classmethod
    def locate(cls, where: str | Path | CatalogReader):
        """A catalog given either a feature repo (uses the catalog it declares) or a catalog directory."""
        if isinstance(where, cls):
            return where
        if isinstance(where, CatalogReader):
            return cls(where.root, repo=where.repo)
        if is_uri(str(where)):
            from feast_bc.catalog.remote import RemoteCatalog

            return RemoteCatalog(str(where))
        path = Path(where)
        if any(path.glob(PROFILE_GLOB)):
            return cls.for_repo(path)
        return cls(path) if looks_like_catalog(path) else cls.for_repo(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @property
    def location(self) -> str:
        """Where the catalog is, as a user names it (a directory here; a URI for a remote one)."""
        return str(self.root)

    def local_file(self, source: str | Path) -> Path:
        """The file a registered source path names (a remote catalog maps its object URLs)."""
        return Path(source)

    # ------------------------------------------------------------------------------ families
    def family_dir(self, family: str) -> Path:
        problem = family_name_problem(family)
        if problem:
            raise InvalidNameError(problem)
        return self.root / family

    def lock(self, family: str):
        """The writers' lock of one family (a context manager; released if the holder dies)."""
        return self.local_lock(family)

    def local_lock(self, family: str):
        """The writers' lock of one family on this machine (for a local catalog, :meth:`lock` itself;
        a remote one adds pulling and pushing the mirror around it)."""
        self.family_dir(family)  # validates the name
        return exclusive_lock(lock_path(self.root, family))

    def online_lock(self, family: str, *, shared: bool):
        """Pushes vs. materializations of ``family`` on this machine (a context manager): every
        materialization holds it shared from before it reads the push log until its last write, a
        push exclusively while it writes the online stores -- so a materialization never writes a
        pushed entity's older value after the push wrote the new one."""
        self.family_dir(family)  # validates the name
        return file_lock(online_lock_path(self.root, family), shared=shared)

    def family_state(self, family: str) -> str:
        """'published', 'absent', 'missing_manifest' or 'dropped' (:func:`~feast_bc.catalog.layout.family_state`)."""
        return family_state(self.family_dir(family))

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
        return ignored_entries(self.root)

    def has_family(self, family: str) -> bool:
        return (self.family_dir(family) / MANIFEST_FILENAME).is_file()

    def dropped_families(self) -> dict[str, dict]:
        """Family -> its tombstone (when and from which manifest it was dropped)."""
        return read_tombstones(self.root)

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
            files = family_files(self.family_dir(family))
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

    # ------------------------------------------------------------------------------ artifacts
    def artifact_path(self, family: str, ref) -> Path:
        return self.family_dir(family) / ref.path

    def referenced(self, family: str, manifest: FamilyManifest | None) -> list[Path]:
        """The files ``manifest`` references (none without a manifest)."""
        if manifest is None:
            return []
        return [self.artifact_path(family, ref) for ref in manifest.artifact_refs()]

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
        referenced = {p.resolve() for p in self.referenced(family, manifest)}
        return stale + sorted(p for p in art_dir.iterdir() if p.is_file() and p.resolve() not in referenced)

    # ------------------------------------------------------------------------------ verifying
    def verify(self, family: str, manifest: FamilyManifest | None = None) -> FamilyManifest:
        """Check size and sha256 of every artifact the manifest references (hashing cached per file state)."""
        manifest = manifest or self.manifest(family)
        for ref, what in _described_refs(manifest):
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

        for ref, what in _described_refs(manifest):
            attempt(verify_file, self.artifact_path(family, ref), ref, origin=f"family {family!r}, {what}")
        if errors:
            return manifest, errors  # decoding files that fail their checksum proves nothing more
        for rec in manifest.versions:
            if rec.transform is not None:
                attempt(self.transform, family, rec.version, manifest)
        if not errors:
            pruned = manifest.pruned_versions()  # nothing serves or can compute them any more
            for v in range(manifest.latest_version):
                if v not in pruned:
                    attempt(self.composed, family, manifest.latest_version, v, manifest)
        latest = manifest.latest
        attempt(self.pushed, family, manifest)
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

    # ------------------------------------------------------------------------------ composing
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

    def composed(
        self, family: str, source: int, target: int, manifest: FamilyManifest | None = None
    ) -> BackwardTransform:
        """B_{target+1} o ... o B_source as one transform (one matrix for linear chains), cached by content."""
        manifest = manifest or self.manifest(family)
        chain = manifest.chain(source, target)
        key = (manifest.version(source).dim, tuple(t.sha256 for t in chain))
        for ref, v in zip(chain, range(source, target, -1), strict=True):
            verify_file(self.artifact_path(family, ref), ref, origin=f"family {family!r}, B_{v}")
        cached = _composed_cache.get(key)
        if cached is not None:
            return cached
        steps = [self.transform(family, v, manifest) for v in range(source, target, -1)]
        result = compose(steps, dim=manifest.version(source).dim)
        _composed_cache.put(key, result)
        return result

    def transform_vectors(
        self,
        family: str,
        vectors: np.ndarray,
        source: int,
        target: int,
        manifest: FamilyManifest | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Version-``target`` vectors from version-``source`` vectors: the one formula that
        materialization (both engines) and export share.

        ``out`` (C-contiguous (n, target dim) float32) may receive the result when the composed
        transform is linear (the same floats as without it); always use the returned array."""
        if source == target:
            return np.asarray(vectors, dtype=np.float32)
        composed = self.composed(family, source, target, manifest)
        if out is not None and isinstance(composed, LinearTransform):
            return composed.transform(vectors, out=out)
        return composed.transform(vectors)

    def latest_embeddings(
        self, family: str, ids=None, manifest: FamilyManifest | None = None, *, pushes: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Verified (ids, vectors) of the latest version -- with what was pushed since it was
        published applied (:mod:`~feast_bc.catalog.push_log`; ``pushes=False``: the published file
        alone); with ``ids``, those rows in that order."""
        manifest = self.verify(family, manifest)
        latest = manifest.latest
        path = self.artifact_path(family, latest.embeddings)
        join_key, dtype = manifest.entity.join_key, manifest.entity.dtype
        pushed = self.pushed(family, manifest) if pushes else None
        if pushed is None:
            return read_embeddings(path, join_key, latest.dim, ids=ids, id_dtype=dtype)
        all_ids, vectors = overlay(*read_embeddings(path, join_key, latest.dim, id_dtype=dtype), pushed)
        if ids is None:
            return all_ids, vectors
        return select_rows(all_ids, vectors, ids, dtype)

    def pushed(self, family: str, manifest: FamilyManifest | None = None, version: int | None = None):
        """The verified pushes of ``version`` (default: the latest) -- newest vector per entity -- or
        None when nothing was pushed (:func:`~feast_bc.catalog.push_log.read_pushes`)."""
        manifest = manifest or self.manifest(family)
        version = manifest.latest_version if version is None else version
        return read_pushes(self.family_dir(family), version, manifest.entity.join_key, manifest.version(version).dim)


def _described_refs(manifest: FamilyManifest):
    """(artifact reference, what it is in words) for every artifact of the manifest."""
    for rec in manifest.versions:
        for ref, what in (
            (rec.transform, f"B_{rec.version}"),
            (rec.embeddings, f"embeddings of version {rec.version}"),
            (rec.reference, f"reference sample of version {rec.version}"),
        ):
            if ref is not None:
                yield ref, what


class _LRU(OrderedDict):
    """A small thread-safe least-recently-used cache."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def get(self, key, default=None):
        with self.lock:
            if key not in self:
                return default
            self.move_to_end(key)
            return self[key]

    def put(self, key, value) -> None:
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.size:
                self.popitem(last=False)


_composed_cache = _LRU(_COMPOSED_CACHE_SIZE)
