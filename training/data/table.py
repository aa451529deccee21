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

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from training.data.dataset import AttributeGroup, InteractionDataset, build_dataset
from training.data.table_columns import cell_tokens, id_array, numeric_array, read_frame, timestamp_array
from training.errors import DatasetError


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
    frame = read_frame(path, file_format, id_columns=(user, item))
    wanted = [user, item, timestamp, *([rating] if rating else []), *attributes]
    missing = [c for c in dict.fromkeys(wanted) if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; the file has {', '.join(map(repr, frame.columns))}"
        )
    if len(frame) == 0:
        raise DatasetError(f"{path}: the table has no rows")
    source = str(path)
    ratings = np.ones(len(frame)) if rating is None else numeric_array(frame[rating], path, rating)
    dataset = build_dataset(
        name or path.stem,
        users=id_array(frame[user], path, user),
        items=id_array(frame[item], path, item),
        ratings=ratings,
        timestamps=timestamp_array(frame[timestamp], path, timestamp),
        source=source,
    )
    if not attributes:
        return dataset
    raw_items = id_array(frame[item], path, item)
    groups = {}
    for column in attributes:
        tokens_of: dict = {}
        for raw, cell in zip(raw_items.tolist(), frame[column].tolist(), strict=True):
            bag = tokens_of.setdefault(raw, [])
            for token in cell_tokens(cell, attribute_separator):
                if token not in bag:
                    bag.append(token)
        groups[column] = AttributeGroup.from_tokens(column, [tokens_of[i] for i in dataset.item_ids.tolist()])
    return dataset.with_item_attributes(groups)
