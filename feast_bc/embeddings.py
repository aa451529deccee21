"""Embedding tables: validation of (ids, vectors) and their parquet/arrow representation.

The latest embeddings are stored as one parquet file that Feast reads directly as the latest
view's FileSource, so its columns follow Feast's conventions: the join key, ``event_timestamp``,
``embedding`` (list<float32>) and ``source_version`` (which published version the row comes from).
Conversions between the arrow list column and a dense (n, d) float32 matrix are zero-copy where
arrow allows it, because materialization and export move millions of rows through them.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from feast_bc.atomic import write_content_addressed
from feast_bc.errors import (
    CorruptArtifactError,
    DimensionMismatchError,
    DuplicateIdError,
    InvalidInputError,
    UnknownIdError,
)
from feast_bc.naming import EMBEDDING_FEATURE, SOURCE_VERSION_FEATURE, TIMESTAMP_COLUMN
from feast_bc.transforms import MAX_DIM, as_matrix

ROW_GROUP_ROWS = 65_536


def validate_ids(ids, dtype: str) -> np.ndarray:
    """Entity ids as int64 or str numpy array; refuses nulls, wrong types and duplicates."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidInputError(f"ids must be 1-D; got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidInputError("no ids given: an embedding table needs at least one row")
    if dtype == "int64":
        if arr.dtype.kind not in "iu":
            raise InvalidInputError(f"ids must be integers for an int64 join key; got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    elif dtype == "string":
        if arr.dtype.kind not in "UO":
            raise InvalidInputError(f"ids must be strings for a string join key; got dtype {arr.dtype}")
        if arr.dtype.kind == "O" and not all(isinstance(v, str) for v in arr):
            raise InvalidInputError("ids must all be strings (found None or another type)")
        arr = arr.astype(str)
    else:  # pragma: no cover - EntitySpec restricts dtype
        raise InvalidInputError(f"unsupported id dtype {dtype!r}")
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != len(arr):
        dups = uniq[counts > 1]
        raise DuplicateIdError(
            f"{len(dups)} ids occur more than once (e.g. {', '.join(map(str, dups[:5]))}); "
            "each entity must have exactly one vector"
        )
    return arr


def validate_vectors(vectors, n_rows: int) -> np.ndarray:
    mat = as_matrix(vectors, what="embeddings")
    if mat.shape[0] != n_rows:
        raise DimensionMismatchError(f"{n_rows} ids but {mat.shape[0]} embedding rows")
    if not 1 <= mat.shape[1] <= MAX_DIM:
        raise DimensionMismatchError(f"embedding dimension {mat.shape[1]} is outside 1..{MAX_DIM}")
    return mat


def matrix_to_list_array(mat: np.ndarray) -> pa.ListArray:
    """(n, d) float32 -> arrow list<float32> without copying the values."""
    n, d = mat.shape
    values = pa.array(np.ascontiguousarray(mat, dtype=np.float32).reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32), type=pa.int32())
    return pa.ListArray.from_arrays(offsets, values)


def list_array_to_matrix(col: pa.Array | pa.ChunkedArray, dim: int | None = None, *, what: str = "embedding") -> np.ndarray:
    """arrow list<float> column -> (n, d) float32; refuses nulls and ragged rows."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    if col.null_count:
        raise CorruptArtifactError(f"{what} column has {col.null_count} null vectors")
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
        flat = col.flatten()
    else:
        offsets = np.asarray(col.offsets)
        lengths = np.diff(offsets)
        d = int(lengths[0])
        if not (lengths == d).all():
            raise DimensionMismatchError(f"{what} column has vectors of different lengths ({lengths.min()}..{lengths.max()})")
        flat = col.flatten()
    if dim is not None and d != dim:
        raise DimensionMismatchError(f"{what} vectors have dimension {d}, expected {dim}")
    return np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, d)


def embeddings_table(
    join_key: str, ids: np.ndarray, vectors: np.ndarray, event_time: datetime, source_version: int
) -> pa.Table:
    n = len(ids)
    id_type = pa.int64() if ids.dtype.kind == "i" else pa.string()
    ts = pa.array(np.full(n, np.datetime64(event_time.replace(tzinfo=None), "us")), type=pa.timestamp("us", tz="UTC"))
    return pa.table(
        {
            join_key: pa.array(ids, type=id_type),
            TIMESTAMP_COLUMN: ts,
            EMBEDDING_FEATURE: matrix_to_list_array(vectors),
            SOURCE_VERSION_FEATURE: pa.array(np.full(n, source_version, dtype=np.int64)),
        }
    )


def write_embeddings(directory: Path, stem: str, table: pa.Table) -> tuple[Path, str, int]:
    """Write a new content-addressed parquet file; return (path, sha256, size)."""
    # Float vectors neither dictionary-encode nor compress: writing them plain makes reads (every
    # materialization, every export) markedly faster; the small columns keep the defaults.
    other = [c for c in table.column_names if c != EMBEDDING_FEATURE]
    return write_content_addressed(
        directory,
        stem,
        ".parquet",
        lambda tmp: pq.write_table(
            table,
            tmp,
            row_group_size=ROW_GROUP_ROWS,
            use_dictionary=[TIMESTAMP_COLUMN, SOURCE_VERSION_FEATURE],
            compression={**{c: "snappy" for c in other}, EMBEDDING_FEATURE: "none"},
        ),
    )


def read_embeddings(path: Path, join_key: str, dim: int, *, ids=None, id_dtype: str = "int64") -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the parquet file; with ``ids`` only those rows, in that order."""
    try:
        table = pq.read_table(path, columns=[join_key, EMBEDDING_FEATURE])
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise CorruptArtifactError(f"embeddings file {path} is unreadable: {exc}") from None
    all_ids = table.column(join_key).to_numpy(zero_copy_only=False)
    if ids is None:
        return all_ids, list_array_to_matrix(table.column(EMBEDDING_FEATURE), dim)
    wanted = validate_ids(ids, id_dtype)
    order = np.argsort(all_ids, kind="stable")
    pos = np.searchsorted(all_ids, wanted, sorter=order)
    pos = np.clip(pos, 0, len(all_ids) - 1)
    rows = order[pos]
    missing = all_ids[rows] != wanted
    if missing.any():
        miss = wanted[missing]
        raise UnknownIdError(
            f"{len(miss)} of {len(wanted)} ids are not in the latest embeddings "
            f"(e.g. {', '.join(map(str, miss[:5]))})"
        )
    picked = table.take(pa.array(rows))
    return wanted, list_array_to_matrix(picked.column(EMBEDDING_FEATURE), dim)
