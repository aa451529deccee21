"""Embedding tables: validation of (ids, vectors) and their parquet/arrow representation.

The latest embeddings are stored as one parquet file that Feast reads directly as the latest
view's FileSource, so its columns follow Feast's conventions: the join key, ``event_timestamp``,
``embedding`` (list<float32>) and ``source_version`` (which published version the row comes from).
Conversions between the arrow list column and a dense (n, d) float32 matrix are zero-copy where
arrow allows it, because materialization and export move millions of rows through them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
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


#: Characters a string id must not contain: controls (NUL included -- numpy drops trailing NULs),
#: line/paragraph separators (they split lines in id files) and lone surrogates (not UTF-8).
_BAD_ID_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
#: Longest string id accepted (characters).
MAX_STRING_ID = 1024
_INT64_MAX = np.iinfo(np.int64).max


def string_id_problem(value) -> str | None:
    """Why ``value`` cannot be a string entity id (so it would not round-trip exactly), or None."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if not value:
        return "the empty string is not an id"
    if len(value) > MAX_STRING_ID:
        return f"an id of {len(value)} characters is longer than {MAX_STRING_ID}"
    bad = _BAD_ID_CHARS.search(value)
    if bad:
        return (
            f"{value!r} contains {bad.group()!r} (U+{ord(bad.group()):04X}): control characters, line separators "
            "and lone surrogates do not survive parquet, Feast's entity keys or id files unchanged"
        )
    if value != value.strip():
        return f"{value!r} has leading or trailing whitespace (it would not survive id files or CLI arguments)"
    return None


def validate_ids(ids, dtype: str) -> np.ndarray:
    """Entity ids as int64 or str numpy array; refuses nulls, wrong types, duplicates and any id that
    would not round-trip exactly through parquet, export and Feast's online entity key."""
    if dtype == "string" and not isinstance(ids, np.ndarray):
        # A list of str through np.asarray(dtype=str) would silently drop trailing NULs: check the
        # caller's own values first.
        try:
            arr = np.asarray(list(ids), dtype=object)
        except TypeError:
            raise InvalidInputError(f"ids must be a 1-D sequence of strings; got {type(ids).__name__}") from None
    else:
        arr = np.asarray(ids)
    if arr.ndim != 1:
        raise InvalidInputError(f"ids must be 1-D; got shape {arr.shape}")
    if arr.size == 0:
        raise InvalidInputError("no ids given: an embedding table needs at least one row")
    if dtype == "int64":
        if arr.dtype.kind not in "iu":
            raise InvalidInputError(f"ids must be integers for an int64 join key; got dtype {arr.dtype}")
        if arr.dtype.kind == "u" and arr.size and int(arr.max()) > _INT64_MAX:
            big = arr[arr > _INT64_MAX]
            raise InvalidInputError(
                f"{len(big)} ids do not fit a signed 64-bit join key (e.g. {int(big[0])} > {_INT64_MAX}); "
                "they would wrap around to negative ids"
            )
        arr = arr.astype(np.int64)
    elif dtype == "string":
        if arr.dtype.kind not in "UO":
            raise InvalidInputError(f"ids must be strings for a string join key; got dtype {arr.dtype}")
        if arr.dtype.kind == "O" and not all(isinstance(v, str) for v in arr):
            raise InvalidInputError("ids must all be strings (found None or another type)")
        for pos, value in enumerate(arr.tolist()):
            problem = string_id_problem(value)
            if problem:
                raise InvalidInputError(f"id at position {pos} cannot be used: {problem}")
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


def list_array_to_matrix(
    col: pa.Array | pa.ChunkedArray, dim: int | None = None, *, what: str = "embedding"
) -> np.ndarray:
    """arrow list<float> column -> (n, d) float32; refuses nulls and ragged rows."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    n = len(col)
    if col.null_count:
        raise CorruptArtifactError(f"{what} column has {col.null_count} null vectors")
    if n == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        raise DimensionMismatchError(f"{what} column holds {col.type}, not vectors (a list<float> column)")
    if pa.types.is_fixed_size_list(col.type):
        d = col.type.list_size
        flat = col.flatten()
    else:
        offsets = np.asarray(col.offsets)
        lengths = np.diff(offsets)
        d = int(lengths[0])
        if not (lengths == d).all():
            raise DimensionMismatchError(
                f"{what} column has vectors of different lengths ({lengths.min()}..{lengths.max()})"
            )
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


def check_embeddings_file(path: Path, join_key: str, id_dtype: str, record, origin: str) -> None:
    """The parquet footer of a latest-embeddings file says what `feast materialize` will read.

    Cheap (footer only): columns and types, row count, and -- from the column statistics -- that
    every row carries this version's number and publish time. Run after its checksum passed.
    """
    try:
        parquet = pq.ParquetFile(path)
        schema = parquet.schema_arrow
        meta = parquet.metadata
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptArtifactError(f"{origin}: {path} is not a readable parquet file: {exc}") from None
    id_types = (pa.int64(),) if id_dtype == "int64" else (pa.string(), pa.large_string())
    expected = {
        join_key: lambda t: t in id_types,
        TIMESTAMP_COLUMN: lambda t: pa.types.is_timestamp(t),
        EMBEDDING_FEATURE: lambda t: (
            (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t))
            and pa.types.is_floating(t.value_type)
        ),
        SOURCE_VERSION_FEATURE: lambda t: pa.types.is_integer(t),
    }
    for name, ok in expected.items():
        index = schema.get_field_index(name)
        if index < 0:
            raise CorruptArtifactError(f"{origin}: {path} has no column {name!r} (columns: {schema.names})")
        if not ok(schema.field(index).type):
            raise CorruptArtifactError(f"{origin}: column {name!r} of {path} has type {schema.field(index).type}")
    if meta.num_rows != record.embeddings.rows:
        raise CorruptArtifactError(
            f"{origin}: {path} holds {meta.num_rows} rows, the manifest records {record.embeddings.rows}"
        )
    wanted = {
        SOURCE_VERSION_FEATURE: (record.version, str(record.version)),
        TIMESTAMP_COLUMN: (record.created_at, record.created_at.isoformat()),
    }
    for name, (value, shown) in wanted.items():
        column = schema.get_field_index(name)
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                continue
            lo, hi = stats.min, stats.max
            if name == TIMESTAMP_COLUMN:
                lo, hi = (_utc(lo), _utc(hi))
            if lo != value or hi != value:
                raise CorruptArtifactError(
                    f"{origin}: column {name!r} of {path} ranges {lo}..{hi} in row group {group}; every row of "
                    f"version {record.version} must carry {shown}"
                )


def _utc(value):
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def read_embeddings(
    path: Path, join_key: str, dim: int, *, ids=None, id_dtype: str = "int64"
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the parquet file; with ``ids`` only those rows, in that order."""
    try:
        table = pq.read_table(path, columns=[join_key, EMBEDDING_FEATURE])
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise CorruptArtifactError(f"embeddings file {path} is unreadable: {exc}") from None
    all_ids = table.column(join_key).to_numpy(zero_copy_only=False)
    if ids is None:
        return all_ids, list_array_to_matrix(table.column(EMBEDDING_FEATURE), dim)
    rows, wanted = _rows_of(all_ids, ids, id_dtype)
    picked = table.take(pa.array(rows))
    return wanted, list_array_to_matrix(picked.column(EMBEDDING_FEATURE), dim)


def select_rows(all_ids: np.ndarray, vectors: np.ndarray, ids, id_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, their rows of ``vectors``) -- one row per ``all_ids`` -- in the order of ``ids``; unknown ids refused."""
    rows, wanted = _rows_of(all_ids, ids, id_dtype)
    return wanted, vectors[rows]


def lookup(all_ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row of each wanted id in ``all_ids``, whether it is there at all); rows of absent ids are arbitrary."""
    if not len(all_ids):
        return np.zeros(len(wanted), dtype=np.int64), np.zeros(len(wanted), dtype=bool)
    order = np.argsort(all_ids, kind="stable")
    pos = np.clip(np.searchsorted(all_ids, wanted, sorter=order), 0, len(all_ids) - 1)
    rows = order[pos]
    return rows, all_ids[rows] == wanted


def _rows_of(all_ids: np.ndarray, ids, id_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    wanted = validate_ids(ids, id_dtype)
    rows, found = lookup(all_ids, wanted)
    missing = ~found
    if missing.any():
        miss = wanted[missing]
        raise UnknownIdError(
            f"{len(miss)} of {len(wanted)} ids are not in the latest embeddings (e.g. {', '.join(map(str, miss[:5]))})"
        )
    return rows, wanted
