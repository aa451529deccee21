"""A generic interaction table (parquet or CSV) with a column mapping, optionally with a separate item attribute file.

Each row is one interaction. Columns are named by the caller: user, item, timestamp, optionally
rating (1.0 when absent) and any number of item attribute columns. An attribute cell may be a list
(parquet list columns), a string of tokens joined by ``attribute_separator`` ("Action|Comedy"), a
scalar, or empty; an item's tokens are the union over its rows.

The attribute columns may instead come from a second file with one row per item (or several,
merged the same way), joined by item id: ``item_attributes_path``; its rules (id kinds, items
missing on either side, column conflicts) are in ``training.data.table_attributes``.

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
from training.data.table_attributes import MissingItemAttributes, join_item_attributes, tokens_by_item
from training.data.table_columns import id_array, numeric_array, read_frame, timestamp_array
from training.errors import ConfigError, DatasetError


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
    item_attributes_path: str | Path | None = None,
    item_attributes_item: str | None = None,
    item_attributes_format: Literal["parquet", "csv"] | None = None,
    missing_item_attributes: MissingItemAttributes = "error",
) -> InteractionDataset:
    """Load the table at ``path``; with ``item_attributes_path``, take ``attributes`` from that file.

    ``item_attributes_item`` names the attribute file's item id column (default: ``item``);
    ``missing_item_attributes`` is ``"error"`` (default) or ``"empty"`` for interaction items
    without a row there.
    """
    path = Path(path)
    separate = item_attributes_path is not None
    if separate and not attributes:
        raise ConfigError(
            f"an item attribute file ({item_attributes_path}) needs the attribute columns to take from it"
        )
    if not separate and (item_attributes_item is not None or item_attributes_format is not None):
        raise ConfigError("item_attributes_item and item_attributes_format need item_attributes_path")
    frame = read_frame(path, file_format, id_columns=(user, item))
    wanted = [user, item, timestamp, *([rating] if rating else []), *([] if separate else attributes)]
    missing = [c for c in dict.fromkeys(wanted) if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; the file has {', '.join(map(repr, frame.columns))}"
        )
    if separate:
        both = [c for c in attributes if c in frame.columns]
        if both:
            raise DatasetError(
                f"attribute column(s) {', '.join(map(repr, both))} are in both {path} and {item_attributes_path}; "
                "attributes come from the item attribute file, so rename or drop the column in one of them"
            )
    if len(frame) == 0:
        raise DatasetError(f"{path}: the table has no rows")
    raw_items = id_array(frame[item], path, item)
    ratings = np.ones(len(frame)) if rating is None else numeric_array(frame[rating], path, rating)
    dataset = build_dataset(
        name or path.stem,
        users=id_array(frame[user], path, user),
        items=raw_items,
        ratings=ratings,
        timestamps=timestamp_array(frame[timestamp], path, timestamp),
        source=str(path),
    )
    if not attributes:
        return dataset
    if separate:
        groups = join_item_attributes(
            Path(item_attributes_path),
            key=item_attributes_item or item,
            attributes=attributes,
            separator=attribute_separator,
            file_format=item_attributes_format,
            item_ids=dataset.item_ids,
            interactions=path,
            interactions_item=item,
            missing=missing_item_attributes,
        )
        return dataset.with_item_attributes(groups)
    groups = {}
    for column in attributes:
        tokens_of = tokens_by_item(raw_items.tolist(), frame[column].tolist(), attribute_separator)
        groups[column] = AttributeGroup.from_tokens(column, [list(tokens_of[i]) for i in dataset.item_ids.tolist()])
    return dataset.with_item_attributes(groups)
