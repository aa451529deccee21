"""Publishing a new version of a family: the only writer of new artifacts.

Everything is validated in memory first (entity, ids, vectors, B_{k+1}, the version record);
then the new content-addressed artifacts are written, then the manifest is replaced atomically. A
crash at any point leaves the previous manifest in force and at worst some unreferenced files
(reported by :meth:`~feast_bc.catalog.reader.CatalogReader.orphans`); a failed attempt removes
what it wrote itself.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from feast_bc import publish_gate
from feast_bc.artifacts import write_transform
from feast_bc.atomic import atomic_write_bytes
from feast_bc.catalog.layout import ARTIFACTS_DIRNAME, artifact_ref_path, artifact_stem
from feast_bc.catalog.push_log import last_push
from feast_bc.catalog.reader import CatalogReader
from feast_bc.catalog.reference_samples import write_reference
from feast_bc.embeddings import embeddings_table, validate_ids, validate_vectors, write_embeddings
from feast_bc.errors import DimensionMismatchError, FeastBCError, InvalidInputError, VersionConflictError
from feast_bc.gate_records import GateDecision
from feast_bc.manifest import (
    MANIFEST_FILENAME,
    EmbeddingsArtifact,
    EntitySpec,
    FamilyManifest,
    TransformArtifact,
    VersionRecord,
    validation_summary,
)
from feast_bc.transforms import BackwardTransform, LinearTransform


class PublishRequest(NamedTuple):
    """One family's next version, as :meth:`feast_bc.catalog.Catalog.publish` takes it: entity
    vectors for all its entities, B_{k+1} (None for version 0), the entity (first version only),
    the version's metrics, the version number the caller expects (a guard against a racing
    publisher) and a description."""

    family: str
    ids: object
    vectors: object
    transform: BackwardTransform | np.ndarray | None = None
    entity: EntitySpec | Mapping | None = None
    metrics: Mapping[str, float] | None = None
    expected_version: int | None = None
    description: str = ""


@dataclass
class _Prepared:
    """A request validated in memory, with the gate's decision on it."""

    request: PublishRequest
    current: FamilyManifest | None
    entity: EntitySpec
    draft: VersionRecord
    ids: np.ndarray
    vectors: np.ndarray
    transform: BackwardTransform | None
    decision: GateDecision | None


class Publisher:
    """Publishes versions into one catalog: the one publish path (:meth:`feast_bc.catalog.Catalog.publish`,
    ``publish_all`` and every caller in ``training`` run :meth:`publish`)."""

    def __init__(self, catalog: CatalogReader):
        self.catalog = catalog

    def publish(self, requests: Sequence[PublishRequest], *, force: bool = False) -> list[VersionRecord]:
        """Publish the next version of every family in ``requests``, all or none as far as
        validation and the gate go; return their records in order.

        Under the locks of all the families (taken in name order), each request is validated once
        in memory (entity, ids, finiteness, B_{k+1} of shape d_k x d_{k+1}, metrics, no id of the
        current latest left out) and judged once by the publish gate (:mod:`feast_bc.publish_gate`),
        reading the family's current latest file once. Any validation error, or any refusal unless
        ``force`` (which is then recorded), leaves every family unchanged. Only then are the families
        written, one after the other (each atomically: artifacts first, the manifest last).
        """
        families = [r.family for r in requests]
        for family in families:
            self.catalog.family_dir(family)  # validates the name
        if len(set(families)) != len(families):
            raise InvalidInputError(f"one publish names a family twice: {families}; publish one version per family")
        with contextlib.ExitStack() as locks:
            for family in sorted(families):
                locks.enter_context(self.catalog.lock(family))
            gate_file = publish_gate.read_gate_file(self.catalog.root)
            prepared = [self._prepare(request, gate_file) for request in requests]
            refused = [p for p in prepared if p.decision is not None and not p.decision.passed]
            if refused and not force:
                raise publish_gate.refusal(
                    [(p.request.family, p.draft.version, p.decision) for p in refused], self.catalog.root, len(prepared)
                )
            return [self._write(p, forced=force) for p in prepared]

    def check(self, request: PublishRequest) -> GateDecision | None:
        """What :meth:`publish` would decide, without writing or raising on a failed gate: the same
        validation (its errors are raised), then the gate's decision (None: no limits declared)."""
        self.catalog.family_dir(request.family)
        return self._prepare(request, publish_gate.read_gate_file(self.catalog.root)).decision

    def _prepare(self, request: PublishRequest, gate_file) -> _Prepared:
        """Everything validated in memory, and the gate's decision (reads the current latest once)."""
        family = request.family
        current = self._current(family)
        version = 0 if current is None else current.latest_version + 1
        expected = _version_number(request.expected_version)
        if expected is not None and expected != version:
            raise VersionConflictError(
                f"family {family!r}: expected to publish version {expected}, but the next version is {version}"
            )
        entity_spec = _entity_for(family, current, request.entity)
        ids_arr = validate_ids(request.ids, entity_spec.dtype)
        mat = validate_vectors(request.vectors, len(ids_arr))
        b = _transform_for(family, current, version, request.transform, mat.shape[1])
        latest = None
        if current is not None:
            _refuse_clock_ahead(family, current)
            latest = self._latest(family, current, vectors=publish_gate.measures_alignment(gate_file, family, b))
            _refuse_dropped_ids(family, current, latest[0], ids_arr)
        draft = _draft_record(
            family, version, mat.shape[1], self._next_timestamp(family, current), request.metrics, request.description
        )
        decision = publish_gate.evaluate(
            gate_file,
            family,
            current,
            ids=ids_arr,
            vectors=mat,
            transform=b,
            metrics=draft.metrics,
            latest=latest,
            catalog=self.catalog,
        )
        return _Prepared(request, current, entity_spec, draft, ids_arr, mat, b, decision)

    def _latest(self, family: str, current: FamilyManifest, *, vectors: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """(ids, vectors or None) of the current latest file, read once for the checks and the gate."""
        if vectors:
            return self.catalog.latest_embeddings(family, manifest=current)
        join_key = current.entity.join_key
        path = self.catalog.artifact_path(family, current.latest.embeddings)
        try:
            ids = pq.read_table(path, columns=[join_key]).column(join_key).to_numpy(zero_copy_only=False)
        except (OSError, KeyError, pa.ArrowInvalid) as exc:
            raise InvalidInputError(
                f"family {family!r}: the current latest embeddings {path} are unreadable ({exc}); "
                "`feast-bc verify` says what is wrong"
            ) from None
        pushed = self.catalog.pushed(family, current)  # pushed new entities must be in the next version too
        if pushed is None:
            return ids, None
        if ids.dtype.kind in "UO" or pushed.ids.dtype.kind in "UO":
            ids, pushed_ids = ids.astype(object), pushed.ids.astype(object)
        else:
            pushed_ids = pushed.ids
        return np.concatenate([ids, pushed_ids]), None

    def _next_timestamp(self, family: str, current: FamilyManifest | None) -> datetime:
        """:func:`_next_timestamp`, also strictly after the latest version's last push: a push's rows
        must never look newer than the version that folds them in."""
        stamp = _next_timestamp(current)
        if current is not None:
            pushed = last_push(self.catalog.family_dir(family), current.latest_version)
            if pushed is not None and stamp <= pushed.event_time:
                stamp = pushed.event_time + timedelta(microseconds=1)
        return stamp

    def _current(self, family: str) -> FamilyManifest | None:
        """The family's manifest, None for a new family; refuses a dropped one."""
        state = self.catalog.family_state(family)
        if state == "dropped":
            raise InvalidInputError(
                f"family {family!r} was dropped (`feast-bc drop-family`); run `feast-bc drop-family --undo "
                f"--family {family}` before publishing it again"
            )
        # 'missing_manifest' raises here: publishing version 0 over a family that lost its
        # manifest would orphan every version Feast still serves.
        return None if state == "absent" else self.catalog.manifest(family)

    def _write(self, prepared: _Prepared, *, forced: bool) -> VersionRecord:
        """Write the artifacts of a prepared version, then the manifest holding it (with the gate's
        decision, marked forced where it failed); on failure remove what was written."""
        family, current, entity = prepared.request.family, prepared.current, prepared.entity
        ids, vectors, transform = prepared.ids, prepared.vectors, prepared.transform
        decision = prepared.decision
        if decision is not None and not decision.passed and forced:
            decision = decision.model_copy(update={"forced": True})
        draft = prepared.draft.model_copy(update={"gate": decision})
        family_dir = self.catalog.family_dir(family)
        art_dir = family_dir / ARTIFACTS_DIRNAME
        version = draft.version
        written: list[Path] = []
        try:
            table = embeddings_table(entity.join_key, ids, vectors, draft.created_at, version)
            emb_path, emb_sha, emb_size = write_embeddings(art_dir, artifact_stem(version, "embeddings"), table)
            written.append(emb_path)
            t_ref = None
            if transform is not None:
                t_path, t_sha, t_size = write_transform(art_dir, artifact_stem(version, "transform"), transform)
                written.append(t_path)
                t_ref = TransformArtifact(
                    path=artifact_ref_path(t_path),
                    sha256=t_sha,
                    size_bytes=t_size,
                    kind=transform.kind,
                    in_dim=transform.in_dim,
                    out_dim=transform.out_dim,
                )
            e_ref = EmbeddingsArtifact(
                path=artifact_ref_path(emb_path), sha256=emb_sha, size_bytes=emb_size, rows=len(ids)
            )
            r_path, r_ref = write_reference(art_dir, version, entity.join_key, ids, vectors)
            written.append(r_path)
            record = VersionRecord.model_validate(
                {**draft.model_dump(), "embeddings": e_ref, "transform": t_ref, "reference": r_ref}
            )
            manifest = FamilyManifest(
                family=family, entity=entity, versions=[*(current.versions if current else []), record]
            )
            atomic_write_bytes(family_dir / MANIFEST_FILENAME, manifest.to_json_bytes())
        except BaseException:
            # The old manifest is still in force; drop what this attempt wrote (unless a previous
            # identical publish already referenced the same content-addressed file).
            keep = {p.resolve() for p in self.catalog.referenced(family, current)}
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


def _refuse_dropped_ids(family: str, current: FamilyManifest, old: np.ndarray, ids: np.ndarray) -> None:
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


def _version_number(expected_version) -> int | None:
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


def _draft_record(family: str, version: int, dim: int, created_at: datetime, metrics, description) -> VersionRecord:
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


#: How far a version's publish time may lie ahead of this machine's clock before publishing refuses.
CLOCK_SKEW_ALLOWED = timedelta(seconds=60)


def _refuse_clock_ahead(family: str, current: FamilyManifest) -> None:
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


def _next_timestamp(current: FamilyManifest | None) -> datetime:
    """Now (UTC, microseconds); strictly after the previous version even if the clock stepped back.

    The value doubles as the event timestamp of every row of this version, which is what makes
    Feast's online stores overwrite the previous version's values on re-materialization.
    """
    now = datetime.now(UTC)
    if current is not None and now <= current.latest.created_at:
        now = current.latest.created_at + timedelta(microseconds=1)
    return now
