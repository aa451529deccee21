"""The operator's view of a feast_bc repo: what is published, what Feast knows, what is stale.

:func:`repo_status` never raises on a broken repo: every problem becomes a line in
``problems`` (and ``ok`` is False) so `feast-bc status` can show all of them at once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from feast_bc.audit import DEFAULT_SAMPLE, audit_repo
from feast_bc.catalog import Catalog
from feast_bc.catalog.maintenance import on_read_problem
from feast_bc.drift import Drift, drift_since_publish
from feast_bc.errors import FeastBCError
from feast_bc.gate_records import GateDecision
from feast_bc.manifest import MANIFEST_FILENAME
from feast_bc.naming import TAG_FAMILY, TAG_LATEST, onread_view_name, service_name, view_name
from feast_bc.publish_gate import gate_path, read_gate_file
from feast_bc.registries import DEFAULT_PROFILE_FILENAME, repo_registries, rollback_problem

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class VersionStatus(BaseModel):
    version: int
    dim: int
    created_at: datetime
    role: str = Field(description="'latest' (stored), 'derived' (stored, through transforms), 'on_read' or 'retired'")
    transform_sha256: str | None = None
    embeddings_sha256: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    gate: GateDecision | None = Field(default=None, description="the publish gate's decision; None: no limits declared")
    drift: Drift | None = Field(
        default=None, description="what it serves now vs at its own publish; None: retired, or no reference sample"
    )
    feature_view: str
    feature_service: str
    registered: bool | None = None
    materialized_intervals: list[tuple[datetime, datetime]] = Field(default_factory=list)


class FamilyStatus(BaseModel):
    family: str
    entity: str
    join_key: str
    latest: int | None = None
    rows: int | None = None
    manifest_sha256: str | None = None
    registry_latest: int | None = Field(default=None, description="latest version the Feast registry knows")
    versions: list[VersionStatus] = Field(default_factory=list)
    pushes: int = Field(default=0, description="pushes into the latest version since it was published")
    pushed_entities: int = Field(default=0, description="distinct entities those pushes carried")
    last_push: datetime | None = None
    orphans: list[str] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


class RepoStatus(BaseModel):
    repo: str
    catalog: str
    families: list[FamilyStatus] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list, description="things ignored or not checked (not problems)")
    checks: str = Field(
        default="catalog: every check of `feast-bc verify`",
        description="what was checked, so an OK is never read as more than it is",
    )

    @property
    def ok(self) -> bool:
        return not self.problems and all(not f.problems for f in self.families)


def repo_status(
    repo: str | Path, *, feast: bool = True, fs_yaml_file: str | Path | None = None, sample: int = DEFAULT_SAMPLE
) -> RepoStatus:
    """Catalog, registries and -- with ``feast`` and ``sample`` > 0 -- what consumers read: ``sample``
    ids per pinned version through every applied profile (:func:`feast_bc.audit.audit_repo`)."""
    repo = Path(repo).absolute()
    catalog = Catalog.for_repo(repo)
    report = RepoStatus(repo=str(repo), catalog=catalog.location)
    if not repo.is_dir():
        report.problems.append(f"{repo} does not exist")
        return report
    registry = _registry_views(repo, fs_yaml_file, report) if feast else None
    report.notes += catalog.ignored_entries()
    _gate_note(catalog, report)
    for family in catalog.families():
        report.families.append(_family_status(catalog, family, registry))
    dropped = catalog.dropped_families()
    if feast:
        report.checks += "; Feast: the registry of every feature_store*.yaml profile of the repo"
        _check_all_profiles(repo, catalog, fs_yaml_file, report, dropped)
        if sample > 0:
            audit = audit_repo(repo, sample=sample, fs_yaml_files=[fs_yaml_file] if fs_yaml_file else [])
            report.checks += (
                f"; online: {sample} ids per pinned version read through get_online_features on every applied "
                f"profile ({len(audit.checked)} pins read)"
            )
            report.problems += [f"online audit: {f.line()}" for f in audit.findings]
            report.notes += [f"online audit: {n}" for n in audit.notes]
        else:
            report.checks += "; online values not read (--sample 0)"
    else:
        report.checks += "; Feast registries and online values not read (--no-feast)"
    for family, tombstone in dropped.items():
        report.notes.append(
            f"family {family} was dropped at {tombstone.get('dropped_at', '?')} (`feast-bc drop-family`)"
        )
    return report


def _gate_note(catalog: Catalog, report: RepoStatus) -> None:
    """The publish gate in force now (a broken limits file refuses every publish: a problem)."""
    try:
        found = read_gate_file(catalog.root)
    except FeastBCError as exc:
        report.problems.append(str(exc))
        return
    if found is None:
        report.notes.append(f"publish gate: no limits declared ({gate_path(catalog.root)} absent; `feast-bc gate`)")
    else:
        declared = found[0].model_dump(mode="json", exclude_unset=True)
        report.notes.append(f"publish gate: {gate_path(catalog.root)} declares {json.dumps(declared, sort_keys=True)}")


def _check_all_profiles(repo: Path, catalog: Catalog, fs_yaml_file, report: RepoStatus, dropped: dict) -> None:
    """What every profile's registry serves against the catalog: missing families, rollbacks, lag."""
    registries = repo_registries(repo, [fs_yaml_file] if fs_yaml_file else [])
    primary = Path(fs_yaml_file).absolute() if fs_yaml_file else repo / DEFAULT_PROFILE_FILENAME
    report.problems += [f"cannot check a Feast registry: {line}" for line in registries.unreadable]
    by_name = {f.family: f for f in report.families}
    for reg in registries.families:
        fam = by_name.get(reg.family)
        if fam is None:
            fam = by_name[reg.family] = FamilyStatus(family=reg.family, entity="?", join_key="?")
            report.families.append(fam)
            if reg.family in dropped:
                fam.problems.append(
                    f"{reg.family}: dropped, but {reg.profile.name} still serves it -- run `{reg.profile.feast_args()} apply`"
                )
            else:
                fam.problems.append(
                    f"{reg.family}: {reg.describe()}, but the catalog has no manifest for it -- restore "
                    f"{reg.family}/{MANIFEST_FILENAME}, or `feast-bc drop-family --family {reg.family}` to remove it"
                )
            continue
        if fam.latest is None:
            continue  # its manifest problem is reported already
        manifest = catalog.manifest(reg.family)
        problem = rollback_problem(reg, manifest)
        if problem:
            fam.problems.append(problem)
        elif reg.profile.yaml.absolute() != primary:
            served = set(manifest.served_versions)
            if reg.latest != manifest.latest_version or set(reg.versions) != served:
                fam.problems.append(
                    f"{reg.family}: {reg.profile.name} registers versions {sorted(reg.versions)} (latest "
                    f"{reg.latest}) but the catalog serves {sorted(served)} (latest {manifest.latest_version}) -- "
                    f"run `{reg.profile.feast_args()} apply`, then materialize"
                )


def _registry_views(repo: Path, fs_yaml_file, report: RepoStatus) -> dict | None:
    yaml = Path(fs_yaml_file) if fs_yaml_file else repo / DEFAULT_PROFILE_FILENAME
    if not yaml.is_file():
        report.problems.append(f"no feature_store.yaml at {yaml}: not a Feast repo")
        return None
    try:
        from feast import FeatureStore  # only here: `feast-bc status --no-feast` must not load Feast

        store = FeatureStore(repo_path=str(repo), fs_yaml_file=yaml)
        views = {v.name: v for v in store.list_batch_feature_views() if v.tags.get(TAG_FAMILY)}
        views.update({v.name: v for v in store.list_on_demand_feature_views() if v.tags.get(TAG_FAMILY)})
        return views
    except Exception as exc:  # a broken registry must not hide the catalog report
        report.problems.append(f"cannot read the Feast registry: {type(exc).__name__}: {exc}")
        return None


def _role(rec, latest: int) -> str:
    if rec.retired_at is not None:
        return "retired"
    if rec.version == latest:
        return "latest"
    return "on_read" if rec.serving == "on_read" else "derived"


def _family_status(catalog: Catalog, family: str, registry: dict | None) -> FamilyStatus:
    status = FamilyStatus(family=family, entity="?", join_key="?")
    try:
        manifest = catalog.manifest(family)
    except (FeastBCError, OSError) as exc:
        status.problems.append(str(exc))
        return status
    status.entity, status.join_key = manifest.entity.name, manifest.entity.join_key
    status.latest = manifest.latest_version
    status.rows = manifest.latest.embeddings.rows
    status.manifest_sha256 = manifest.checksum
    _, errors = catalog.inspect(family)  # the very checks `feast-bc verify` runs
    status.problems += [str(exc) for exc in errors]
    status.orphans = [str(p) for p in catalog.orphans(family, manifest)]
    for rec in manifest.versions:
        vs = VersionStatus(
            version=rec.version,
            dim=rec.dim,
            created_at=rec.created_at,
            role=_role(rec, manifest.latest_version),
            transform_sha256=rec.transform.sha256 if rec.transform else None,
            embeddings_sha256=rec.embeddings.sha256 if rec.embeddings else None,
            metrics=rec.metrics,
            gate=rec.gate,
            feature_view=onread_view_name(family, rec.version)
            if rec.serving == "on_read"
            else view_name(family, rec.version),
            feature_service=service_name(family, rec.version),
        )
        if registry is not None:
            fv = registry.get(vs.feature_view)
            vs.registered = fv is not None
            if fv is not None and vs.role != "on_read":
                vs.materialized_intervals = list(fv.materialization_intervals)
                status.registry_latest = int(fv.tags.get(TAG_LATEST, -1))
        status.versions.append(vs)
    if not errors:
        pushed = catalog.pushed(family, manifest)
        if pushed is not None:
            status.pushes, status.pushed_entities = pushed.segments, len(pushed)
            status.last_push = _EPOCH + timedelta(microseconds=pushed.last_micros)
        drifts = drift_since_publish(catalog, family, manifest)
        for vs in status.versions:
            vs.drift = drifts.get(vs.version)
    on_read = [v.version for v in status.versions if v.role == "on_read"]
    if on_read:
        status.problems.append(on_read_problem(family, on_read))
    if registry is not None:
        if status.registry_latest is None:
            status.problems.append(f"{family}: not registered in Feast yet -- run `feast apply`")
        elif status.registry_latest > manifest.latest_version:
            pass  # a rollback: reported with its explanation by _check_all_profiles
        elif status.registry_latest != manifest.latest_version:
            status.problems.append(
                f"{family}: Feast serves version {status.registry_latest} as latest but version "
                f"{manifest.latest_version} is published -- run `feast apply`, then `feast materialize`"
            )
        else:
            unmaterialized = [
                v.version
                for v in status.versions
                if v.registered and v.role != "on_read" and not v.materialized_intervals
            ]
            lingering = [v.version for v in status.versions if v.role == "retired" and v.registered]
            if lingering:
                status.problems.append(
                    f"{family}: retired versions {lingering} are still registered -- run `feast apply`"
                )
            if unmaterialized:
                status.problems.append(
                    f"{family}: versions {unmaterialized} were never materialized -- run `feast materialize`"
                )
    return status
