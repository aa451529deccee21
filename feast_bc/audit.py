"""The online audit: read pinned versions the way a consumer does and compare them with the catalog.

Why: every other check (``verify``, the registry checks of ``status``) looks at files, and a pin
can serve wrong values while all of them pass -- an interval recorded by another profile, an online
store swapped under a registry, a materialization that ended before the publish, ids the latest no
longer has. What a consumer reads is the truth, so this module reads it: for every profile whose
registry exists, every family and every served version, a sample of ids goes through Feast's own
``get_online_features`` on the version's FeatureService and each value is compared with
:func:`feast_bc.export.export_version` (the same formula materialization uses) within
:data:`~feast_bc.audit_expected.TOLERANCE` (what each pin must read: :mod:`feast_bc.audit_expected`).

The sample holds ids of the latest version (spread evenly over its file) and ids that only older,
still stored versions have (a consumer must read None for them). A wrong value that equals what an
older latest would give is reported as *stale* (with the version it comes from), anything else as
*wrong*. Each finding names the command that repairs it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from feast_bc.audit_expected import TOLERANCE, FamilySample, Verdict, compare, expected_values
from feast_bc.catalog import Catalog
from feast_bc.errors import FeastBCError
from feast_bc.naming import EMBEDDING_FEATURE, TAG_FAMILY, TAG_LATEST, service_name
from feast_bc.registries import Profile, repo_profiles

logger = logging.getLogger(__name__)

#: Ids read per pinned version by `feast-bc status` and `feast-bc audit` unless told otherwise.
DEFAULT_SAMPLE = 64

FindingKind = Literal["missing", "stale", "wrong", "extra", "columns", "unregistered", "unreadable"]


class Finding(BaseModel):
    """One way a pin serves something other than the catalog says, on one profile."""

    profile: str
    family: str
    version: int | None = None
    kind: FindingKind
    count: int = Field(default=1, description="sampled ids affected")
    examples: list[str] = Field(default_factory=list, description="a few of the affected ids")
    detail: str
    repair: str = Field(description="the command (or step) that makes the pin right")

    def line(self) -> str:
        where = f"{self.family} v{self.version}" if self.version is not None else self.family
        ids = f" (e.g. ids {', '.join(self.examples)})" if self.examples else ""
        return f"{self.profile}: {where}: {self.kind}: {self.detail}{ids} -- {self.repair}"


class PinCheck(BaseModel):
    """One pinned version read on one profile."""

    profile: str
    family: str
    version: int
    service: str
    ids_read: int
    max_abs_diff: float | None = Field(description="over the ids both the pin and the catalog have a value for")


class AuditReport(BaseModel):
    repo: str
    sample: int
    checked: list[PinCheck] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def audit_repo(repo: str | Path, *, sample: int = DEFAULT_SAMPLE, fs_yaml_files: list | tuple = ()) -> AuditReport:
    """Read ``sample`` ids per served version through every applied profile of ``repo``.

    A profile counts as applied when its registry file exists; one that cannot be read or built is
    a finding (nothing it serves could be checked). Never raises for a broken repo: every problem
    is a finding or a note."""
    if int(sample) < 1:
        raise FeastBCError(f"--sample must be at least 1, got {sample}")
    repo = Path(repo).absolute()
    report = AuditReport(repo=str(repo), sample=int(sample))
    catalog = Catalog.for_repo(repo)
    expected = expected_values(catalog, int(sample), report)
    if not expected:
        return report
    for profile in repo_profiles(repo, list(fs_yaml_files)):
        if profile.problem:
            report.notes.append(f"{profile.name}: not audited ({profile.problem})")
            continue
        if not profile.applied():
            report.notes.append(
                f"{profile.name}: not audited (never applied: no registry at {profile.registry_location})"
            )
            continue
        _audit_profile(repo, profile, expected, report)
    return report


def materialize_repair(profile: Profile) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"run `{profile.feast_args()} materialize 2000-01-01T00:00:00 {now}`"


def _audit_profile(repo: Path, profile: Profile, expected: dict[str, FamilySample], report: AuditReport) -> None:
    try:
        from feast import FeatureStore

        store = FeatureStore(repo_path=str(repo), fs_yaml_file=profile.yaml)
        services = {s.name: s for s in store.list_feature_services() if s.tags.get(TAG_FAMILY)}
    except Exception as exc:  # noqa: BLE001 - any failure means nothing of this profile was checked
        for family in expected:
            report.findings.append(
                Finding(
                    profile=profile.name,
                    family=family,
                    kind="unreadable",
                    detail=f"cannot read what this profile serves ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                    repair=f"fix {profile.name} (e.g. its connection string) and run `feast-bc audit` again",
                )
            )
        return
    for family, fs in expected.items():
        registered = {n: s for n, s in services.items() if s.tags.get(TAG_FAMILY) == family}
        if not registered:
            continue  # never applied for this family: `status` reports it; nothing is served to read
        lagging = any(int(s.tags.get(TAG_LATEST, -1)) != fs.manifest.latest_version for s in registered.values())
        repair = (
            f"run `{profile.feast_args()} apply`, then {materialize_repair(profile)[4:]}"
            if lagging
            else materialize_repair(profile)
        )
        for version in fs.manifest.served_versions:
            name = service_name(family, version)
            if name not in registered:
                report.findings.append(
                    Finding(
                        profile=profile.name,
                        family=family,
                        version=version,
                        kind="unregistered",
                        detail=f"FeatureService {name} is not in the registry, consumers cannot pin it",
                        repair=f"run `{profile.feast_args()} apply`",
                    )
                )
                continue
            _audit_pin(store, profile, fs, version, registered[name], repair, report)


def _read(store, service, join_key: str, ids, *, full_names: bool) -> tuple[list[str], dict]:
    """(the response's column names, as the HTTP server and ``to_df`` see them; ``to_dict()``)."""
    rows = [{join_key: (int(i) if isinstance(i, (np.integer, int)) else str(i))} for i in ids]
    resp = store.get_online_features(features=service, entity_rows=rows, full_feature_names=full_names)
    return list(resp.proto.metadata.feature_names.val), resp.to_dict()


def _audit_pin(store, profile: Profile, fs: FamilySample, version: int, service, repair: str, report) -> None:
    """Read the sample of one pin through Feast and report what it serves (checked values, findings)."""
    family = fs.manifest.family
    join_key = fs.manifest.entity.join_key
    ids = np.concatenate([fs.ids, fs.absent]) if len(fs.absent) else fs.ids
    base = dict(profile=profile.name, family=family, version=version)
    try:
        plain_names, plain = _read(store, service, join_key, ids, full_names=False)
        full_names, _ = _read(store, service, join_key, ids[: min(4, len(ids))], full_names=True)
    except Exception as exc:  # noqa: BLE001 - a pin a consumer cannot read is a finding, not a crash
        report.findings.append(
            Finding(
                **base,
                kind="unreadable",
                detail=f"get_online_features failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                repair=f"fix what the error names; `{profile.feast_args()} apply` if the registry is stale",
            )
        )
        return
    report.findings.extend(_column_findings(base, join_key, plain_names, full_names))
    values = plain.get(EMBEDDING_FEATURE, [None] * len(ids))
    verdict = compare(fs, version, ids, values)
    report.checked.append(
        PinCheck(
            profile=profile.name,
            family=family,
            version=version,
            service=service.name,
            ids_read=len(ids),
            max_abs_diff=verdict.worst,
        )
    )
    report.findings.extend(_value_findings(base, profile, fs, version, len(ids), verdict, repair))


def _column_findings(base: dict, join_key: str, plain_names: list, full_names: list) -> list[Finding]:
    """The pin's response columns, with and without full feature names, against what a consumer expects."""
    family, version = base["family"], base["version"]
    full_key = f"{family}__{EMBEDDING_FEATURE}"
    findings = []
    for got, want, how in (
        (plain_names, [join_key, EMBEDDING_FEATURE], "full_feature_names=False"),
        (full_names, [join_key, full_key], "full_feature_names=True"),
    ):
        if got != want:
            why = ""
            if got.count(EMBEDDING_FEATURE) > 1:
                why = (
                    " (Feast drops an on-demand view's input columns by name, and its input, the latest version, "
                    "is also called 'embedding': the HTTP server and to_df() return both, to_dict() keeps the last)"
                )
            findings.append(
                Finding(
                    **base,
                    kind="columns",
                    detail=f"with {how} the pin returns columns {got}, not {want}{why}",
                    repair=f"serve it stored: `feast-bc serving --family {family} --version {version} --mode stored`, "
                    "`feast apply`, then materialize",
                )
            )
    return findings


def _value_findings(
    base: dict, profile: Profile, fs: FamilySample, version: int, read: int, verdict: Verdict, repair: str
) -> list[Finding]:
    """One finding per kind of discrepancy, with the command that repairs it."""
    n, k = len(fs.ids), fs.manifest.latest_version
    groups = [("missing", verdict.missing, f"of {n} sampled ids of the latest version read None", repair)]
    groups += [
        (
            "stale",
            keys,
            f"of {n} sampled ids serve values computed from version {source}, not from the latest {k}",
            repair,
        )
        for source, keys in sorted(verdict.stale.items())
    ]
    groups.append(
        (
            "wrong",
            verdict.wrong,
            f"of {n} sampled ids differ from `feast-bc export --version {version}` by more than {TOLERANCE:g}",
            repair,
        )
    )
    groups.append(
        (
            "extra",
            verdict.extra,
            f"of {read - n} sampled ids that the latest version {k} no longer has still serve a value",
            "publish a version that includes these ids again (the online store keeps rows nothing rewrites), "
            f"or rebuild this profile's online store: `{profile.feast_args()} teardown`, `apply`, then materialize",
        )
    )
    return [
        Finding(**base, kind=kind, count=len(keys), examples=keys[:5], detail=f"{len(keys)} {detail}", repair=fix)
        for kind, keys, detail, fix in groups
        if keys
    ]


def render_audit(report: AuditReport) -> str:
    lines = [f"audit of {report.repo}: {report.sample} ids per pinned version, read through Feast"]
    for c in report.checked:
        diff = "-" if c.max_abs_diff is None else f"{c.max_abs_diff:.2e}"
        lines.append(f"  {c.profile:28} {c.service:32} read {c.ids_read:>4}  max|online-catalog| {diff}")
    lines += [f"note: {n}" for n in report.notes]
    lines += [f"FINDING: {f.line()}" for f in report.findings]
    if not report.checked and not report.findings:
        lines.append("nothing served yet: no applied profile registers a family")
    lines.append("OK: every pin read equals the catalog" if report.ok else f"NOT OK: {len(report.findings)} finding(s)")
    return "\n".join(lines)
