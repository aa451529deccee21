"""What `feast apply` of a feast_bc repo refuses before Feast changes anything.

Applying is a full sync: a family missing from the definitions loses its views, FeatureServices
and online values. :func:`guard_apply` raises (one line; the CLI exits non-zero, nothing applied)
when applying the catalog's families would remove or roll back what a registry of the repo serves,
when the repo is a copy of another that still exists, when a profile's online store or engine
cannot serve the catalog, and when a version asks to be served on read.
"""

from __future__ import annotations

import logging
from pathlib import Path

from feast_bc.catalog import Catalog
from feast_bc.catalog.maintenance import on_read_problem
from feast_bc.catalog.remote import RemoteCatalog
from feast_bc.errors import CatalogRollbackError, ConfigurationError, CopiedRepoError, FeastBCError, ManifestError
from feast_bc.manifest import MANIFEST_FILENAME, FamilyManifest
from feast_bc.naming import FEAST_BC_ENGINES
from feast_bc.redis_profile import redis_connection_problem
from feast_bc.registries import read_profile, repo_registries, rollback_problem
from feast_bc.repo_copies import copied_from

logger = logging.getLogger(__name__)


def guard_apply(repo_path: Path, catalog: Catalog, manifests: dict[str, FamilyManifest], yaml_file=None) -> None:
    """Raise if applying ``manifests`` would remove or roll back what a registry of the repo serves."""
    if yaml_file is not None and Path(yaml_file).is_file():
        profile = read_profile(Path(yaml_file), repo_path)
        problem = redis_connection_problem(profile.online_store, str(yaml_file))
        if problem:
            raise ConfigurationError(problem)
        if isinstance(catalog, RemoteCatalog) and profile.batch_engine not in FEAST_BC_ENGINES:
            raise ConfigurationError(
                f"{Path(yaml_file).name}: the catalog is on object storage ({catalog.location}) but the batch engine "
                f"is {profile.batch_engine!r}: Feast's own engines read the latest embeddings through fsspec/s3fs, "
                "which feast_bc does not install. Use feast_bc's engine (`batch_engine: {type: "
                "feast_bc.engine.BCEngine}`, what `feast-bc init` writes) or feast_bc.ray_engine.BCRayEngine"
            )
    registries = repo_registries(repo_path, [yaml_file] if yaml_file else [])
    for line in registries.unreadable:
        logger.warning("feast_bc cannot check this registry before apply: %s", line)
    dropped = catalog.dropped_families()
    problems: list[FeastBCError] = []
    for reg in registries.families:
        original = copied_from(reg, repo_path)
        if original is not None:
            problems.append(
                CopiedRepoError(
                    f"{reg.profile.registry_location} was applied from {original}, which still exists: this repo is a copy "
                    f"of it (project {reg.profile.project!r}). `feast apply` here would move Feast's infrastructure "
                    "to this copy -- dropping the online tables the original serves from -- and both repos would "
                    f"write the same online keys. Give the copy its own identity: delete {reg.profile.registry_location} here "
                    "and set another `project:` in its feature_store*.yaml, then `feast apply` (a moved repo, whose "
                    "old directory is gone, applies as it is)"
                )
            )
            continue
        manifest = manifests.get(reg.family)
        if manifest is None:
            if reg.family in dropped:
                logger.info("family %s was dropped: apply removes it from %s", reg.family, reg.profile.name)
                continue
            problems.append(
                ManifestError(
                    f"family {reg.family!r} is served by Feast ({reg.describe()}) but the catalog {catalog.root} "
                    f"has no manifest for it: this apply would delete its views, FeatureServices and online "
                    f"values. Restore {reg.family}/{MANIFEST_FILENAME} (and its artifacts); to remove the family on "
                    f"purpose run `feast-bc drop-family --repo {repo_path} --family {reg.family}` first"
                )
            )
            continue
        problem = rollback_problem(reg, manifest)
        if problem:
            problems.append(CatalogRollbackError(problem))
    for family, manifest in manifests.items():
        on_read = [j for j in manifest.served_versions if manifest.version(j).serving == "on_read"]
        if on_read:
            problems.append(ConfigurationError(on_read_problem(family, on_read)))
    if problems:
        first = problems[0]
        if len(problems) > 1:
            first.args = (f"{first} (and {len(problems) - 1} more problem(s); `feast-bc status` lists them)",)
        raise first
