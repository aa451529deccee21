"""What the Feast registries of a repo hold for feast_bc families, read straight from the registry files.

A feast_bc repo usually has several profiles -- ``feature_store.yaml`` (SQLite),
``feature_store.redis.yaml`` (Redis), perhaps more -- each with its own registry and online store.
Anything that removes state consumers read must consider all of them, not just the default one:

* `feast apply` (through :func:`feast_bc.feast_objects.feast_objects`) refuses to run when a
  registry serves a family the catalog no longer holds (manifest deleted, directory missing) and
  the family was not dropped on purpose, or when the catalog is *older* than what a registry
  already serves (a manifest restored from an old backup);
* ``feast-bc gc`` keeps every file a registry still reads and refuses ``--prune`` until every
  registry matches the catalog;
* ``feast-bc status`` reports all of the above.

Only local file registries (what ``feast-bc init`` writes) can be read here; the registry file is
Feast's serialized ``Registry`` protobuf. A profile whose registry is of another kind is reported
as unreadable, and operations that need proof (gc) refuse rather than guess.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from feast_bc.machine_dirs import mirror_file
from feast_bc.naming import (
    MANAGED_BY,
    TAG_FAMILY,
    TAG_LATEST,
    TAG_MANAGED,
    TAG_PUBLISHED_AT,
    TAG_ROLE,
    TAG_VERSION,
)

logger = logging.getLogger(__name__)

PROFILE_GLOB = "feature_store*.yaml"
#: Schemes of file registries on object storage that Feast reads (and so feast_bc, through Feast).
REMOTE_REGISTRY_SCHEMES = ("s3", "gs")
#: The profile `feast` reads without ``-f`` (the embedded SQLite one in a feast_bc repo).
DEFAULT_PROFILE_FILENAME = "feature_store.yaml"


@dataclass
class Profile:
    """One ``feature_store*.yaml`` of a repo."""

    yaml: Path
    project: str | None = None
    registry: Path | None = None
    online_store: dict = field(default_factory=dict)
    registry_uri: str | None = None  # a file registry on object storage (s3://, gs://) instead of ``registry``
    batch_engine: str = "local"  # the ``batch_engine`` type (Feast's default: its local engine)
    problem: str | None = None  # why its registry cannot be read

    @property
    def registry_location(self) -> str:
        return self.registry_uri or str(self.registry)

    def applied(self) -> bool:
        """Whether the registry exists (a remote one is read to tell)."""
        if self.registry_uri is not None:
            try:
                return _registry_proto(self) is not None
            except ValueError:
                return True  # it exists but cannot be read: whoever reads it reports why
        return self.registry is not None and self.registry.is_file()

    @property
    def name(self) -> str:
        return self.yaml.name

    def feast_args(self) -> str:
        """How to address this profile on Feast's command line."""
        return "feast" if self.yaml.name == DEFAULT_PROFILE_FILENAME else f"feast -f {self.yaml.name}"


@dataclass
class RegisteredFamily:
    """What one registry holds for one family."""

    family: str
    profile: Profile
    versions: dict[int, str] = field(default_factory=dict)  # version -> role (latest/derived/on_read)
    views: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    latest: int | None = None
    published_at: datetime | None = None
    sources: set[Path] = field(default_factory=set)  # files its views read, resolved
    materialized: set[int] = field(default_factory=set)
    sqlite_files: set[Path] = field(default_factory=set)  # SQLite files Feast's infra records for its views

    def describe(self) -> str:
        return (
            f"{self.profile.name} (project {self.profile.project}) registers "
            f"{len(self.views)} view(s) and {len(self.services)} feature service(s) of it"
            + ("" if self.latest is None else f", latest version {self.latest}")
        )


def repo_profiles(repo: str | Path, extra: list[str | Path] | tuple = ()) -> list[Profile]:
    """Every ``feature_store*.yaml`` of the repo (plus ``extra`` yaml files), parsed like Feast does."""
    repo = Path(repo).absolute()
    paths = sorted(repo.glob(PROFILE_GLOB)) if repo.is_dir() else []
    for p in extra:
        if p is not None and Path(p).absolute() not in {q.absolute() for q in paths} and Path(p).is_file():
            paths.append(Path(p).absolute())
    return [read_profile(p, repo) for p in paths]


def read_profile(yaml_path: Path, repo: Path) -> Profile:
    profile = Profile(yaml=Path(yaml_path))
    try:
        raw = yaml.safe_load(os.path.expandvars(Path(yaml_path).read_text()))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        profile.problem = f"{yaml_path} cannot be read: {exc}"
        return profile
    if not isinstance(raw, dict):
        profile.problem = f"{yaml_path} is not a Feast configuration"
        return profile
    profile.project = raw.get("project")
    store = raw.get("online_store")
    profile.online_store = store if isinstance(store, dict) else {"type": store}
    engine = raw.get("batch_engine")
    profile.batch_engine = str((engine.get("type") if isinstance(engine, dict) else engine) or "local")
    registry = raw.get("registry")
    if isinstance(registry, dict):
        kind = registry.get("registry_type", "file")
        path = registry.get("path")
    else:
        kind, path = "file", registry
    if kind in (None, "file") and isinstance(path, str) and path.split("://", 1)[0] in REMOTE_REGISTRY_SCHEMES:
        profile.registry_uri = path  # a file registry on object storage: read through Feast's own store
        return profile
    if kind not in (None, "file") or not isinstance(path, str) or "://" in path:
        profile.problem = (
            f"{yaml_path.name}: the registry ({kind}, {path!r}) is neither a local file nor on object storage "
            f"({'/'.join(s + '://' for s in REMOTE_REGISTRY_SCHEMES)}); feast_bc cannot read it to check what it references"
        )
        return profile
    p = Path(path)
    profile.registry = p if p.is_absolute() else repo / p
    return profile


def _registry_proto(profile: Profile):
    """The registry's protobuf (None: never applied). Feast is imported only here: the catalog (and
    with it gc) reads local registries without loading Feast's engines."""
    if profile.registry_uri is not None:
        return _remote_registry_proto(profile)
    if profile.registry is None or not profile.registry.is_file():
        return None
    from feast.protos.feast.core.Registry_pb2 import Registry

    proto = Registry()
    try:
        proto.ParseFromString(profile.registry.read_bytes())
    except Exception as exc:  # protobuf's DecodeError
        raise ValueError(f"{profile.registry} is not a readable Feast registry: {exc}") from None
    return proto


def _remote_registry_proto(profile: Profile):
    """A registry on object storage, read by Feast's own registry store (its endpoint and credentials
    come from the environment, as for Feast: ``AWS_ENDPOINT_URL`` / ``FEAST_S3_ENDPOINT_URL``)."""
    from feast.infra.registry.registry import get_registry_store_class_from_scheme
    from feast.repo_config import RegistryConfig

    uri = profile.registry_uri
    try:
        store_class = get_registry_store_class_from_scheme(uri)
        store = store_class(RegistryConfig(path=uri), profile.yaml.parent)
        return store.get_registry_proto()
    except FileNotFoundError:
        return None  # never applied
    except Exception as exc:  # noqa: BLE001 - Feast's store errors (bucket missing, access denied, ...)
        raise ValueError(f"{profile.name}: the registry {uri} cannot be read: {type(exc).__name__}: {exc}") from None


def registered_families(profile: Profile) -> dict[str, RegisteredFamily]:
    """Family -> what ``profile``'s registry holds for it ({} if the registry does not exist yet).

    Raises OSError/ValueError when the registry exists but cannot be parsed; callers decide whether
    that is fatal.
    """
    if profile.problem is not None:
        raise ValueError(profile.problem)
    proto = _registry_proto(profile)
    if proto is None:
        return {}
    repo = profile.yaml.parent
    out: dict[str, RegisteredFamily] = {}
    prefix = f"{profile.project}_"  # Feast names a view's SQLite table <project>_<view>
    sqlite_tables = {
        o.sqlite_table.name[len(prefix) :]: Path(o.sqlite_table.path).resolve()
        for o in proto.infra.infra_objects
        if o.WhichOneof("infra_object") == "sqlite_table" and o.sqlite_table.name.startswith(prefix)
    }

    def managed(objects):
        """(object, its tags, its family's entry) for every feast_bc object of this profile's project."""
        for obj in objects:
            tags = dict(obj.spec.tags)
            family = tags.get(TAG_FAMILY)
            if obj.spec.project != profile.project or not family or tags.get(TAG_MANAGED) != MANAGED_BY:
                continue
            yield obj, tags, out.setdefault(family, RegisteredFamily(family=family, profile=profile))

    for fv, tags, reg in managed(proto.feature_views):
        spec = fv.spec
        version = int(tags.get(TAG_VERSION, -1))
        reg.versions[version] = tags.get(TAG_ROLE, "derived")
        reg.views.append(spec.name)
        if spec.name in sqlite_tables:
            reg.sqlite_files.add(sqlite_tables[spec.name])
        if len(fv.meta.materialization_intervals):
            reg.materialized.add(version)
        uri = spec.batch_source.file_options.uri
        if uri and "://" in uri:
            reg.sources.add(mirror_file(uri).resolve())  # a catalog on object storage: its mirror file
        elif uri:
            src = Path(uri)
            reg.sources.add((src if src.is_absolute() else repo / src).resolve())
        if tags.get(TAG_ROLE) == "latest":
            reg.latest = int(tags.get(TAG_LATEST, version))
            stamp = tags.get(TAG_PUBLISHED_AT)
            if stamp:
                try:
                    reg.published_at = datetime.fromisoformat(stamp)
                except ValueError:
                    logger.warning(
                        "%s: view %s has an unreadable %s tag %r", profile.name, spec.name, TAG_PUBLISHED_AT, stamp
                    )
        elif reg.latest is None and TAG_LATEST in tags:
            reg.latest = int(tags[TAG_LATEST])
    for odfv, tags, reg in managed(proto.on_demand_feature_views):
        reg.versions[int(tags.get(TAG_VERSION, -1))] = "on_read"
        reg.views.append(odfv.spec.name)
    for fs, _, reg in managed(proto.feature_services):
        reg.services.append(fs.spec.name)
    return out


@dataclass
class RepoRegistries:
    """Every profile of a repo and what its registry holds."""

    profiles: list[Profile]
    families: list[RegisteredFamily]  # one entry per (profile, family)
    unreadable: list[str]  # one line per profile whose registry could not be read

    def of(self, family: str) -> list[RegisteredFamily]:
        return [r for r in self.families if r.family == family]

    def sources(self) -> set[Path]:
        return {s for r in self.families for s in r.sources}


def repo_registries(repo: str | Path, extra: list[str | Path] | tuple = ()) -> RepoRegistries:
    profiles = repo_profiles(repo, extra)
    families: list[RegisteredFamily] = []
    unreadable: list[str] = []
    for profile in profiles:
        try:
            families.extend(registered_families(profile).values())
        except (OSError, ValueError) as exc:
            unreadable.append(str(exc))
    return RepoRegistries(profiles, families, unreadable)


def rollback_problem(reg: RegisteredFamily, manifest) -> str | None:
    """Why ``manifest`` is older than what ``reg`` already serves (or None).

    Every row a view materializes carries the publish time of the latest version as its event
    timestamp, and online stores keep the newer of two values: a catalog whose latest is older
    than the registry's would leave pins serving values of the newer version.
    """
    newer_version = reg.latest is not None and reg.latest > manifest.latest_version
    newer_time = reg.published_at is not None and reg.published_at > manifest.latest.created_at
    if not (newer_version or newer_time):
        return None
    when = f" published at {reg.published_at.isoformat()}" if reg.published_at else ""
    return (
        f"family {manifest.family!r}: the catalog is older than what Feast already serves -- "
        f"{reg.profile.name} registers version {reg.latest}{when} as latest, but the manifest ends at "
        f"version {manifest.latest_version} (published {manifest.latest.created_at.isoformat()}). A manifest "
        "restored from an older backup cannot be served: the online store keeps the newer values, so pins would "
        "silently serve the newer version's vectors. Put back the newest manifest (its artifacts are still in "
        f"{manifest.family}/artifacts/ unless gc removed them), or publish a new version on top of it"
    )
