"""Amazon Review Data 2018 (Ni, Li, McAuley): a 5-core review file plus its ``meta_*.json``.

Preprocessing follows the paper's ``process.py``:

* keep reviews whose item (``asin``) has a metadata record (the last record wins on duplicates);
* interaction = (``reviewerID``, ``asin``, rating ``overall``, review day); the day comes from
  ``reviewTime`` ("MM D, YYYY"), or from ``unixReviewTime`` (UTC) when that is absent, and is
  stored as the Unix time of that day's midnight (UTC);
* brand: one per item, kept if it occurs on at least 5 items, at most the 10,000 most frequent;
* categories: the ``category`` list minus strings containing ``</span>`` (HTML debris), kept if
  they occur at least 5 times, at most 10,000 (the code caps categories the same way).

One deliberate difference: an empty or missing brand is not treated as a brand value (the original
would have made "" a shared token of all brandless items).
Both files may be plain JSON lines or gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from training.data.dataset import AttributeGroup, InteractionDataset, build_dataset
from training.errors import DatasetError

MIN_ATTRIBUTE_COUNT = 5
MAX_VOCABULARY = 10_000
_DAY = 86_400


def load_amazon_2018(reviews: str | Path, meta: str | Path, *, name: str | None = None) -> InteractionDataset:
    reviews, meta = Path(reviews), Path(meta)
    # Only what is used is kept: meta files run to hundreds of thousands of large records.
    meta_by_asin = {
        str(record["asin"]): (record.get("brand"), record.get("category"))
        for record in _records(meta, required=("asin",))
    }
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    days: list[int] = []
    for line_no, record in _numbered_records(reviews, required=("reviewerID", "asin", "overall")):
        if record["asin"] not in meta_by_asin:
            continue
        users.append(str(record["reviewerID"]))
        items.append(str(record["asin"]))
        ratings.append(_rating(record["overall"], reviews, line_no))
        days.append(_review_day(record, reviews, line_no))
    if not users:
        raise DatasetError(f"{reviews}: no review has an item with metadata in {meta}")
    dataset = build_dataset(
        name or _category_name(reviews),
        users=np.asarray(users, dtype=object),
        items=np.asarray(items, dtype=object),
        ratings=np.asarray(ratings),
        timestamps=np.asarray(days, dtype=np.int64),
        source=str(reviews),
    )
    item_meta = [meta_by_asin[asin] for asin in dataset.item_ids]
    brands = [[b] if (b := str(brand or "").strip()) else [] for brand, _ in item_meta]
    categories = [[c for c in _string_list(cats) if "</span>" not in c] for _, cats in item_meta]
    return dataset.with_item_attributes(
        {
            "brand": AttributeGroup.from_tokens(
                "brand", brands, min_count=MIN_ATTRIBUTE_COUNT, max_size=MAX_VOCABULARY
            ),
            "category": AttributeGroup.from_tokens(
                "category", categories, min_count=MIN_ATTRIBUTE_COUNT, max_size=MAX_VOCABULARY
            ),
        }
    )


def _string_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _category_name(reviews: Path) -> str:
    stem = reviews.name.split(".")[0]
    return "amazon-" + (stem[:-2] if stem.endswith("_5") else stem)


def _open(path: Path):
    if not path.is_file():
        raise DatasetError(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty")
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _numbered_records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    seen = False
    with _open(path) as fh:
        try:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None
                if not isinstance(record, dict):
                    raise DatasetError(f"{path}, line {line_no}: expected a JSON object")
                missing = [key for key in required if key not in record]
                if missing:
                    raise DatasetError(f"{path}, line {line_no}: missing field(s) {', '.join(missing)}")
                seen = True
                yield line_no, record
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise DatasetError(f"{path}: unreadable ({exc})") from None
    if not seen:
        raise DatasetError(f"{path} holds no records")


def _records(path: Path, required: tuple[str, ...]) -> Iterator[dict]:
    for _, record in _numbered_records(path, required):
        yield record


def _rating(value, path: Path, line_no: int) -> float:
    try:
        rating = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}, line {line_no}: 'overall' is not a number ({value!r})") from None
    if not np.isfinite(rating):
        raise DatasetError(f"{path}, line {line_no}: 'overall' is not finite")
    return rating


def _review_day(record: dict, path: Path, line_no: int) -> int:
    """Unix time (UTC midnight) of the review's day."""
    text = record.get("reviewTime")
    if text is not None:
        try:
            month, day, year = str(text).replace(",", "").split()
            when = datetime(int(year), int(month), int(day), tzinfo=UTC)
        except ValueError:
            raise DatasetError(f"{path}, line {line_no}: bad reviewTime {text!r} (expected 'MM D, YYYY')") from None
        return int(when.timestamp())
    unix = record.get("unixReviewTime")
    if unix is None:
        raise DatasetError(f"{path}, line {line_no}: neither reviewTime nor unixReviewTime is present")
    try:
        seconds = int(unix)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}, line {line_no}: bad unixReviewTime {unix!r}") from None
    return seconds - seconds % _DAY
