"""What a publish must satisfy before anything is written, each check on its own (used by
:class:`~feast_bc.catalog.publishing.Publisher`): the expected version, the entity, the backward
transform's shape, metrics and description, every id of the current latest (and its pushes) kept,
and a publish time strictly after the previous version and not behind a clock that ran ahead."""

from __future__ import annotations

import operator
from datetime import UTC, datetime, timedelta

import numpy as np
from pydantic import ValidationError

from feast_bc.errors import DimensionMismatchError, FeastBCError, InvalidInputError
from feast_bc.manifest import EntitySpec, FamilyManifest, VersionRecord, validation_summary
from feast_bc.transforms import BackwardTransform, LinearTransform


def refuse_dropped_ids(family: str, current: FamilyManifest, old: np.ndarray, ids: np.ndarray) -> None:
    """Every id of the current latest (``old``) must be in the new version.

    Why: every pinned version is computed from the latest, and a materialization only writes
    the ids the latest has; Feast's online stores never delete a row nothing rewrites. An id
    left out would keep serving its old values on every pin while `feast-bc export` has none."""
    if old.dtype.kind in "UO" or ids.dtype.kind in "UO":
        old, ids = old.astype(object), ids.astype(object)
    gone = np.setdiff1d(old, ids)
    if gone.size:
        raise InvalidInputError(
            f"family {family!r}: version {current.latest_version + 1} lacks {gone.size} of the "
            f"{len(old)} ids of version {current.latest_version} (e.g. {', '.join(map(str, gone[:5]))}). "
            "Every pinned version is computed from the latest and online stores keep rows nothing rewrites, "
            "so those entities would keep serving old values while `feast-bc export` has none. Publish "
            "vectors for them too (embed them with the new model)"
        )


def version_number(expected_version) -> int | None:
    if expected_version is None:
        return None
    if isinstance(expected_version, (bool, np.bool_)):
        raise InvalidInputError(f"expected_version must be a version number, not {expected_version!r}")
    try:
        return operator.index(expected_version)
    except TypeError:
        raise InvalidInputError(
            f"expected_version must be an integer version number, not {expected_version!r} "
            f"({type(expected_version).__name__})"
        ) from None


def draft_record(family: str, version: int, dim: int, created_at: datetime, metrics, description) -> VersionRecord:
    """The new version's record before its artifacts exist: validates metrics and description.

    The rest of what the manifest checks on load holds by construction: the version number follows
    the latest, ``created_at`` is strictly later, and B_version maps d_version -> d_{version-1}
    (:func:`_transform_for`).
    """
    try:
        return VersionRecord(
            version=version, dim=dim, created_at=created_at, metrics=dict(metrics or {}), description=description
        )
    except ValidationError as exc:
        raise InvalidInputError(f"family {family!r}, version {version}: {validation_summary(exc)}") from None


def entity_for(family: str, current: FamilyManifest | None, entity) -> EntitySpec:
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


def transform_for(
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


#: How far a version's publish time may lie ahead of this machine's clock before publishing refuses.
CLOCK_SKEW_ALLOWED = timedelta(seconds=60)


def refuse_clock_ahead(family: str, current: FamilyManifest) -> None:
    """The latest version's publish time is later than now: a publisher's clock was ahead.

    Its rows carry that time as their event timestamp, so no materialization ending now writes them
    (a materialization refuses such a window), and the next version would be stamped after it too."""
    ahead = current.latest.created_at - datetime.now(UTC)
    if ahead > CLOCK_SKEW_ALLOWED:
        raise InvalidInputError(
            f"family {family!r}: version {current.latest_version} was published at "
            f"{current.latest.created_at.isoformat()}, {ahead} ahead of this machine's clock: the clock of the "
            "machine that published it was ahead (or this one is behind). Fix the clocks (NTP) and publish again "
            "once this clock has passed that time; until then a new version would be stamped in the future too"
        )


def next_timestamp(current: FamilyManifest | None) -> datetime:
    """Now (UTC, microseconds); strictly after the previous version even if the clock stepped back.

    The value doubles as the event timestamp of every row of this version, which is what makes
    Feast's online stores overwrite the previous version's values on re-materialization.
    """
    now = datetime.now(UTC)
    if current is not None and now <= current.latest.created_at:
        now = current.latest.created_at + timedelta(microseconds=1)
    return now
