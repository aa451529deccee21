"""Where one push lands: the stored pins of one applied profile, written in one pass.

:class:`ProfileTarget` keeps a profile's Feast objects between pushes (read again when its registry
changes) and writes version j = B_{j+1}o...oB_k(z) into every pin version k can compute, through
the writer materialization uses (:func:`~feast_bc.online_writers.views_writer_for`: on Redis one
HSET per entity for all pins); :class:`Chains` holds the composed matrices of one manifest.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from feast_bc.catalog import Catalog
from feast_bc.manifest import FamilyManifest
from feast_bc.naming import TAG_FAMILY, TAG_LATEST, TAG_VERSION
from feast_bc.online_writers.base import FamilyPart
from feast_bc.online_writers.target import StoreTarget, ViewTarget
from feast_bc.registries import Profile

logger = logging.getLogger(__name__)

#: How long a Pusher trusts the views it read from a registry that is not a local file.
REMOTE_REGISTRY_TTL_S = 10.0


class ProfileWrite(BaseModel):
    """What one push wrote into one profile's online store."""

    model_config = ConfigDict(frozen=True)

    profile: str
    versions: list[int]
    rows: int
    skipped: str | None = None
    """Why nothing was written (no view of the family registered; a registry behind the catalog)."""


class Chains:
    """The composed transforms of one manifest (verified when it was read), built once per target
    version -- what materialization applies, without re-checking every artifact on every push."""

    def __init__(self, catalog: Catalog, manifest: FamilyManifest):
        self.catalog, self.manifest = catalog, manifest
        self._composed: dict[tuple[int, int], object] = {}

    def apply(self, vectors: np.ndarray, source: int, target: int) -> np.ndarray:
        if source == target:
            return vectors
        key = (source, target)
        if key not in self._composed:
            self._composed[key] = self.catalog.composed(self.manifest.family, source, target, self.manifest)
        return self._composed[key].transform(vectors)


class ProfileTarget:
    """One applied profile's Feast objects, kept between pushes while its registry is unchanged."""

    def __init__(self, repo: Path, profile: Profile, family: str):
        from feast import FeatureStore

        self.profile = profile
        self.store = FeatureStore(repo_path=str(repo), fs_yaml_file=profile.yaml)
        self.family = family
        self.views: dict[int, object] = {}
        self.state = None
        self.read_at = 0.0

    def _registry_state(self):
        if self.profile.registry is None:
            return None
        try:
            st = os.stat(self.profile.registry)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def refresh(self) -> None:
        """Read the family's views again when the registry changed (a local file: its stat; else
        every :data:`REMOTE_REGISTRY_TTL_S`)."""
        state = self._registry_state()
        fresh = state is not None and state == self.state
        if fresh or (state is None and self.views and time.monotonic() - self.read_at < REMOTE_REGISTRY_TTL_S):
            return
        self.store.refresh_registry()
        views = {}
        for view in self.store.list_batch_feature_views():
            if view.tags.get(TAG_FAMILY) == self.family and view.tags.get(TAG_VERSION, "").isdigit():
                views[int(view.tags[TAG_VERSION])] = view
        self.views, self.state, self.read_at = views, state, time.monotonic()

    def write(self, chains: Chains, manifest: FamilyManifest, version: int, ids, vectors, event_time) -> ProfileWrite:
        """Every stored pin of this profile that version ``version`` can compute, in one pass."""
        from feast_bc.online_writers import views_writer_for

        self.refresh()
        if not self.views:
            return ProfileWrite(
                profile=self.profile.name, versions=[], rows=0, skipped="no view of the family registered"
            )
        registered = max(int(view.tags.get(TAG_LATEST, version)) for view in self.views.values())
        if registered < version:
            # Its pins serve an older latest (`feast apply` has not run since the publish): the push
            # reaches them with the materialization that follows the apply (it reads the push log).
            return ProfileWrite(
                profile=self.profile.name,
                versions=[],
                rows=0,
                skipped=f"its registry serves version {registered} as latest; `{self.profile.feast_args()} apply` "
                "then `materialize` writes the push",
            )
        targets = []
        for j, view in sorted(self.views.items()):
            registered = int(view.tags.get(TAG_LATEST, version))
            if j > version or registered > version or j not in manifest.served_versions:
                logger.info(
                    "%s: push of version %s skips %s (not computable from it)", self.profile.name, version, view.name
                )
                continue
            targets.append((j, view))
        if not targets:
            return ProfileWrite(profile=self.profile.name, versions=[], rows=0)
        provider = self.store._get_provider()
        writer = views_writer_for(
            StoreTarget(self.store.config, provider.online_store, manifest.entity.join_key, manifest.entity.dtype),
            [ViewTarget(view, manifest.version(j).dim) for j, view in targets],
            refuse_newer=True,
        )
        values = {i: chains.apply(vectors, version, j) for i, (j, _) in enumerate(targets)}
        with writer:
            writer.write_part(FamilyPart(ids, version, event_time, values))
        return ProfileWrite(profile=self.profile.name, versions=[j for j, _ in targets], rows=len(ids))
