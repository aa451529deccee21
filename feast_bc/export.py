"""Offline access to any version: what consumers use to retrain or backfill.

Values are computed exactly as `feast materialize` computes them (same verified artifacts, same
composed float32 matrix, same ``Catalog.transform_vectors``), so an exported row equals what
``get_online_features`` serves for that version after materialization.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc.atomic import atomic_write
from feast_bc.catalog import Catalog
from feast_bc.embeddings import matrix_to_list_array
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE


def export_version(where: str | Path | Catalog, family: str, version: int, ids=None) -> pa.Table:
    """Version-``version`` embeddings of all entities (or of ``ids``, in that order) as an arrow table.

    ``where`` is a feature repo (its ``bc_catalog`` is used) or a catalog directory. Columns: the
    join key, ``embedding`` (list<float32> of the version's dimension) and ``source_version``
    (the latest version the values were computed from).
    """
    catalog = Catalog.locate(where)
    manifest = catalog.manifest(family)
    manifest.version(version)
    found_ids, latest = catalog.latest_embeddings(family, ids=ids, manifest=manifest)
    values = catalog.transform_vectors(family, latest, manifest.latest_version, version, manifest)
    join_key = manifest.entity.join_key
    id_type = pa.int64() if manifest.entity.dtype == "int64" else pa.string()
    return pa.table(
        {
            join_key: pa.array(found_ids, type=id_type),
            EMBEDDING_FEATURE: matrix_to_list_array(values),
            SOURCE_VERSION_FEATURE: pa.array([manifest.latest_version] * len(found_ids), type=pa.int64()),
        }
    )


def write_parquet(table: pa.Table, out: str | Path) -> Path:
    """Write atomically: an interrupted export never leaves a half-written file behind."""
    out = Path(out)
    atomic_write(out, lambda tmp: pq.write_table(table, tmp))
    return out
