"""Publishing a new version of a family: the only writer of new artifacts.

Everything is validated in memory first (entity, ids, vectors, B_{k+1}, the version record);
then the new content-addressed artifacts are written, then the manifest is replaced atomically. A
crash at any point leaves the previous manifest in force and at worst some unreferenced files
(reported by :meth:`~feast_bc.catalog.reader.CatalogReader.orphans`); a failed attempt removes
what it wrote itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc import publish_gate
from feast_bc.artifacts import write_transform
from feast_bc.atomic import atomic_write_bytes
from feast_bc.catalog.layout import ARTIFACTS_DIRNAME, artifact_ref_path, artifact_stem
from feast_bc.catalog.publish_checks import (
    draft_record,
    entity_for,
    next_timestamp,
    refuse_clock_ahead,
    refuse_dropped_ids,
    transform_for,
    version_number,
)
from feast_bc.catalog.push_log import last_push
from feast_bc.catalog.reader import CatalogReader
from feast_bc.catalog.reference_samples import write_reference
from feast_bc.embeddings import embeddings_table, validate_ids, validate_vectors, write_embeddings
from feast_bc.errors import InvalidInputError, VersionConflictError
from feast_bc.gate_records import GateDecision
from feast_bc.manifest import (
    MANIFEST_FILENAME,
    EmbeddingsArtifact,
    EntitySpec,
    FamilyManifest,
    TransformArtifact,
    VersionRecord,
)
from feast_bc.transforms import BackwardTransform


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
        expected = version_number(request.expected_version)
        if expected is not None and expected != version:
            raise VersionConflictError(
                f"family {family!r}: expected to publish version {expected}, but the next version is {version}"
            )
        entity_spec = entity_for(family, current, request.entity)
        ids_arr = validate_ids(request.ids, entity_spec.dtype)
        mat = validate_vectors(request.vectors, len(ids_arr))
        b = transform_for(family, current, version, request.transform, mat.shape[1])
        latest = None
        if current is not None:
            refuse_clock_ahead(family, current)
            latest = self._latest(family, current, vectors=publish_gate.measures_alignment(gate_file, family, b))
            refuse_dropped_ids(family, current, latest[0], ids_arr)
        draft = draft_record(
            family, version, mat.shape[1], self._publish_time(family, current), request.metrics, request.description
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
        return (ids if pushed is None else np.concatenate([ids, pushed.ids])), None

    def _publish_time(self, family: str, current: FamilyManifest | None) -> datetime:
        """:func:`~feast_bc.catalog.publish_checks.next_timestamp`, also strictly after the latest
        version's last push: a push's rows must never look newer than the version that folds them in."""
        stamp = next_timestamp(current)
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
