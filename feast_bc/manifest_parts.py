"""The parts a manifest is made of, each validated where it enters: references to artifact files
(pinned by path, size and sha256), the family's entity, and pydantic's errors as one line."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from feast_bc.errors import InvalidInputError
from feast_bc.naming import identifier_problem

_SHA256_PATTERN = r"^[0-9a-f]{64}$"


def validation_summary(exc: ValidationError) -> str:
    """One line per problem instead of pydantic's multi-line report."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors())


class Strict(BaseModel):
    """Frozen, and no field a reader does not know (an unknown key is refused, never ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ArtifactRef(Strict):
    """A file published with the family, pinned by content."""

    path: str = Field(description="POSIX path relative to the family directory")
    sha256: str = Field(pattern=_SHA256_PATTERN)
    size_bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _relative_inside(cls, value: str) -> str:
        p = PurePosixPath(value)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise ValueError(f"artifact path {value!r} must be relative and stay inside the family directory")
        return value


class EmbeddingsArtifact(ArtifactRef):
    rows: int = Field(ge=1)


class ReferenceArtifact(ArtifactRef):
    """A fixed sample of a version's own values when it was published (:mod:`feast_bc.drift`)."""

    rows: int = Field(ge=1)


class TransformArtifact(ArtifactRef):
    kind: str = Field(description="transform kind, e.g. 'linear'")
    in_dim: int = Field(ge=1, description="dimension of version v")
    out_dim: int = Field(ge=1, description="dimension of version v-1")


class EntitySpec(Strict):
    """The Feast entity the family's vectors belong to."""

    name: str
    join_key: str
    dtype: Literal["int64", "string"] = "int64"
    description: str = ""

    def __init__(self, **data):
        # Constructed by callers (not loaded from a manifest): refuse with feast_bc's own error type.
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise InvalidInputError(f"invalid entity spec: {validation_summary(exc)}") from None

    @field_validator("name", "join_key")
    @classmethod
    def _identifier(cls, value: str, info) -> str:
        problem = identifier_problem(value, "entity name" if info.field_name == "name" else "join key")
        if problem:
            raise ValueError(problem)
        return value
