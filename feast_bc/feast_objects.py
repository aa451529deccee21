"""Feast objects generated from the catalog -- the one definition both `feast apply` and Python share.

For a family with versions 0..k this yields:

* one :class:`~feast.Entity` per entity (shared by families on the same entity);
* the latest view ``<family>_bc<k>``: a BatchFeatureView over the latest embeddings parquet file;
* a derived view ``<family>_bc<j>`` for every j < k: a BatchFeatureView whose source is the
  latest view, so `feast materialize` computes its values from z_k through the composed transform;
* a FeatureService ``<family>_v<j>`` per version -- the consumer's pin. It projects only the
  ``embedding`` feature and renames the view to the family, so the output column is the same
  whichever version a consumer pins.

Every view's UDF is the stable shim from :mod:`feast_bc.runtime`; tags carry family, version,
latest, role and checksums so operators can filter (``feast feature-views list --tags bc.family:x``).

The repo's definitions file just does ``globals().update(feast_objects(repo_dir))``; the Python
API (:func:`feast_bc.repo.apply`) applies the same dictionary, so the two cannot drift apart.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from datetime import timedelta
from pathlib import Path

import click
from feast import BatchFeatureView, Entity, FeatureService, Field, FileSource
from feast.types import Array, Float32, Int64, String
from feast.value_type import ValueType

from feast_bc.apply_guard import guard_apply
from feast_bc.catalog import Catalog
from feast_bc.catalog.location import repo_location
from feast_bc.catalog.remote import RemoteCatalog
from feast_bc.errors import InvalidInputError, ManifestError
from feast_bc.feast_compat import install as install_feast_fixes
from feast_bc.feast_compat import restore_torn_down_sqlite_tables
from feast_bc.manifest import FamilyManifest
from feast_bc.naming import (
    EMBEDDING_FEATURE,
    MANAGED_BY,
    TAG_DERIVED_FROM,
    TAG_EMBEDDINGS_SHA,
    TAG_FAMILY,
    TAG_LATEST,
    TAG_MANAGED,
    TAG_MANIFEST_SHA,
    TAG_PUBLISHED_AT,
    TAG_ROLE,
    TAG_TRANSFORM_SHA,
    TAG_VERSION,
    TIMESTAMP_COLUMN,
    service_name,
    source_name,
    view_name,
)
from feast_bc.registries import (
    DEFAULT_PROFILE_FILENAME,
    read_profile,
)
from feast_bc.repo_copies import record_apply
from feast_bc.runtime import udf_source

logger = logging.getLogger(__name__)


def feast_objects(
    repo_path: str | Path, catalog: Catalog | None = None, *, fs_yaml_file: str | Path | None = None
) -> dict[str, object]:
    """Name -> Feast object for every family in the repo's catalog (empty dict if none).

    Refuses (raises, so `feast apply` exits non-zero and changes nothing) rather than leave a
    family out that Feast still serves: a family directory whose manifest is missing or unreadable,
    a family some registry of the repo serves that the catalog no longer holds (unless dropped on
    purpose with `feast-bc drop-family`), or a catalog older than what a registry already serves.
    ``fs_yaml_file`` is the profile being applied (inside the `feast` CLI it is taken from the
    command line); a Redis profile without a usable connection string is refused too.
    """
    install_feast_fixes()
    repo_path = Path(repo_path).absolute()
    catalog = catalog or Catalog.for_repo(repo_path)
    objects: dict[str, object] = {}
    entities: dict[str, object] = {}
    manifests = {family: catalog.manifest(family) for family in catalog.families()}
    yaml_file = fs_yaml_file or _cli_yaml_file()
    guard_apply(repo_path, catalog, manifests, yaml_file)
    applied = Path(yaml_file) if yaml_file is not None else repo_path / DEFAULT_PROFILE_FILENAME
    profile = read_profile(applied, repo_path) if applied.is_file() else None
    vector_field = _vector_search(profile)
    for family, manifest in manifests.items():
        entity = _entity(manifest)
        existing = entities.get(entity.name)
        if existing is not None and existing != entity:
            raise ManifestError(
                f"family {family!r} defines entity {entity.name!r} differently from another family "
                "(join key or type differ); one entity name must mean one join key"
            )
        entities[entity.name] = existing or entity
        objects.update(_family_objects(repo_path, catalog, manifest, entities[entity.name], vector_field))
    for name, entity in entities.items():
        objects[f"entity_{name}"] = entity
    if _cli_command() in (None, "apply"):  # not while `feast plan` (a dry run) reads the definitions
        views = [o for o in objects.values() if isinstance(o, BatchFeatureView)]
        restore_torn_down_sqlite_tables(repo_path, yaml_file, views)
        if profile is not None:
            record_apply(profile, repo_path)
    return objects


def _vector_search(profile) -> bool:
    """Whether the views of this profile declare their ``embedding`` as Feast's vector field: where
    its online store keeps a searchable vector column (``vector_enabled: true``; PostgreSQL +
    pgvector, :mod:`feast_bc.pin_search`). Elsewhere the views stay exactly as before: Feast's own
    Ray engine cannot write a vector field (it hands Feast's check a tensor column, which the check
    rejects), so that combination is refused here, before anything is applied."""
    if profile is None or not profile.online_store.get("vector_enabled"):
        return False
    if profile.batch_engine == "ray.engine":
        raise InvalidInputError(
            f"{profile.name}: vector_enabled with Feast's Ray engine (batch_engine: ray.engine) cannot be materialized "
            "-- Feast 0.67 rejects the Ray engine's tensor column for a vector field; use batch_engine "
            "feast_bc.engine.BCEngine or feast_bc.ray_engine.BCRayEngine"
        )
    return True


def _cli_command() -> str | None:
    """The `feast` subcommand running (``apply``, ``plan``, ...), None outside the CLI."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.find_root().invoked_subcommand


def _cli_yaml_file() -> Path | None:
    """The feature_store yaml the running `feast` command was given (``-f``), if any."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return None
    obj = ctx.find_root().obj
    path = obj.get("FS_YAML_FILE") if isinstance(obj, dict) else None
    return Path(path) if path else None


def _entity(manifest: FamilyManifest):
    spec = manifest.entity
    return Entity(
        name=spec.name,
        join_keys=[spec.join_key],
        value_type=ValueType.INT64 if spec.dtype == "int64" else ValueType.STRING,
        description=spec.description,
        tags={TAG_MANAGED: MANAGED_BY},
    )


def _chain_digest(manifest: FamilyManifest, target: int) -> str:
    """A checksum naming exactly which transforms produce version ``target`` from the latest."""
    h = hashlib.sha256()
    for ref in manifest.chain(manifest.latest_version, target):
        h.update(ref.sha256.encode())
    return h.hexdigest()


def _family_objects(
    repo_path: Path, catalog: Catalog, manifest: FamilyManifest, entity, vector_field: bool = False
) -> dict[str, object]:
    """The source, the view of every served version (the latest reads the source, the others are
    derived from it) and the pin of every served version, by Feast object name."""
    family, latest = manifest.family, manifest.latest
    k = latest.version
    source = _latest_source(repo_path, catalog, manifest)
    family_tags = {  # what every view of the family carries (the manifest's checksum hashed once)
        TAG_FAMILY: family,
        TAG_LATEST: str(k),
        TAG_EMBEDDINGS_SHA: latest.embeddings.sha256,
        TAG_MANIFEST_SHA: manifest.computed_checksum(),
        TAG_PUBLISHED_AT: latest.created_at.isoformat(),
        TAG_MANAGED: MANAGED_BY,
    }
    latest_view = _version_view(catalog, manifest, entity, source, family_tags, k, None, vector_field)
    served = manifest.served_versions
    views = {k: latest_view}
    for j in served[:-1]:
        views[j] = _version_view(catalog, manifest, entity, source, family_tags, j, latest_view, vector_field)

    objects: dict[str, object] = {f"source_{family}": source}
    for j in served:
        objects[views[j].name] = views[j]
        objects[service_name(family, j)] = FeatureService(
            name=service_name(family, j),
            features=[views[j][[EMBEDDING_FEATURE]].with_name(family)],
            description=f"Pin to {family} version {j} (dim {manifest.version(j).dim}).",
            tags={TAG_FAMILY: family, TAG_VERSION: str(j), TAG_LATEST: str(k), TAG_MANAGED: MANAGED_BY},
        )
    return objects


def _latest_source(repo_path: Path, catalog: Catalog, manifest: FamilyManifest) -> FileSource:
    """The FileSource of the family's latest embeddings file."""
    family, k = manifest.family, manifest.latest.version
    emb_path = catalog.artifact_path(family, manifest.latest.embeddings)
    if isinstance(catalog, RemoteCatalog):
        source_path = catalog.remote_url(emb_path)  # the object's URL (feast_bc reads its mirror)
    elif Path(catalog.location).is_relative_to(repo_path):
        source_path = os.path.relpath(emb_path, repo_path)  # a moved repo keeps reading the right file
    else:  # declared outside the repo: relative too, unless declared as an absolute mount point
        declared = repo_location(repo_path)
        source_path = str(emb_path) if Path(declared).is_absolute() else os.path.relpath(emb_path, repo_path)
    return FileSource(
        name=source_name(family),
        path=source_path,
        timestamp_field=TIMESTAMP_COLUMN,
        description=f"latest embeddings of {family} (version {k})",
        tags={TAG_FAMILY: family, TAG_VERSION: str(k), TAG_MANAGED: MANAGED_BY},
    )


def _version_view(
    catalog: Catalog,
    manifest: FamilyManifest,
    entity,
    source: FileSource,
    family_tags: dict,
    version: int,
    upstream,
    vector_field: bool = False,
):
    """The BatchFeatureView of one version: the latest's reads ``source`` (``upstream`` None); an
    older one is derived from the latest view through its generated UDF shim (:mod:`feast_bc.runtime`).
    With ``vector_field`` its ``embedding`` is Feast's vector field of the version's dimension."""
    family, k = manifest.family, manifest.latest.version
    join_type = Int64 if manifest.entity.dtype == "int64" else String
    # Only the vector is stored: a pinned version costs exactly what a plain one-feature view costs
    # to read, and views never change schema when a newer version arrives (a removed feature
    # would leave its values behind in Redis). Which latest version produced a stored value is
    # its event timestamp: the publish time of that version.
    schema = [
        Field(name=manifest.entity.join_key, dtype=join_type),
        Field(name=EMBEDDING_FEATURE, dtype=Array(Float32))
        if not vector_field
        else Field(
            name=EMBEDDING_FEATURE, dtype=Array(Float32), vector_index=True, vector_length=manifest.version(version).dim
        ),
    ]
    name = view_name(family, version)
    fn_name = f"feast_bc_{name}"
    text = udf_source(fn_name, family, version)
    namespace: dict = {}
    exec(text, namespace)  # noqa: S102 -- our own generated two-line shim
    tags = {
        **family_tags,
        TAG_VERSION: str(version),
        TAG_ROLE: "latest" if upstream is None else "derived",
        TAG_TRANSFORM_SHA: _chain_digest(manifest, version),
    }
    if upstream is not None:
        tags[TAG_DERIVED_FROM] = upstream.name
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Batch feature views are experimental")
        return BatchFeatureView(
            name=name,
            entities=[entity],
            schema=schema,
            mode="pandas",
            source=source if upstream is None else upstream,
            # A derived view must name a sink; it is never written (offline=False), so point it
            # at the existing latest file rather than a path that would warn on every apply.
            sink_source=None if upstream is None else source,
            udf=namespace[fn_name],
            udf_string=text,
            online=True,
            offline=False,
            ttl=timedelta(0),
            description=(
                f"{family} version {version} (dim {manifest.version(version).dim})"
                + ("" if upstream is None else f", computed from version {k} by the composed backward transform")
            ),
            tags=tags,
        )
