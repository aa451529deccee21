"""What runs inside ``feast materialize``: the UDF body of every feast_bc feature view.

Feast rebuilds a BatchFeatureView's UDF from its source text in a namespace holding only ``pd``
and ``np`` (closures are lost), so the generated UDF is a two-line shim that imports this module
and names its view by (catalog path, family, version). Its text never changes between publishes
-- which matters because Feast 0.67's ``feast apply`` cannot diff a changed batch UDF.

Everything version-specific is read here from the catalog at run time: the rows' event timestamp
(the publish time of their version) says which published version they come from, the manifest says
which transforms lead from there to the requested version, and every artifact is verified first.
The whole family is verified on every call (hashes are cached per file state), so a tampered
artifact makes the *first* view Feast materializes fail, before any value of the family is written.

The UDF is idempotent: its output carries ``VALUES_VERSION_COLUMN`` (the version the vectors of
each row are now at), and a batch already at the requested version passes through unchanged.
Feast's Ray engine needs this -- it applies a derived view's UDF twice, once in
``RayDerivedReadNode`` and once more in the ``RayTransformationNode`` its feature builder adds
(docs/SCALING.md) -- and with equal dimensions a second matmul would go unnoticed.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from feast_bc.catalog import Catalog
from feast_bc.errors import CatalogRollbackError, DimensionMismatchError, InvalidInputError, RegistryLagError
from feast_bc.naming import EMBEDDING_FEATURE, TIMESTAMP_COLUMN, VALUES_VERSION_COLUMN

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def udf_source(function_name: str, catalog_root: str, family: str, version: int) -> str:
    """The exact UDF text registered with Feast for one view (must stay stable across publishes)."""
    return (
        f"def {function_name}(df):\n"
        f"    from feast_bc.runtime import transform_batch\n"
        f"    return transform_batch(df, catalog={catalog_root!r}, family={family!r}, version={version!r})\n"
    )


def transform_vectors(catalog: Catalog, family: str, vectors: np.ndarray, source: int, target: int, manifest=None) -> np.ndarray:
    """Version-``target`` vectors from version-``source`` vectors (the one formula online and offline share)."""
    if source == target:
        return np.asarray(vectors, dtype=np.float32)
    return catalog.composed(family, source, target, manifest).transform(vectors)


def transform_batch(df: pd.DataFrame, *, catalog: str, family: str, version: int) -> pd.DataFrame:
    """Replace the ``embedding`` column of a batch of the latest view by its version-``version`` value.

    Rows already at ``version`` (``VALUES_VERSION_COLUMN``, written by an earlier call) are kept as
    they are, so applying the UDF twice gives what applying it once gives.
    """
    from feast_bc.feast_compat import install_cli_error_hook

    install_cli_error_hook()  # runs inside `feast materialize` (stock, Ray engines)
    cat = Catalog(catalog)
    manifest = cat.verify(family)
    manifest.version(version)
    if len(df) == 0:
        return df
    sources = source_versions(df[TIMESTAMP_COLUMN], manifest)
    if (sources < version).any():
        raise RegistryLagError(
            f"family {family!r}: view for version {version} received rows of version {int(sources.min())}; the "
            "Feast registry is older than the catalog -- run `feast apply` before materializing"
        )
    current = _values_versions(df, sources)
    out = df.copy()
    new_values = np.empty(len(df), dtype=object)
    for at in np.unique(current):
        at = int(at)
        if at < version:
            raise InvalidInputError(
                f"family {family!r}: view for version {version} received vectors already transformed to "
                f"version {at}; backward transforms only lead to older versions"
            )
        rows = np.flatnonzero(current == at)
        mat = _stack(df[EMBEDDING_FEATURE].iloc[rows], manifest.version(at).dim, family, at)
        result = transform_vectors(cat, family, mat, at, version, manifest)
        new_values[rows] = list(result)
    out[EMBEDDING_FEATURE] = new_values
    out[VALUES_VERSION_COLUMN] = np.full(len(df), version, dtype=np.int64)
    return out


def _values_versions(df: pd.DataFrame, sources: np.ndarray) -> np.ndarray:
    """The version each row's vector is at: an earlier UDF call's mark, else the row's source version."""
    if VALUES_VERSION_COLUMN not in df.columns:
        return sources
    marks = pd.to_numeric(df[VALUES_VERSION_COLUMN], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    current = np.where(np.isnan(marks), sources, marks).astype(np.int64)
    if (current > sources).any():
        raise InvalidInputError(
            f"column {VALUES_VERSION_COLUMN!r} marks rows as newer than the version that produced them"
        )
    return current


def source_versions(event_times: pd.Series, manifest) -> np.ndarray:
    """Which published version each row is, from its event timestamp.

    Every row of version v carries v's publish time (``created_at``, microseconds, unique per
    version) as its event timestamp, so the timestamp identifies the version without storing an
    extra feature online.
    """
    times = pd.to_datetime(event_times, utc=True)
    micros = times.to_numpy(dtype="datetime64[us]").astype(np.int64)
    by_time = {
        _micros(rec.created_at): rec.version
        for rec in manifest.versions
    }
    out = np.empty(len(micros), dtype=np.int64)
    for t in np.unique(micros):
        version = by_time.get(int(t))
        if version is None and int(t) > _micros(manifest.latest.created_at):
            raise CatalogRollbackError(
                f"family {manifest.family!r}: rows published at {pd.Timestamp(int(t), unit='us', tz='UTC')} are newer "
                f"than the catalog's latest version {manifest.latest_version}: the catalog is older than what Feast "
                "serves (a manifest restored from an old backup?); put back the newest manifest"
            )
        if version is None:
            raise RegistryLagError(
                f"family {manifest.family!r}: rows with event time {pd.Timestamp(int(t), unit='us', tz='UTC')} "
                "match no published version of the catalog; was the catalog replaced? run `feast apply`"
            )
        out[micros == t] = version
    return out


def _micros(ts) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _stack(series: pd.Series, dim: int, family: str, source: int) -> np.ndarray:
    try:
        mat = np.stack(series.to_numpy()).astype(np.float32, copy=False)
    except ValueError as exc:
        raise DimensionMismatchError(f"family {family!r}: ragged or missing vectors in version {source}: {exc}") from None
    if mat.ndim != 2 or mat.shape[1] != dim:
        raise DimensionMismatchError(
            f"family {family!r}: version {source} rows have shape {mat.shape[1:]}, the manifest says dim {dim}"
        )
    return mat
