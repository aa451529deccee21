"""Names of the Feast objects that represent an embedding family.

Kept in one place because consumers pin these names in their code and the serving side,
the status report and the tests must all agree on them.

* feature view of version j: ``<family>_bc<j>`` -- deliberately not ``_v<j>``: Feast 0.67 stores
  its own native feature-view versions as ``<view>_v<N>`` in the online store, and a view literally
  named ``item_embedding_v1`` would share storage with ``item_embedding@v1``.
* feature service (the consumer's pin) of version j: ``<family>_v<j>``. Services own no online
  storage, so the natural name is safe here.
"""

from __future__ import annotations

import re

# \A...\Z, not ^...$: "$" also matches before a final newline, and "x\n" must not pass.
# Callers use fullmatch anyway; the anchors keep any .match/.search on these patterns safe too.
FAMILY_RE = re.compile(r"\A[a-z][a-z0-9_]{0,62}\Z")
IDENTIFIER_RE = re.compile(r"\A[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
_RESERVED_SUFFIX = re.compile(r"_(v|bc)\d+\Z")

#: Feature holding the vector in every view of a family.
EMBEDDING_FEATURE = "embedding"
#: Feature holding the latest version a stored value was computed from (provenance).
SOURCE_VERSION_FEATURE = "source_version"
#: Event-timestamp column of the latest-embeddings parquet file.
TIMESTAMP_COLUMN = "event_timestamp"
#: Column the view UDFs add to their output: the version the ``embedding`` values of a row are
#: now at. It makes the UDF idempotent (Feast's Ray engine applies a derived view's UDF twice);
#: it is not a feature, so no online store ever sees it.
VALUES_VERSION_COLUMN = "_bc_values_version"

#: Tag keys carried by every Feast object feast_bc generates.
TAG_FAMILY = "bc.family"
TAG_VERSION = "bc.version"
TAG_LATEST = "bc.latest"
TAG_ROLE = "bc.role"
TAG_DERIVED_FROM = "bc.derived_from"
TAG_TRANSFORM_SHA = "bc.transform_sha256"
TAG_EMBEDDINGS_SHA = "bc.embeddings_sha256"
TAG_MANIFEST_SHA = "bc.manifest_sha256"
#: Publish time (ISO 8601, microseconds, UTC) of the latest version a view was generated from:
#: the event timestamp of every row it materializes. Lets feast_bc refuse a catalog older than
#: what the registry (and so the online store) already holds.
TAG_PUBLISHED_AT = "bc.published_at"
#: Every Feast object feast_bc generates carries ``TAG_MANAGED: MANAGED_BY``: what apply may delete.
TAG_MANAGED = "bc.managed_by"
MANAGED_BY = "feast_bc"

#: Column names of the embeddings parquet (and Feast's own reserved names) a join key must not take.
RESERVED_COLUMNS = frozenset(
    {
        TIMESTAMP_COLUMN,
        EMBEDDING_FEATURE,
        SOURCE_VERSION_FEATURE,
        VALUES_VERSION_COLUMN,
        "created",
        "__dummy",
        "__dummy_id",
    }
)


def identifier_problem(value, what: str = "name") -> str | None:
    """Why ``value`` cannot be an entity name or join key, or None if it can."""
    if not isinstance(value, str) or not IDENTIFIER_RE.fullmatch(value):
        return f"{what} {value!r} is not a valid identifier (a letter or '_', then letters, digits, '_'; at most 63)"
    if value in RESERVED_COLUMNS:
        return f"{what} {value!r} is reserved (a column of the embeddings table or a Feast-internal name)"
    return None


def family_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a family name, or None if it can."""
    if not isinstance(name, str) or not FAMILY_RE.fullmatch(name):
        return (
            f"family name {name!r} must start with a lowercase letter and contain only "
            "lowercase letters, digits and '_' (at most 63 characters)"
        )
    if _RESERVED_SUFFIX.search(name):
        return (
            f"family name {name!r} must not end in '_v<N>' or '_bc<N>': those suffixes are "
            "used for the per-version Feast objects"
        )
    return None


def view_name(family: str, version: int) -> str:
    return f"{family}_bc{version}"


def onread_view_name(family: str, version: int) -> str:
    """The OnDemandFeatureView of a version served by computing it at read time."""
    return f"{family}_bc{version}_onread"


def service_name(family: str, version: int) -> str:
    return f"{family}_v{version}"


def source_name(family: str) -> str:
    return f"{family}_latest_source"


#: feast_bc's batch engines: they read a catalog's files themselves (a remote catalog through its
#: mirror) and apply its push log; Feast's own engines read the published file only.
FEAST_BC_ENGINES = ("feast_bc.engine.BCEngine", "feast_bc.ray_engine.BCRayEngine")
