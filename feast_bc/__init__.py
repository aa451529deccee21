"""feast_bc: serve every version of an evolving embedding model through Feast.

The embedding team publishes version k (embeddings z_k of all entities plus a backward transform
B_k: z_k -> z_{k-1}) into a catalog; Feast serves each version j as its own feature view whose
online values are B_{j+1}(...B_k(z_k)), materialized by `feast materialize`. Consumers pin a version
by its FeatureService and need nothing but Feast.

This package is the serving side: numpy/pyarrow only, never torch. Importing it does not import
Feast either (that costs seconds); the Feast-facing parts live in ``feast_bc.feast_objects`` and
``feast_bc.repo`` and are imported on use -- as are :func:`push` and :class:`Pusher`
(:mod:`feast_bc.pusher`: they write through Feast's online stores), loaded on first use.
"""

from feast_bc.catalog import Catalog, PublishRequest
from feast_bc.errors import (
    ArtifactError,
    CatalogRollbackError,
    ChecksumMismatchError,
    CorruptArtifactError,
    DimensionMismatchError,
    DuplicateIdError,
    FeastBCError,
    GateConfigError,
    InvalidInputError,
    ManifestError,
    MissingArtifactError,
    NonFiniteError,
    PublishRefusedError,
    RetiredVersionError,
    UnknownFamilyError,
    UnknownIdError,
    UnknownVersionError,
    UnsafeDeletionError,
    VersionConflictError,
)
from feast_bc.export import export_version
from feast_bc.manifest import EntitySpec, FamilyManifest, VersionRecord
from feast_bc.transforms import BackwardTransform, LinearTransform, compose

__version__ = "0.1.0"

#: Names loaded on first use (they import Feast): name -> module.
_LAZY = {"push": "feast_bc.pusher", "Pusher": "feast_bc.pusher", "PushResult": "feast_bc.pusher"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'feast_bc' has no attribute {name!r}")


__all__ = [
    "ArtifactError",
    "BackwardTransform",
    "Catalog",
    "CatalogRollbackError",
    "ChecksumMismatchError",
    "CorruptArtifactError",
    "DimensionMismatchError",
    "DuplicateIdError",
    "EntitySpec",
    "FamilyManifest",
    "FeastBCError",
    "GateConfigError",
    "InvalidInputError",
    "LinearTransform",
    "ManifestError",
    "MissingArtifactError",
    "NonFiniteError",
    "PublishRefusedError",
    "PublishRequest",
    "PushResult",
    "Pusher",
    "RetiredVersionError",
    "UnknownFamilyError",
    "UnknownIdError",
    "UnknownVersionError",
    "UnsafeDeletionError",
    "VersionConflictError",
    "VersionRecord",
    "compose",
    "export_version",
    "push",
]
