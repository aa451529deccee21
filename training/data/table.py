"""A generic interaction table (parquet or CSV) with a column mapping.

Each row is one interaction. Columns are named by the caller: user, item, timestamp, optionally
rating (1.0 when absent) and any number of item attribute columns. An attribute cell may be a list
(parquet list columns), a string of tokens joined by ``attribute_separator`` ("Action|Comedy"), a
scalar, or empty; an item's tokens are the union over its rows.

Timestamps may be integers (taken as they are, e.g. Unix seconds), datetimes, or date strings
(converted to Unix seconds, UTC). Ids keep their type: integer columns give int64 ids; in a CSV an
id column counts as integer only when every value is written as a plain integer ("0042" is a
string id, because its leading zeros matter).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from training.data.dataset import AttributeGroup, InteractionDataset, build_dataset
from training.errors import DatasetError

_CANONICAL_INT = re.compile(r"^(0|-?[1-9][0-9]{0,17})$")


def load_table(
    path: str | Path,
    *,
    user: str,
    item: str,
    timestamp: str,
    rating: str | None = None,
    attributes: Sequence[str] = (),
    attribute_separator: str = "|",
    file_format: Literal["parquet", "csv"] | None = None,
    name: str | None = None,
) -> InteractionDataset:
    path = Path(path)
    frame = _read(path, file_format, id_columns=(user, item))
    wanted = [user, item, timestamp, *([rating] if rating else []), *attributes]
    missing = [c for c in dict.fromkeys(wanted) if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; the file has {', '.join(map(repr, frame.columns))}"
        )
    if len(frame) == 0:
        raise DatasetError(f"{path}: the table has no rows")
    source = str(path)
    ratings = np.ones(len(frame)) if rating is None else _numeric(frame[rating], path, rating)
    dataset = build_dataset(
        name or path.stem,
        users=_ids(frame[user], path, user),
        items=_ids(frame[item], path, item),
        ratings=ratings,
        timestamps=_timestamps(frame[timestamp], path, timestamp),
        source=source,
    )
    if not attributes:
        return dataset
    raw_items = _ids(frame[item], path, item)
    groups = {}
    for column in attributes:
        tokens_of: dict = {}
        for raw, cell in zip(raw_items.tolist(), frame[column].tolist(), strict=True):
            bag = tokens_of.setdefault(raw, [])
            for token in _tokens(cell, attribute_separator):
                if token not in bag:
                    bag.append(token)
        groups[column] = AttributeGroup.from_tokens(column, [tokens_of[i] for i in dataset.item_ids.tolist()])
    return dataset.with_item_attributes(groups)


def _read(path: Path, file_format: str | None, id_columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty")
    fmt = file_format or ("parquet" if path.suffix.lower() in (".parquet", ".pq") else "csv")
    try:
        if fmt == "parquet":
            return pd.read_parquet(path)
        # Ids are read as text so that "0042" survives; _ids decides whether they are integers.
        return pd.read_csv(path, dtype={c: str for c in id_columns})
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path} has no header or rows") from None
    except Exception as exc:  # pyarrow/pandas raise many types for a damaged file
        raise DatasetError(f"{path} is not a readable {fmt} table: {exc}") from None


def _ids(column: pd.Series, path: Path, name: str) -> np.ndarray:
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
    if text.map(lambda v: bool(_CANONICAL_INT.match(v))).all():
        return text.map(int).to_numpy(dtype=np.int64)
    return text.to_numpy(dtype=str)


def _numeric(column: pd.Series, path: Path, name: str) -> np.ndarray:
    values = pd.to_numeric(column, errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DatasetError(f"{path}: column {name!r} has a non-numeric value at row {first} ({column.iloc[first]!r})")
    return values.to_numpy(dtype=np.float64)


def _timestamps(column: pd.Series, path: Path, name: str) -> np.ndarray:
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


def _tokens(cell, separator: str) -> list[str]:
    if cell is None:
        return []
    if isinstance(cell, float) and np.isnan(cell):
        return []
    if isinstance(cell, str):
        return [t.strip() for t in cell.split(separator) if t.strip()] if separator else [cell]
    if isinstance(cell, (list, tuple, np.ndarray)):
        return [str(t) for t in cell if t is not None and str(t).strip()]
    return [str(cell)]
