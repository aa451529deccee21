"""Reading a table file and turning its columns into ids, numbers, timestamps and attribute tokens.

Shared by the interaction table and the item attribute file (``training.data.table``,
``training.data.table_attributes``) so both files type their ids by one rule: integer columns give
int64 ids; a text column (every CSV id column is read as text) gives int64 ids only when every value
is a canonical integer ("17", not "0042" or "+17"), otherwise string ids.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from training.errors import DatasetError

CANONICAL_INT = re.compile(r"^(0|-?[1-9][0-9]{0,17})$")


def read_frame(path: Path, file_format: str | None, id_columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty")
    fmt = file_format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        # Ids are read as text so that "0042" survives; id_array decides whether they are integers.
        return pd.read_csv(path, dtype={c: str for c in id_columns})
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path} has no header or rows") from None
    except Exception as exc:  # pyarrow/pandas raise many types for a damaged file
        raise DatasetError(f"{path} is not a readable {fmt} table: {exc}") from None


def id_array(column: pd.Series, path: Path, name: str) -> np.ndarray:
    if column.isna().any():
        raise DatasetError(f"{path}: column {name!r} has {int(column.isna().sum())} missing ids")
    if column.dtype.kind in "iu":
        return column.to_numpy(dtype=np.int64)
    if column.dtype.kind == "f":
        values = column.to_numpy()
        if not np.all(values == np.round(values)):
            raise DatasetError(f"{path}: column {name!r} holds fractional numbers; ids must be integers or strings")
        return values.astype(np.int64)
    if column.dtype.kind == "b":
        raise DatasetError(f"{path}: column {name!r} holds booleans; ids must be integers or strings")
    text = column.map(str)
    if text.map(lambda v: bool(CANONICAL_INT.match(v))).all():
        return text.map(int).to_numpy(dtype=np.int64)
    return text.to_numpy(dtype=str)


def numeric_array(column: pd.Series, path: Path, name: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(f"{path}: column {name!r} has a non-numeric value at row {first} ({column.iloc[first]!r})")
    return values.to_numpy(dtype=np.float64)


def timestamp_array(column: pd.Series, path: Path, name: str) -> np.ndarray:
    if column.isna().any():
        first = int(np.flatnonzero(column.isna().to_numpy())[0])
        raise DatasetError(f"{path}: column {name!r} has a missing timestamp at row {first}")
    if column.dtype.kind in "iu":
        return column.to_numpy(dtype=np.int64)
    if column.dtype.kind == "f":
        values = column.to_numpy()
        if not np.isfinite(values).all() or not np.all(values == np.round(values)):
            raise DatasetError(
                f"{path}: column {name!r} holds fractional or infinite timestamps; use integers (e.g. milliseconds) "
                "or datetimes"
            )
        return values.astype(np.int64)
    if column.dtype.kind == "b":
        raise DatasetError(f"{path}: column {name!r} holds booleans, not timestamps")
    try:
        when = pd.to_datetime(column, utc=True, errors="raise", format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        raise DatasetError(f"{path}: column {name!r} holds values that are not timestamps ({exc})") from None
    seconds = (when - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.to_numpy(dtype=np.int64)


def cell_tokens(cell, separator: str) -> list[str]:
    if cell is None:
        return []
    if isinstance(cell, float) and np.isnan(cell):
        return []
    if isinstance(cell, str):
        return [t.strip() for t in cell.split(separator) if t.strip()] if separator else [cell]
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [str(t) for t in cell if t is not None and str(t).strip()]
    return [str(cell)]
