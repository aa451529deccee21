"""Push: vectors of new or changed entities, embedded by the current model, into every pin at once.

Between two published versions an embedding team's inference service embeds new entities (and
re-embeds changed ones) with the model of the latest version k. :func:`push` -- or a long-lived
:class:`Pusher`, which keeps its Feast objects between calls -- takes those z_k and

1. validates them as publishing would (ids of the family's entity type, no duplicates, finite
   vectors of version k's dimension): a bad batch writes nothing;
2. under the family's writers' lock, refuses a push computed for another version than the catalog's
   latest (a push racing a publish is either in the version it was computed for or refused, never
   transformed with the wrong chain), then appends it to the family's push log
   (:mod:`feast_bc.catalog.push_log`: durable, append-only, checksummed) -- so export, a later
   `feast materialize`, a new online store, gc and the next version's training see the same values;
3. writes every stored pin of every applied profile of the repo: version j gets B_{j+1}o...oB_k(z),
   the composed matrix of materialization, one HSET per entity for all pins on Redis (the fused
   materialization writer), each row stamped with the push's event time.

A failure after step 2 is reported with what to run: the push is recorded, and the next
materialization of that profile writes it.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from feast_bc.catalog import Catalog
from feast_bc.catalog.push_log import append_push, last_push, next_event_time
from feast_bc.embeddings import validate_ids, validate_vectors
from feast_bc.errors import (
    ConfigurationError,
    DimensionMismatchError,
    FeastBCError,
    VersionConflictError,
)
from feast_bc.manifest import MANIFEST_FILENAME, FamilyManifest
from feast_bc.naming import FEAST_BC_ENGINES
from feast_bc.push_pins import Chains, ProfileTarget, ProfileWrite
from feast_bc.registries import Profile, repo_profiles

logger = logging.getLogger(__name__)


class PushResult(BaseModel):
    """What :func:`push` did: the record it appended and the pins it wrote."""

    model_config = ConfigDict(frozen=True)

    family: str
    version: int
    rows: int
    event_time: datetime
    segment: str
    written: list[ProfileWrite]
    skipped: list[str]


class Pusher:
    """Pushes into one family of one feature repo; keeps its Feast objects between pushes (what an
    inference service holds). :meth:`push` is :func:`push`."""

    def __init__(self, repo: str | Path, family: str, *, catalog: Catalog | None = None):
        self.repo = Path(repo).absolute()
        self.catalog = catalog or Catalog.for_repo(self.repo)
        self.family = family
        self.catalog.family_dir(family)  # validates the name
        self._targets: dict[Path, ProfileTarget] = {}
        self._manifest: tuple[tuple, FamilyManifest] | None = None
        self._profiles: list[Profile] | None = None
        self._chain_cache: Chains | None = None

    def manifest(self) -> FamilyManifest:
        """The family's verified manifest, read again only when its file changed (publishes replace it)."""
        path = self.catalog.family_dir(self.family) / MANIFEST_FILENAME
        try:
            st = os.stat(path)
            state = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            state = None
        if state is not None and self._manifest is not None and self._manifest[0] == state:
            return self._manifest[1]
        manifest = self.catalog.verify(self.family)
        self._manifest = (state, manifest)
        return manifest

    def profiles(self) -> list[Profile]:
        """The repo's applied profiles; refuses one whose engine would not materialize pushes."""
        if self._profiles is None:
            applied = [p for p in repo_profiles(self.repo) if p.applied()]
            for p in applied:
                if p.batch_engine not in FEAST_BC_ENGINES:
                    raise ConfigurationError(
                        f"{p.name}: its batch engine is {p.batch_engine!r}, which reads only the published file, so its "
                        "next `feast materialize` would write pushed entities' older values over them. Push needs "
                        "feast_bc's engine in every applied profile (`batch_engine: {type: feast_bc.engine.BCEngine}`, "
                        "what `feast-bc init` writes; or feast_bc.ray_engine.BCRayEngine)"
                    )
            # profiles naming the same project in the same online store are one store to write
            unique = {
                (p.project, json.dumps(p.online_store, sort_keys=True, default=str)): p for p in reversed(applied)
            }
            self._profiles = sorted(unique.values(), key=lambda p: p.name)
        return self._profiles

    def push(self, ids, vectors, *, version: int) -> PushResult:
        """Record ``vectors`` (z of ``version``, the latest) for ``ids`` and write them into every pin.

        Raises (nothing written) on invalid input, on a version that is not the catalog's latest
        (:class:`~feast_bc.errors.VersionConflictError`) and on a profile whose engine would undo
        the push; a store failure after the record is raised naming what to run."""
        manifest = self.manifest()
        ids, mat = self._validated(manifest, ids, vectors, version)
        profiles = self.profiles()
        family_dir = self.catalog.family_dir(self.family)
        with self.catalog.local_lock(self.family):
            with self.catalog.writing():  # a catalog on object storage: pulled before, the segment uploaded after
                manifest = self.manifest()
                self._refuse_other_version(manifest, version)
                previous = last_push(family_dir, version)
                event_time = next_event_time(manifest.latest.created_at, previous)
                segment = append_push(family_dir, version, manifest.entity.join_key, ids, mat, event_time, previous)
            written, skipped = [], []
            with self.catalog.online_lock(self.family, shared=False):
                for profile in profiles:
                    try:
                        target = self._target(profile)
                        result = target.write(self._chains(manifest), manifest, version, ids, mat, event_time)
                    except Exception as exc:
                        raise _not_written(profile, segment.path.name, event_time, exc, written) from exc
                    if result.versions:
                        written.append(result)
                    else:
                        skipped.append(f"{profile.name}: {result.skipped or 'no pin computable from this version'}")
        return PushResult(
            family=self.family,
            version=version,
            rows=len(ids),
            event_time=event_time,
            segment=segment.path.name,
            written=written,
            skipped=skipped,
        )

    def _chains(self, manifest: FamilyManifest) -> Chains:
        if self._chain_cache is None or self._chain_cache.manifest is not manifest:
            self._chain_cache = Chains(self.catalog, manifest)
        return self._chain_cache

    def _target(self, profile: Profile) -> ProfileTarget:
        target = self._targets.get(profile.yaml)
        if target is None:
            target = self._targets[profile.yaml] = ProfileTarget(self.repo, profile, self.family)
        return target

    def _validated(self, manifest: FamilyManifest, ids, vectors, version) -> tuple[np.ndarray, np.ndarray]:
        self._refuse_other_version(manifest, version)
        try:
            ids = validate_ids(ids, manifest.entity.dtype)
            mat = validate_vectors(vectors, len(ids))
        except FeastBCError as exc:
            raise type(exc)(f"push into {self.family!r}: {exc}; nothing was written") from None
        dim = manifest.version(version).dim
        if mat.shape[1] != dim:
            raise DimensionMismatchError(
                f"push into {self.family!r}: vectors have dimension {mat.shape[1]}, version {version} has {dim}; "
                "nothing was written"
            )
        return ids, mat

    def _refuse_other_version(self, manifest: FamilyManifest, version) -> None:
        if isinstance(version, bool) or not isinstance(version, (int, np.integer)):
            raise VersionConflictError(
                f"push into {self.family!r}: version must be the version number whose model embedded the vectors, "
                f"not {version!r}"
            )
        if int(version) != manifest.latest_version:
            newer = int(version) < manifest.latest_version
            raise VersionConflictError(
                f"push into {self.family!r}: the vectors were computed for version {int(version)}, but the catalog's "
                f"latest is version {manifest.latest_version}"
                + (
                    f" (published {manifest.latest.created_at.isoformat()}): embed these entities with the model of "
                    f"version {manifest.latest_version} and push again. Nothing was written"
                    if newer
                    else ": no such version has been published. Nothing was written"
                )
            )


def _not_written(profile: Profile, segment: str, event_time: datetime, exc: Exception, written) -> FeastBCError:
    done = ", ".join(w.profile for w in written) or "no profile"
    start = event_time.strftime("%Y-%m-%dT%H:%M:%S")
    err = type(exc) if isinstance(exc, FeastBCError) else FeastBCError
    message = (
        f"the push is recorded ({segment}) and written into {done}, but writing {profile.name}'s online store failed "
        f"({exc}). Its pins serve the older values until `{profile.feast_args()} materialize {start} <now>` "
        "(or `feast-bc push` of the same batch again) writes it"
    )
    try:
        return err(message)
    except TypeError:
        return FeastBCError(message)


def push(repo: str | Path, family: str, ids, vectors, *, version: int) -> PushResult:
    """Push z_``version`` of ``ids`` into every pin of ``family`` (see the module docstring); for
    many pushes keep a :class:`Pusher`, which reads Feast's objects once."""
    return Pusher(repo, family).push(ids, vectors, version=version)
