"""What runs inside ``feast materialize``: the UDF body of every feast_bc feature view.

Feast rebuilds a BatchFeatureView's UDF from its source text in a namespace holding only ``pd``
and ``np`` (closures are lost), so the generated UDF is a two-line shim that imports this module
and names its view by (catalog path, family, version). Its text never changes between publishes
-- which matters because Feast 0.67's ``feast apply`` cannot diff a changed batch UDF.

Everything version-specific is read here from the catalog at run time: the rows' event timestamp
(the publish time of their version, :mod:`feast_bc.provenance`) says which published version they
come from, the manifest says
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

import numpy as np
import pandas as pd

from feast_bc.catalog import Catalog
from feast_bc.errors import DimensionMismatchError, InvalidInputError, RegistryLagError
from feast_bc.feast_compat import install_cli_error_hook
from feast_bc.naming import EMBEDDING_FEATURE, TIMESTAMP_COLUMN, VALUES_VERSION_COLUMN
from feast_bc.provenance import version_groups


def udf_source(function_name: str, catalog_root: str, family: str, version: int) -> str:
    """The exact UDF text registered with Feast for one view (must stay stable across publishes)."""
    return (
        f"def {function_name}(df):\n"
        f"    from feast_bc.runtime import transform_batch\n"
        f"    return transform_batch(df, catalog={catalog_root!r}, family={family!r}, version={version!r})\n"
    )


def transform_batch(df: pd.DataFrame, *, catalog: str, family: str, version: int) -> pd.DataFrame:
    """Replace the ``embedding`` column of a batch of the latest view by its version-``version`` value.

    Rows already at ``version`` (``VALUES_VERSION_COLUMN``, written by an earlier call) are kept as
    they are, so applying the UDF twice gives what applying it once gives.
    """
    install_cli_error_hook()  # runs inside `feast materialize` (stock, Ray engines)
    cat = Catalog(catalog)
    manifest = cat.verify(family)
    manifest.version(version)
    if len(df) == 0:
        return df
    sources = _source_versions(df[TIMESTAMP_COLUMN], manifest)
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
        result = cat.transform_vectors(family, mat, at, version, manifest)
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


def _source_versions(event_times: pd.Series, manifest) -> np.ndarray:
    """Which published version each row is, from its event timestamp."""
    micros = pd.to_datetime(event_times, utc=True).to_numpy(dtype="datetime64[us]").astype(np.int64)
    sources = np.empty(len(micros), dtype=np.int64)
    for source, _, rows in version_groups(micros, manifest):
        sources[slice(None) if rows is None else rows] = source
    return sources


def _stack(series: pd.Series, dim: int, family: str, source: int) -> np.ndarray:
    try:
        mat = np.stack(series.to_numpy()).astype(np.float32, copy=False)
    except ValueError as exc:
        raise DimensionMismatchError(
            f"family {family!r}: ragged or missing vectors in version {source}: {exc}"
        ) from None
    if mat.ndim != 2 or mat.shape[1] != dim:
        raise DimensionMismatchError(
            f"family {family!r}: version {source} rows have shape {mat.shape[1:]}, the manifest says dim {dim}"
        )
    return mat
