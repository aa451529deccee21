"""MovieLens 100K in the GroupLens layout (``u.data``, ``u.item``, ``u.user``).

Item attributes are the genres (multi-valued, from the 19 flag columns of ``u.item``) and the
release year (one token, absent when the release date is blank). ``u.user`` is optional; when
present its age band, gender and occupation become user attributes, which the embedding model does
not use (users are inductive, as in the paper) but consumer tasks may.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.data.dataset import AttributeGroup, InteractionDataset, build_dataset
from training.data.ml100k_location import ML100K_ENV_VAR, ML100K_URL
from training.errors import DatasetError

GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_ITEM_FIXED_COLUMNS = ("item", "title", "release_date", "video_release_date", "url")


def load_movielens_100k(path: str | Path) -> InteractionDataset:
    directory = Path(path)
    if not directory.is_dir():
        raise DatasetError(
            f"MovieLens 100K: {directory} does not exist -- pass --data-path DIR (the unpacked ml-100k folder "
            f"with u.data and u.item) or set ${ML100K_ENV_VAR}; the data is at {ML100K_URL}"
        )
    ratings = _read_ratings(directory / "u.data")
    dataset = build_dataset(
        "movielens-100k",
        users=ratings["user"].to_numpy(),
        items=ratings["item"].to_numpy(),
        ratings=ratings["rating"].to_numpy(),
        timestamps=ratings["timestamp"].to_numpy(),
        source=str(directory / "u.data"),
    )
    dataset = dataset.with_item_attributes(_item_attributes(directory / "u.item", dataset.item_ids))
    user_file = directory / "u.user"
    if user_file.exists():
        dataset = dataset.with_user_attributes(_user_attributes(user_file, dataset.user_ids))
    return dataset


def _read_table(path: Path, sep: str, names, dtype=None) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path} is missing (expected the GroupLens MovieLens 100K layout)")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path} is empty")
    try:
        # u.item holds latin-1 titles; the ids and flags we read are ASCII either way.
        return pd.read_csv(path, sep=sep, names=list(names), header=None, encoding="latin-1", dtype=dtype)
    except (pd.errors.ParserError, ValueError) as exc:
        raise DatasetError(f"{path} is not a valid MovieLens file: {exc}") from None


def _read_ratings(path: Path) -> pd.DataFrame:
    table = _read_table(path, "\t", ["user", "item", "rating", "timestamp"])
    if table[["user", "item", "rating", "timestamp"]].isna().any().any():
        bad = int(table.isna().any(axis=1).to_numpy().argmax())
        raise DatasetError(f"{path}: line {bad + 1} does not have 4 tab-separated fields")
    for column in ("user", "item", "timestamp"):
        if table[column].dtype.kind not in "iu":
            raise DatasetError(f"{path}: column {column!r} must hold integers (found dtype {table[column].dtype})")
    if table["rating"].dtype.kind not in "iuf":
        raise DatasetError(f"{path}: column 'rating' must be numeric")
    return table


def _item_attributes(path: Path, item_ids: np.ndarray) -> dict[str, AttributeGroup]:
    table = _read_table(path, "|", [*_ITEM_FIXED_COLUMNS, *GENRES], dtype={"release_date": str})
    if table["item"].dtype.kind not in "iu":
        raise DatasetError(f"{path}: first column must be the integer item id")
    flags = table[list(GENRES)]
    if flags.isna().any().any() or not flags.isin([0, 1]).all().all():
        raise DatasetError(f"{path}: expected 19 genre flags (0/1) per line after the 5 descriptive fields")
    genres_of = {
        int(item): [g for g, flag in zip(GENRES, row, strict=True) if flag == 1]
        for item, row in zip(table["item"], flags.to_numpy(), strict=True)
    }
    dates = pd.to_datetime(table["release_date"], format="%d-%b-%Y", errors="coerce")
    year_of = {
        int(item): ([str(d.year)] if not pd.isna(d) else []) for item, d in zip(table["item"], dates, strict=True)
    }
    missing = [int(i) for i in item_ids if int(i) not in genres_of]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} rated items have no line (e.g. item {missing[0]})")
    return {
        "genre": AttributeGroup.from_tokens("genre", [genres_of[int(i)] for i in item_ids], vocabulary=GENRES),
        "year": AttributeGroup.from_tokens("year", [year_of[int(i)] for i in item_ids]),
    }


def _user_attributes(path: Path, user_ids: np.ndarray) -> dict[str, AttributeGroup]:
    table = _read_table(path, "|", ["user", "age", "gender", "occupation", "zip"], dtype={"zip": str})
    if table["user"].dtype.kind not in "iu" or table["age"].dtype.kind not in "iu":
        raise DatasetError(f"{path}: user id and age must be integers")
    rows = {int(u): r for r, u in enumerate(table["user"])}
    missing = [int(u) for u in user_ids if int(u) not in rows]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} users with ratings have no line (e.g. user {missing[0]})")
    order = [rows[int(u)] for u in user_ids]
    age_band = [[f"{(int(a) // 10) * 10}s"] for a in table["age"].to_numpy()[order]]
    return {
        "age": AttributeGroup.from_tokens("age", age_band),
        "gender": AttributeGroup.from_tokens("gender", [[str(g)] for g in table["gender"].to_numpy()[order]]),
        "occupation": AttributeGroup.from_tokens(
            "occupation", [[str(o)] for o in table["occupation"].to_numpy()[order]]
        ),
    }
