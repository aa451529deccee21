"""Errors raised by feast_bc.

Every refusal is a subclass of :class:`FeastBCError` so callers (the CLI, the training
publisher, Feast's materialization) can tell "feast_bc said no, nothing was changed" from an
unexpected crash. Messages name the family, version or artifact concerned and say what to do.
"""

from __future__ import annotations


class FeastBCError(Exception):
    """Base class: a request was refused and no state was changed."""


class InvalidNameError(FeastBCError, ValueError):
    """A family, entity or join-key name cannot be used as a Feast object name."""


class UnknownFamilyError(FeastBCError, KeyError):
    """The catalog holds no family of that name."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnknownVersionError(FeastBCError, KeyError):
    """A version that the family does not have was asked for."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownIdError(FeastBCError, KeyError):
    """Entity ids were asked for that the latest embeddings do not contain."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class RetiredVersionError(UnknownVersionError):
    """A retired version was asked for whose backward transforms have been pruned."""


class VersionConflictError(FeastBCError):
    """The caller expected a different next version (someone else published first)."""


class DimensionMismatchError(FeastBCError, ValueError):
    """A matrix or vector has the wrong shape for its place in the version chain."""


class NonFiniteError(FeastBCError, ValueError):
    """Embeddings or a transform contain NaN or infinity."""


class DuplicateIdError(FeastBCError, ValueError):
    """The same entity id appears more than once in one publish."""


class InvalidInputError(FeastBCError, ValueError):
    """Input of the wrong type or form (empty table, bad id dtype, bad metrics...)."""


class ArtifactError(FeastBCError):
    """An artifact could not be used; nothing was read into the online store from it."""


class MissingArtifactError(ArtifactError, FileNotFoundError):
    """An artifact referenced by the manifest is not on disk."""


class ChecksumMismatchError(ArtifactError):
    """An artifact's bytes do not match the sha256 recorded when it was published."""


class CorruptArtifactError(ArtifactError, ValueError):
    """An artifact is not a well-formed safetensors/parquet file of the expected layout."""


class ManifestError(FeastBCError):
    """The manifest is missing, unreadable, of an unknown schema, or fails its own checksum."""


class RegistryLagError(FeastBCError):
    """The Feast registry and the catalog disagree in a way that needs `feast apply`."""


class CatalogRollbackError(FeastBCError):
    """The catalog is older than what Feast already registered or materialized (e.g. a manifest
    restored from an old backup): applying or materializing it would serve something else."""


class UnsafeDeletionError(FeastBCError):
    """`gc` cannot prove that a file is unused by every registry and is not the last copy of data."""


class ConfigurationError(FeastBCError):
    """A feature_store.yaml (or the environment it reads) cannot work, e.g. an unset $FEAST_BC_REDIS."""


class OnlineStoreUnavailableError(FeastBCError):
    """The online store could not be reached or refused us; rerunning materialize is safe."""


class RegistryWriteError(FeastBCError):
    """The Feast registry file could not be written completely; the previous one is kept."""


class CopiedRepoError(FeastBCError):
    """The repo's registry was applied from another repo that still exists: this one is a copy."""


class StaleOnlineValuesError(FeastBCError):
    """After a materialization, sampled ids of a view do not read what it was asked to write."""


class OnlineStoreFullError(OnlineStoreUnavailableError):
    """The online store ran out of memory (Redis maxmemory); rerunning after freeing memory completes."""


class GateConfigError(FeastBCError):
    """The publish gate's limits file (``bc_catalog/publish_gate.json``) is unreadable or invalid."""


class PublishRefusedError(FeastBCError):
    """The publish gate refused a version: it breaks a declared limit (nothing was written).

    ``override`` names how the caller's path publishes past the gate (``force=True`` from Python;
    a command line says its own flag, :meth:`for_override`)."""

    def __init__(self, reason: str, override: str = "force=True"):
        super().__init__(f"{reason} Override: {override} (recorded in the manifest)")
        self.reason = reason
        self.override = override

    def for_override(self, override: str) -> PublishRefusedError:
        """The same refusal, naming another path's override (e.g. ``--force-publish``)."""
        return PublishRefusedError(self.reason, override)


class LatestSupersededError(RegistryLagError):
    """A materialization reads a latest file that is no longer the catalog's latest (a version was
    published before its views were applied, or while it ran): it stops instead of writing the older
    latest's values, possibly over newer ones."""


class WorkerLostError(FeastBCError):
    """A distributed worker running a materialization slice died (its retries used up)."""


class ObjectStoreError(FeastBCError):
    """The object store holding a catalog cannot be reached, has no such bucket, or refused the request."""


class ConcurrentChangeError(VersionConflictError):
    """Another writer changed a catalog on object storage while this command ran (a lost conditional write)."""
