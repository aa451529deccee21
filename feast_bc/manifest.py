"""The version manifest of one embedding family: what exists, where, and with which checksum.

The manifest is the single source of truth the serving side trusts. It is plain JSON (data, never
code), validated by pydantic on every load, and carries a sha256 of its own canonical content so a
hand-edited or torn file is refused instead of silently serving wrong vectors.

Invariants checked on every load (so a manifest that passes is safe to serve from):

* versions are numbered 0..k without gaps and were created in increasing time order;
* version 0 has no transform, every later version v has a transform B_v with
  ``in_dim == dim(v)`` and ``out_dim == dim(v-1)`` (B_v may be pruned once every version
  older than v is retired: nothing needs it then);
* the latest version has its embeddings artifact (older versions may have been pruned);
* artifact paths are relative and stay inside the family directory.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from feast_bc.atomic import sha256_bytes
from feast_bc.errors import ManifestError, RetiredVersionError, UnknownVersionError
from feast_bc.gate_records import GateDecision
from feast_bc.manifest_parts import (
    ArtifactRef,
    EmbeddingsArtifact,
    EntitySpec,
    ReferenceArtifact,
    Strict,
    TransformArtifact,
    validation_summary,
)
from feast_bc.naming import family_name_problem

SCHEMA_VERSION = 1
MANIFEST_FILENAME = "manifest.json"
#: A manifest holds a few hundred bytes per version; anything this large is not one.
MAX_MANIFEST_BYTES = 64 << 20


class VersionRecord(Strict):
    version: int = Field(ge=0)
    dim: int = Field(ge=1)
    created_at: datetime
    embeddings: EmbeddingsArtifact | None = Field(
        default=None, description="kept for the latest version; None once pruned"
    )
    transform: TransformArtifact | None = Field(
        default=None, description="B_version mapping version -> version-1; None for version 0"
    )
    metrics: dict[str, float] = Field(default_factory=dict)
    description: str = ""
    retired_at: datetime | None = Field(
        default=None, description="set when operators stop serving this version (its B stays in the chain)"
    )
    serving: Literal["stored", "on_read"] = Field(
        default="stored",
        description="'stored': materialized into the online store; 'on_read': computed from the latest at request time",
    )
    gate: GateDecision | None = Field(
        default=None, description="the publish gate's decision and figures; absent when no limits were declared"
    )
    reference: ReferenceArtifact | None = Field(
        default=None, description="a sample of this version's values at its publish (drift since publish)"
    )

    @model_serializer(mode="wrap")
    def _omit_absent_gate(self, handler):
        # Written only when there is one, so a version without a gate (or without a reference
        # sample) serializes (and is sealed) exactly as before the field existed: older manifests
        # keep their checksums.
        data = handler(self)
        for optional in ("gate", "reference"):
            if data.get(optional) is None:
                data.pop(optional, None)
        return data

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        return value.astimezone(UTC)

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"metrics must be finite numbers; not finite: {bad}")
        return value


class FamilyManifest(Strict):
    """All versions of one embedding family (one entity)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    family: str
    entity: EntitySpec
    versions: list[VersionRecord] = Field(min_length=1)
    checksum: str | None = Field(default=None, description="sha256 of the canonical JSON of every other field")

    @field_validator("family")
    @classmethod
    def _family_name(cls, value: str) -> str:
        problem = family_name_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _chain_is_consistent(self) -> FamilyManifest:
        for index, rec in enumerate(self.versions):
            if rec.version != index:
                raise ValueError(f"versions must be numbered 0..k without gaps; position {index} holds {rec.version}")
            if index == 0:
                if rec.transform is not None:
                    raise ValueError("version 0 cannot have a backward transform")
                continue
            prev = self.versions[index - 1]
            if rec.created_at <= prev.created_at:
                raise ValueError(f"version {index} is not newer than version {index - 1}")
            t = rec.transform
            if t is None:
                # B_v may only be dropped once no older version is served any more.
                if all(r.retired_at is not None for r in self.versions[:index]):
                    continue
                raise ValueError(f"version {index} has no backward transform B_{index}")
            if (t.out_dim, t.in_dim) != (prev.dim, rec.dim):
                raise ValueError(
                    f"B_{index} maps {t.in_dim} -> {t.out_dim} but versions {index}/{index - 1} "
                    f"have dims {rec.dim}/{prev.dim}"
                )
        if self.versions[-1].embeddings is None:
            raise ValueError("the latest version must keep its embeddings artifact")
        if self.versions[-1].retired_at is not None:
            raise ValueError("the latest version cannot be retired")
        if self.versions[-1].serving != "stored":
            raise ValueError("the latest version is the stored one; it cannot be served on read")
        return self

    # ----------------------------------------------------------------------------- queries
    @property
    def latest(self) -> VersionRecord:
        return self.versions[-1]

    @property
    def latest_version(self) -> int:
        return self.versions[-1].version

    @property
    def served_versions(self) -> list[int]:
        """Versions that get a Feast view and FeatureService (all but the retired ones)."""
        return [v.version for v in self.versions if v.retired_at is None]

    def version(self, version: int) -> VersionRecord:
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < len(self.versions):
            raise UnknownVersionError(
                f"family {self.family!r} has no version {version!r}; available versions: "
                f"{', '.join(str(v.version) for v in self.versions)} (latest {self.latest_version})"
            )
        return self.versions[version]

    def chain(self, source: int, target: int) -> list[TransformArtifact]:
        """Transforms B_source, ..., B_{target+1}: applied in that order they map source -> target."""
        self.version(source)
        self.version(target)
        if target > source:
            raise UnknownVersionError(
                f"family {self.family!r}: cannot map version {source} forward to {target}; "
                "backward transforms only go to older versions"
            )
        chain = [self.versions[v].transform for v in range(source, target, -1)]
        missing = [v for v, t in zip(range(source, target, -1), chain, strict=True) if t is None]
        if missing:
            raise RetiredVersionError(
                f"family {self.family!r}: version {target} is retired and B_{missing[-1]}, which it needs, was "
                "pruned (`feast-bc gc --prune`); it can no longer be computed from the latest embeddings"
            )
        return chain  # type: ignore[return-value]

    def pruned_versions(self) -> list[int]:
        """Retired versions whose chain was pruned (`feast-bc gc --prune`): nothing can compute them any more."""
        return [
            v
            for v in range(self.latest_version)
            if self.versions[v].retired_at is not None
            and any(self.versions[u].transform is None for u in range(v + 1, self.latest_version + 1))
        ]

    def artifact_refs(self) -> list[ArtifactRef]:
        """Every artifact the manifest references (transforms, embeddings and reference samples)."""
        return [
            ref for rec in self.versions for ref in (rec.transform, rec.embeddings, rec.reference) if ref is not None
        ]

    # ----------------------------------------------------------------------- serialization
    def _canonical(self) -> bytes:
        payload = self.model_dump(mode="json", exclude={"checksum"})
        return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

    def computed_checksum(self) -> str:
        return sha256_bytes(self._canonical())

    def sealed(self) -> FamilyManifest:
        """A copy carrying the checksum of its own content (what gets written to disk)."""
        return self.model_copy(update={"checksum": self.computed_checksum()})

    def to_json_bytes(self) -> bytes:
        sealed = self.sealed()
        return (json.dumps(sealed.model_dump(mode="json"), indent=2, sort_keys=False) + "\n").encode()

    @classmethod
    def from_json_bytes(cls, data: bytes, *, origin: str = "manifest") -> FamilyManifest:
        try:
            return cls._from_json_bytes(data, origin)
        except RecursionError:
            raise ManifestError(f"{origin} is nested too deeply to be a manifest; refusing to use it") from None

    @classmethod
    def _from_json_bytes(cls, data: bytes, origin: str) -> FamilyManifest:
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestError(
                f"{origin} is {len(data)} bytes, more than any manifest needs ({MAX_MANIFEST_BYTES}); refusing to parse it"
            )
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{origin} is not valid JSON ({exc}); refusing to use it") from exc
        if not isinstance(raw, dict):
            raise ManifestError(f"{origin} must hold a JSON object")
        schema = raw.get("schema_version")
        if schema != SCHEMA_VERSION:
            raise ManifestError(f"{origin} has schema_version {schema!r}; this feast_bc reads schema {SCHEMA_VERSION}")
        recorded = raw.get("checksum")
        if recorded is None:
            raise ManifestError(f"{origin} carries no checksum; refusing an unsealed manifest")
        # Check the seal on the raw content first, so an edited file is reported as edited rather
        # than as whatever invariant the edit happened to break.
        content = {k: v for k, v in raw.items() if k != "checksum"}
        actual = sha256_bytes(json.dumps(content, sort_keys=True, separators=(",", ":")).encode())
        if actual != recorded:
            raise ManifestError(
                f"{origin} fails its checksum (recorded {str(recorded)[:12]}..., content {actual[:12]}...): "
                "it was edited or torn; restore it from backup or republish"
            )
        try:
            manifest = cls.model_validate(raw)
        except ValidationError as exc:
            raise ManifestError(f"{origin} is not a valid feast_bc manifest: {validation_summary(exc)}") from None
        if manifest.checksum != manifest.computed_checksum():
            raise ManifestError(f"{origin} does not round-trip to its checksum; refusing it")
        return manifest
