"""Operators' changes to published families: retire, serving mode, drop-family (garbage collection:
:mod:`~feast_bc.catalog.garbage`).

Each change holds the family's lock, reads the current manifest and replaces it atomically (or
writes a tombstone); none of them writes artifacts.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from feast_bc.atomic import atomic_write_bytes, fsync_dir
from feast_bc.catalog.layout import tombstone_path
from feast_bc.catalog.reader import CatalogReader
from feast_bc.errors import (
    FeastBCError,
    InvalidInputError,
)
from feast_bc.manifest import MANIFEST_FILENAME, FamilyManifest, VersionRecord

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
    """The operator's changes to one catalog (what ``Catalog.retire``, ``set_serving`` and
    ``drop_family`` run)."""

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
