"""What runs inside ``feast materialize``: the UDF body of every feast_bc feature view.

Feast rebuilds a BatchFeatureView's UDF from its source text in a namespace holding only ``pd``
and ``np`` (closures are lost), so the generated UDF is a two-line shim that imports this module
and names its view by (family, version) -- never by a path. Its text never changes between
publishes, nor when the repo moves -- which matters because Feast 0.67's ``feast apply`` cannot
diff a changed batch UDF. The catalog is the one the running repo declares
(:mod:`feast_bc.catalog.location`): the repo is found from the Feast objects on the call stack
(``FeatureStore``, a compute engine's ``repo_config``), else ``$FEAST_BC_REPO``, else the working
directory.

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

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from feast_bc.catalog import Catalog
from feast_bc.catalog.location import config_location
from feast_bc.catalog.push_log import last_push
from feast_bc.errors import ConfigurationError, DimensionMismatchError, InvalidInputError, RegistryLagError
from feast_bc.feast_compat import install_cli_error_hook
from feast_bc.naming import EMBEDDING_FEATURE, TIMESTAMP_COLUMN, VALUES_VERSION_COLUMN
from feast_bc.provenance import version_groups
from feast_bc.registries import PROFILE_GLOB

REPO_ENV_VAR = "FEAST_BC_REPO"


def udf_source(function_name: str, family: str, version: int) -> str:
    """The exact UDF text registered with Feast for one view (stable across publishes and moves).

    The default argument is evaluated where Feast rebuilds the UDF from this text -- inside the
    ``FeatureStore`` that read the registry -- so the function carries that repo's path to Ray
    workers (Feast ships the rebuilt function to them by value), while the text names none.
    """
    return (
        f"def {function_name}(df, _repo=__import__('feast_bc.runtime', fromlist=['_']).defining_repo()):\n"
        f"    from feast_bc.runtime import transform_batch\n"
        f"    return transform_batch(df, family={family!r}, version={version!r}, repo=_repo)\n"
    )


def defining_repo() -> str | None:
    """The repo of the Feast configuration on the caller's stack (see :func:`udf_source`), or None."""
    config = _repo_config_on_stack()
    return None if config is None else str(Path(config.repo_path).absolute())


def transform_batch(
    df: pd.DataFrame, *, family: str, version: int, repo: str | None = None, catalog: str | None = None
) -> pd.DataFrame:
    """Replace the ``embedding`` column of a batch of the latest view by its version-``version`` value.

    Rows already at ``version`` (``VALUES_VERSION_COLUMN``, written by an earlier call) are kept as
    they are, so applying the UDF twice gives what applying it once gives. The catalog is the
    running repo's (:func:`running_catalog`; ``repo`` is the one the UDF was rebuilt in).
    ``catalog`` (a catalog directory) is for callers outside a repo -- and what views registered by
    earlier feast_bc releases still pass; where it no longer exists (the repo moved) it is ignored.
    """
    install_cli_error_hook()  # runs inside `feast materialize` (stock, Ray engines)
    cat = Catalog(catalog) if catalog is not None and Path(catalog).is_dir() else running_catalog(repo)
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
    _refuse_pushed(cat, family, np.unique(sources))
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


def _refuse_pushed(catalog: Catalog, family: str, versions) -> None:
    """Feast's own engines read the published file alone: for a version that has pushes, they would
    write its older values over what the pushes wrote (:mod:`feast_bc.catalog.push_log`)."""
    for v in versions:
        pushed = last_push(catalog.family_dir(family), int(v))
        if pushed is not None:
            raise ConfigurationError(
                f"family {family!r}: version {int(v)} has {pushed.number} push(es) since it was published, and Feast's "
                "own engines read only the published file -- this materialization would write the pushed entities' "
                "older values over them. Materialize with feast_bc's engine (`batch_engine: {type: "
                "feast_bc.engine.BCEngine}`, what `feast-bc init` writes) or publish the next version first"
            )


def running_catalog(defined_in: str | None = None) -> Catalog:
    """The catalog of the feature repo this process runs Feast for: the Feast configuration on the
    stack, else the repo the UDF was rebuilt in (``defined_in``), else ``$FEAST_BC_REPO``, else the
    working directory."""
    config = _repo_config_on_stack()
    if config is not None:
        return Catalog.for_repo(Path(config.repo_path), config_location(config))
    repo = Path(defined_in or os.environ.get(REPO_ENV_VAR) or Path.cwd())
    if not any(repo.glob(PROFILE_GLOB)):
        raise ConfigurationError(
            f"a feast_bc view ran outside its feature repo ({repo} has no feature_store*.yaml); run `feast "
            f"materialize` from the repo (or `feast -c <repo>`), or set ${REPO_ENV_VAR} to the repo on every worker"
        )
    return Catalog.for_repo(repo.absolute())


def _repo_config_on_stack():
    """The Feast ``RepoConfig`` (with a repo path) of the nearest caller up the stack that holds one
    -- a ``FeatureStore`` (``.config``), a compute engine (``.repo_config``) -- or None (a Ray worker)."""
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        for holder in (getattr(owner, "repo_config", None), getattr(owner, "config", None)):
            if hasattr(holder, "model_extra") and getattr(holder, "repo_path", None):
                return holder
        frame = frame.f_back
    return None


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
