"""Item attributes from a separate file (one or more rows per item), joined to the interactions by item id.

The interaction table says who interacted with what and when; a catalogue file often holds the
items' metadata, with multi-valued cells (parquet lists or "Action|Comedy" strings). The rules:

* the attribute columns named by ``attributes`` come from this file only (a column present in both
  files is refused by ``load_table``: which one was meant cannot be guessed);
* an item's tokens are the union over its rows, in order of first occurrence, as in the
  interaction table; an item id on several rows is therefore merged, not an error;
* ids are typed by the interaction table's rule (``training.data.table_columns``) and must be of
  the interactions' kind: integer item ids match an attribute file whose ids are all plain integers
  ("17" in a CSV matches 17), string ids match string ids; an attribute file holding "0042" for
  integer item ids, or an integer column for string item ids, is refused, because "0042" is not 42.
  When the interactions hold string ids, an attribute file whose text ids merely look like integers
  ("17") is compared as text;
* items of the interactions without a row: refused by default (count and examples), or, with
  ``missing="empty"``, given no tokens and reported with a logging warning;
* ids of the attribute file that never occur in the interactions (a bigger catalogue) are ignored
  and reported with ``logging.info``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from training.data.dataset import AttributeGroup
from training.data.table_columns import CANONICAL_INT, cell_tokens, id_array, read_frame
from training.errors import DatasetError

logger = logging.getLogger(__name__)

MissingItemAttributes = Literal["error", "empty"]
MISSING_ITEM_ATTRIBUTES: tuple[str, ...] = ("error", "empty")
_EXAMPLES = 5


def tokens_by_item(raw_items: Iterable, cells: Iterable, separator: str) -> dict:
    """Each raw item id's tokens (a dict used as an ordered set): the union over the item's rows."""
    tokens_of: dict = {}
    for raw, cell in zip(raw_items, cells, strict=True):
        bag = tokens_of.setdefault(raw, {})
        for token in cell_tokens(cell, separator):
            bag.setdefault(token)
    return tokens_of


def join_item_attributes(
    path: Path,
    *,
    key: str,
    attributes: Sequence[str],
    separator: str,
    file_format: str | None,
    item_ids: np.ndarray,
    interactions: Path,
    interactions_item: str,
    missing: MissingItemAttributes = "error",
) -> dict[str, AttributeGroup]:
    """One ``AttributeGroup`` per attribute column, rows in the order of ``item_ids`` (the dataset's items)."""
    if missing not in MISSING_ITEM_ATTRIBUTES:
        raise DatasetError(
            f"missing_item_attributes must be one of {', '.join(MISSING_ITEM_ATTRIBUTES)}; got {missing!r}"
        )
    frame = read_frame(path, file_format, id_columns=(key,))
    absent = [c for c in dict.fromkeys([key, *attributes]) if c not in frame.columns]
    if absent:
        raise DatasetError(
            f"{path}: the item attribute file has no column(s) {', '.join(map(repr, absent))}; "
            f"it has {', '.join(map(repr, frame.columns))}"
        )
    if len(frame) == 0:
        raise DatasetError(f"{path}: the item attribute file has no rows")
    ids = _matching_ids(frame[key], path, key, item_ids, interactions, interactions_item).tolist()

    wanted = item_ids.tolist()
    known = set(wanted)
    listed = dict.fromkeys(ids)
    extra = [i for i in listed if i not in known]
    if extra:
        logger.info(
            "%s: %d item id(s) of column %r never occur in %s and are ignored, e.g. %s",
            path,
            len(extra),
            key,
            interactions,
            _examples(extra),
        )
    absent_items = [i for i in wanted if i not in listed]
    if absent_items:
        message = (
            f"{len(absent_items)} of {len(wanted)} items of {interactions} (column {interactions_item!r}) have no row "
            f"in {path} (column {key!r}), e.g. {_examples(absent_items)}"
        )
        if missing == "error":
            hint = (
                f"; {path} has {len(extra)} id(s) that match no interaction, e.g. {_examples(extra)}" if extra else ""
            )
            raise DatasetError(
                f"{message}{hint}; add rows for them, or give them no attributes with "
                "--missing-item-attributes empty (missing_item_attributes='empty')"
            )
        logger.warning("%s; they get no attribute tokens", message)

    groups = {}
    for column in attributes:
        tokens_of = tokens_by_item(ids, frame[column].tolist(), separator)
        groups[column] = AttributeGroup.from_tokens(column, [list(tokens_of.get(i, ())) for i in wanted])
    return groups


def _matching_ids(
    column: pd.Series, path: Path, key: str, item_ids: np.ndarray, interactions: Path, interactions_item: str
) -> np.ndarray:
    """The attribute file's ids, of the interactions' id kind; a clear refusal when the kinds differ."""
    ids = id_array(column, path, key)
    ours = f"{interactions} (column {interactions_item!r})"
    theirs = f"{path} (column {key!r})"
    if item_ids.dtype.kind == "i":
        if ids.dtype.kind == "i":
            return ids
        example = next(v for v in column.map(str) if not CANONICAL_INT.match(v))
        raise DatasetError(
            f"item ids differ in kind: {ours} holds integer ids but {theirs} holds string ids such as {example!r}; "
            "a string id never matches an integer one ('0042' is not 42), so write the ids the same way in both files"
        )
    if ids.dtype.kind != "i":
        return ids
    if column.dtype.kind in "iuf":
        example = next((v for v in item_ids.tolist() if not CANONICAL_INT.match(v)), str(item_ids[0]))
        raise DatasetError(
            f"item ids differ in kind: {ours} holds string ids such as {example!r} but {theirs} holds "
            "integer ids; an integer never matches a string id ('0042' is not 42), so write the ids the same way "
            "in both files (e.g. store the attribute file's id column as strings)"
        )
    return column.map(str).to_numpy(dtype=str)  # text that only looks like integers: compared as text


def _examples(ids: Sequence) -> str:
    shown = ", ".join(repr(i) for i in ids[:_EXAMPLES])
    return shown + (", ..." if len(ids) > _EXAMPLES else "")
