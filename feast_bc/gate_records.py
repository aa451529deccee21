"""The publish gate's records: the limits a repo declares (the schema of ``publish_gate.json``) and
the decision recorded on each gated version.

Data only, kept apart from the gate's evaluation (:mod:`feast_bc.publish_gate`) because the
manifest stores a :class:`GateDecision` per version: the manifest imports this module, and the
evaluation, which reads the catalog, imports the manifest -- one direction, no circle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from feast_bc.naming import family_name_problem

GATE_FILENAME = "publish_gate.json"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _finite(values: Mapping, what: str) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"{what} must be finite numbers; not finite: {bad}")


class GateLimits(_Frozen):
    """What a new version must satisfy (every field optional; an empty object declares nothing)."""

    max_alignment_error: float | None = Field(default=None, ge=0, description="to every live older version")
    max_alignment_error_per_version: dict[int, float] = Field(default_factory=dict)
    max_drift_since_publish: float | None = Field(
        default=None, ge=0, description="what every served version would serve vs its values at its own publish"
    )
    min_metrics: dict[str, float] = Field(default_factory=dict)
    max_metrics: dict[str, float] = Field(default_factory=dict)

    @field_validator("max_alignment_error", "max_drift_since_publish")
    @classmethod
    def _finite_error(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("max_alignment_error_per_version")
    @classmethod
    def _per_version(cls, value: dict[int, float]) -> dict[int, float]:
        _finite(value, "alignment limits")
        if any(k < 0 or v < 0 for k, v in value.items()):
            raise ValueError("versions and limits must be >= 0")
        return value

    @field_validator("min_metrics", "max_metrics")
    @classmethod
    def _metric_limits(cls, value: dict[str, float]) -> dict[str, float]:
        _finite(value, "metric limits")
        return value

    def alignment_limit(self, version: int) -> tuple[str, float | None]:
        """(the limit's name, its value) for the alignment error to ``version``."""
        if version in self.max_alignment_error_per_version:
            return f"max_alignment_error_per_version[{version}]", self.max_alignment_error_per_version[version]
        return "max_alignment_error", self.max_alignment_error

    @property
    def measures_alignment(self) -> bool:
        return self.max_alignment_error is not None or bool(self.max_alignment_error_per_version)


class GateFile(GateLimits):
    """The file: limits for every family, plus per-family overrides."""

    families: dict[str, GateLimits] = Field(default_factory=dict)

    @field_validator("families")
    @classmethod
    def _family_names(cls, value: dict[str, GateLimits]) -> dict[str, GateLimits]:
        for name in value:
            if family_name_problem(name):
                raise ValueError(family_name_problem(name))
        return value

    def limits_for(self, family: str) -> GateLimits:
        base = self.model_dump(exclude={"families"})
        section = self.families.get(family)
        if section is not None:
            base.update({f: getattr(section, f) for f in section.model_fields_set})
        return GateLimits.model_validate(base)


class GateCheck(_Frozen):
    name: str = Field(description="what was measured, e.g. 'alignment error to v0' or 'val_recall@50'")
    limit_name: str = Field(description="the limit in the gate file, e.g. 'max_alignment_error'")
    bound: Literal["max", "min"]
    limit: float
    measured: float | None = Field(description="None when it could not be measured (see note)")
    passed: bool
    note: str = ""

    def describe(self) -> str:
        got = "not measured" if self.measured is None else f"{self.measured:.4g}"
        op = {("max", True): "<=", ("max", False): ">", ("min", True): ">=", ("min", False): "<"}[
            self.bound, self.passed
        ]
        text = f"{self.name} {got} {op} {self.limit_name} = {self.limit:g}"
        return text + (f" ({self.note})" if self.note else "")


class GateDecision(_Frozen):
    """The gate's verdict on one published version, as recorded in its manifest."""

    passed: bool = Field(description="every check held")
    forced: bool = Field(default=False, description="published with force=True although a check failed")
    limits_file: str = GATE_FILENAME
    limits_sha256: str
    limits: GateLimits = Field(description="the limits in force for this family")
    checks: list[GateCheck] = Field(default_factory=list)

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> str:
        """One line for `feast-bc status`."""
        verdict = "passed" if self.passed else ("FORCED past" if self.forced else "failed")
        shown = self.failed or self.checks
        detail = "; ".join(c.describe() for c in shown) or "no check applied"
        return f"{verdict}: {detail}"
