"""The one dataset type every loader produces: a time-ordered list of user–item interactions.

Why one type: the version protocol (slice by interaction fraction, split by existing/new user) and
the models only ever see integer indices, so every source (MovieLens, Amazon, a parquet table, the
synthetic generator) is reduced to the same arrays once, at load time.

Conventions, fixed here so every loader agrees:

* interactions are sorted by timestamp with a **stable** sort (ties keep file order; the paper's
  code used an unstable quicksort, so its same-day order was implementation-defined);
* users and items are re-indexed ``0..n-1`` by order of **first appearance** in that sorted list,
  so "the users that exist at time t" is always the prefix ``0..num_users(t)-1``;
* the raw ids are kept (``user_ids[index]``) so published embeddings are keyed by the source's own
  ids: int64 when the source holds integers, strings otherwise (digit strings such as Amazon ASINs
  stay strings, their leading zeros are significant);
* duplicate (user, item) pairs are kept, as in the paper.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from training.errors import DatasetError

IdDtype = Literal["int64", "string"]


@dataclass(frozen=True, eq=False)
class AttributeGroup:
    """One multi-valued attribute of every item (e.g. genres), as bags of token indices.

    Stored in CSR form (``values[offsets[r]:offsets[r+1]]`` are row r's tokens) because that is
    exactly what ``torch.nn.EmbeddingBag`` consumes; a row without tokens is an empty bag.
    """

    name: str
    vocabulary: tuple[str, ...]
    offsets: np.ndarray  # int64, (rows + 1,)
    values: np.ndarray  # int64 indices into vocabulary

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or len(self.offsets) == 0 or self.offsets[0] != 0:
            raise DatasetError(f"attribute group {self.name!r}: offsets must start at 0")
        if np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != len(self.values):
            raise DatasetError(f"attribute group {self.name!r}: offsets are not a valid CSR index")
        if len(self.values) and (self.values.min() < 0 or self.values.max() >= len(self.vocabulary)):
            raise DatasetError(f"attribute group {self.name!r}: token index outside the vocabulary")

    @property
    def num_rows(self) -> int:
        return len(self.offsets) - 1

    def tokens(self, row: int) -> list[str]:
        return [self.vocabulary[v] for v in self.values[self.offsets[row] : self.offsets[row + 1]]]

    def prefix(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, start offsets) of the first ``rows`` rows, in EmbeddingBag's layout."""
        return self.values[: self.offsets[rows]], self.offsets[:rows]

    @classmethod
    def from_tokens(
        cls,
        name: str,
        tokens_per_row: Sequence[Sequence[str]],
        *,
        vocabulary: Sequence[str] | None = None,
        min_count: int = 1,
        max_size: int | None = None,
    ) -> AttributeGroup:
        """Index token lists; tokens outside the vocabulary are dropped.

        Without an explicit vocabulary it is the tokens occurring at least ``min_count`` times
        (over all rows, duplicates counted), the ``max_size`` most frequent first, ties in order
        of first occurrence -- the Amazon preprocessing rule of the paper's code.
        """
        if vocabulary is None:
            counts = Counter(token for row in tokens_per_row for token in row)
            vocabulary = [tok for tok, n in counts.most_common(max_size) if n >= min_count]
        vocab = tuple(str(v) for v in vocabulary)
        index = {tok: i for i, tok in enumerate(vocab)}
        lengths = np.zeros(len(tokens_per_row) + 1, dtype=np.int64)
        values: list[int] = []
        for r, row in enumerate(tokens_per_row):
            kept = [index[tok] for tok in row if tok in index]
            values.extend(kept)
            lengths[r + 1] = len(kept)
        return cls(name, vocab, np.cumsum(lengths), np.asarray(values, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class InteractionDataset:
    """Time-sorted interactions with first-appearance indices; see the module docstring."""

    name: str
    user: np.ndarray  # int64 user index per interaction
    item: np.ndarray  # int64 item index per interaction
    rating: np.ndarray  # float32
    timestamp: np.ndarray  # int64, non-decreasing
    user_ids: np.ndarray  # raw id of user index r (int64 or str)
    item_ids: np.ndarray
    item_attributes: Mapping[str, AttributeGroup] = field(default_factory=dict)
    #: Not fed to the embedding model (users are inductive through one shared input vector, as in
    #: the paper); carried for consumer tasks that may want them.
    user_attributes: Mapping[str, AttributeGroup] = field(default_factory=dict)
    source: str = ""

    @property
    def num_interactions(self) -> int:
        return len(self.user)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def user_id_dtype(self) -> IdDtype:
        return "int64" if self.user_ids.dtype.kind == "i" else "string"

    @property
    def item_id_dtype(self) -> IdDtype:
        return "int64" if self.item_ids.dtype.kind == "i" else "string"

    def with_item_attributes(self, groups: Mapping[str, AttributeGroup]) -> InteractionDataset:
        for g in groups.values():
            if g.num_rows != self.num_items:
                raise DatasetError(f"attribute group {g.name!r} has {g.num_rows} rows for {self.num_items} items")
        return dataclasses.replace(self, item_attributes=dict(groups))

    def with_user_attributes(self, groups: Mapping[str, AttributeGroup]) -> InteractionDataset:
        for g in groups.values():
            if g.num_rows != self.num_users:
                raise DatasetError(f"attribute group {g.name!r} has {g.num_rows} rows for {self.num_users} users")
        return dataclasses.replace(self, user_attributes=dict(groups))

    def fingerprint(self) -> str:
        """sha256 of everything training depends on: detects data that changed under a version chain."""
        h = hashlib.sha256()
        for arr in (self.user, self.item, self.rating, self.timestamp):
            h.update(np.ascontiguousarray(arr).tobytes())
        for ids in (self.user_ids, self.item_ids):
            h.update(ids.dtype.kind.encode())
            h.update("\x1f".join(map(str, ids.tolist())).encode())
        for groups in (self.item_attributes, self.user_attributes):
            for name in sorted(groups):
                g = groups[name]
                h.update(name.encode())
                h.update("\x1f".join(g.vocabulary).encode())
                h.update(g.offsets.tobytes())
                h.update(g.values.tobytes())
        return h.hexdigest()

    def summary(self) -> str:
        attrs = ", ".join(f"{n}({len(g.vocabulary)})" for n, g in self.item_attributes.items()) or "none"
        return (
            f"{self.name}: {self.num_users} users, {self.num_items} items, {self.num_interactions} interactions; "
            f"item attributes: {attrs}"
        )


def normalize_ids(values, *, what: str, source: str) -> np.ndarray:
    """Raw ids as int64 (integer sources) or str; refuses missing values and non-integral numbers."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        raise DatasetError(f"{source}: {what} ids are booleans; expected integers or strings")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise DatasetError(f"{source}: {what} column has missing (NaN) ids")
        if not np.all(arr == np.round(arr)):
            raise DatasetError(f"{source}: {what} ids are fractional numbers; expected integers or strings")
        return arr.astype(np.int64)
    series = pd.Series(arr, dtype=object)
    if series.isna().any():
        raise DatasetError(f"{source}: {what} column has {int(series.isna().sum())} missing ids")
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in series):
        return series.to_numpy(dtype=np.int64)
    return series.map(str).to_numpy(dtype=str)


def build_dataset(
    name: str,
    *,
    users,
    items,
    ratings,
    timestamps,
    source: str,
) -> InteractionDataset:
    """Sort interactions by time (stable) and index users/items by first appearance.

    Attributes are attached afterwards (:meth:`InteractionDataset.with_item_attributes`) because
    rules such as "brands on at least 5 items" need the final item list.
    """
    users = normalize_ids(users, what="user", source=source)
    items = normalize_ids(items, what="item", source=source)
    ratings = np.asarray(ratings, dtype=np.float64)
    timestamps = np.asarray(timestamps)
    n = len(users)
    if n == 0:
        raise DatasetError(f"{source}: no interactions")
    if not (len(items) == len(ratings) == len(timestamps) == n):
        raise DatasetError(f"{source}: users, items, ratings and timestamps have different lengths")
    if not np.isfinite(ratings).all():
        raise DatasetError(f"{source}: ratings contain missing or infinite values")
    if timestamps.dtype.kind not in "iu":
        raise DatasetError(f"{source}: timestamps must be integers (got dtype {timestamps.dtype})")
    timestamps = timestamps.astype(np.int64)

    order = np.argsort(timestamps, kind="stable")
    user_codes, user_ids = pd.factorize(users[order], sort=False)
    item_codes, item_ids = pd.factorize(items[order], sort=False)
    return InteractionDataset(
        name=name,
        user=user_codes.astype(np.int64),
        item=item_codes.astype(np.int64),
        rating=ratings[order].astype(np.float32),
        timestamp=timestamps[order],
        user_ids=_raw_id_array(user_ids),
        item_ids=_raw_id_array(item_ids),
        source=source,
    )


def _raw_id_array(uniques) -> np.ndarray:
    arr = np.asarray(uniques)
    return arr.astype(np.int64) if arr.dtype.kind in "iu" else arr.astype(str)
