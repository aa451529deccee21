"""Interaction data: the dataset type, every loader, and the paper's version split rules."""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.data import (
    AmazonData,
    AttributeGroup,
    MovieLensData,
    SyntheticData,
    TableData,
    build_dataset,
    load_dataset,
    split_version,
    version_splits,
)
from training.data.amazon import load_amazon_2018
from training.data.movielens import load_movielens_100k
from training.data.table import load_table
from training.errors import DatasetError

ML100K = Path(os.environ.get("ML100K_DIR", "/work/shared/data/ml-100k"))


# ----------------------------------------------------------------------------- dataset type
def test_build_dataset_sorts_stably_and_indexes_by_first_appearance():
    # Two interactions share t=5: their file order (u9 before u3) must survive the sort.
    ds = build_dataset(
        "t",
        users=np.array([7, 9, 3, 7]),
        items=np.array(["b", "a", "c", "a"]),
        ratings=[1, 2, 3, 4],
        timestamps=np.array([10, 5, 5, 1]),
        source="inline",
    )
    assert ds.timestamp.tolist() == [1, 5, 5, 10]
    assert ds.user_ids.tolist() == [7, 9, 3] and ds.user_ids.dtype == np.int64
    # order after sort: (7,a,t1) (9,a,t5) (3,c,t5) (7,b,t10)
    assert ds.user.tolist() == [0, 1, 2, 0]
    assert ds.item_ids.tolist() == ["a", "c", "b"]
    assert ds.item.tolist() == [0, 0, 1, 2]
    assert ds.rating.tolist() == [4, 2, 3, 1]
    assert ds.user_id_dtype == "int64" and ds.item_id_dtype == "string"


def test_build_dataset_refuses_missing_ids_and_fractional_timestamps():
    with pytest.raises(DatasetError, match="missing"):
        build_dataset(
            "t", users=np.array(["a", None], dtype=object), items=[1, 2], ratings=[1, 1], timestamps=[1, 2], source="x"
        )
    with pytest.raises(DatasetError, match="timestamps must be integers"):
        build_dataset("t", users=[1, 2], items=[1, 2], ratings=[1, 1], timestamps=[1.5, 2.0], source="x")
    with pytest.raises(DatasetError, match="no interactions"):
        build_dataset("t", users=[], items=[], ratings=[], timestamps=np.array([], dtype=np.int64), source="x")


def test_attribute_group_vocabulary_rule_and_csr_layout():
    rows = [["x", "y"], [], ["y", "z"], ["y"], ["w", "x"]]
    g = AttributeGroup.from_tokens("g", rows, min_count=2, max_size=10)
    assert g.vocabulary == ("y", "x")  # counts y=3, x=2 (z, w dropped: count 1)
    assert g.offsets.tolist() == [0, 2, 2, 3, 4, 5]
    assert [g.tokens(r) for r in range(5)] == [["x", "y"], [], ["y"], ["y"], ["x"]]
    values, offsets = g.prefix(3)
    assert values.tolist() == [1, 0, 0] and offsets.tolist() == [0, 2, 2]
    capped = AttributeGroup.from_tokens("g", rows, min_count=1, max_size=1)
    assert capped.vocabulary == ("y",)


# ----------------------------------------------------------------------------- split rules
def _timeline():
    """17 interactions, fractions k/16 (exact in binary). Train up to 0.5 (idx 0..8), next 0.875."""
    rows = [
        ("A", "i1"),
        ("B", "i2"),
        ("A", "i3"),
        ("B", "i1"),
        ("A", "i2"),
        ("B", "i3"),
        ("A", "i1"),
        ("B", "i2"),
        ("A", "i3"),
        ("C", "i1"),  # 9  new user C, 1st of 3 in window -> train
        ("A", "i5"),  # 10 existing user, new item -> val
        ("D", "i2"),  # 11 new user D, only one in window -> train
        ("C", "i3"),  # 12 C, 2nd of 3 -> train
        ("B", "i2"),  # 13 existing user (a repeated pair) -> val
        ("C", "i5"),  # 14 C, last of 3 -> val
        ("E", "i6"),  # 15 after t_next
        ("A", "i1"),  # 16 after t_next
    ]
    users, items = zip(*rows, strict=True)
    return build_dataset(
        "timeline",
        users=np.array(users),
        items=np.array(items),
        ratings=np.ones(17),
        timestamps=np.arange(17) * 10,
        source="hand-built",
    )


def test_split_rules_for_existing_and_new_users():
    ds = _timeline()
    split = split_version(ds, 0.5, 0.875, version=3)
    assert split.train_index.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]
    assert split.val_index.tolist() == [10, 13, 14]
    assert (split.num_users_existing, split.num_items_existing) == (2, 3)  # A, B / i1, i2, i3
    assert (split.num_users, split.num_items) == (4, 4)  # + C, D / + i5 (E and i6 come later)
    assert ds.user_ids[split.val_user].tolist() == ["A", "B", "C"]
    assert ds.item_ids[split.val_item].tolist() == ["i5", "i2", "i5"]
    assert ds.user_ids[split.train_user[-3:]].tolist() == ["C", "D", "C"]


def test_paper_slices_give_five_versions_and_refuse_empty_windows():
    ds = _timeline()
    with pytest.raises(DatasetError, match="no validation interactions"):
        split_version(ds, 0.9, 0.92)
    with pytest.raises(DatasetError, match="time_train < time_next"):
        split_version(ds, 0.6, 0.5)
    splits = version_splits(load_dataset(SyntheticData(num_users=120, num_items=80)))
    assert [s.version for s in splits] == [0, 1, 2, 3, 4]
    assert [(s.time_train, s.time_next) for s in splits] == [(0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0)]
    # node sets only grow, and every validation interaction lies in the window
    assert all(a.num_users <= b.num_users and a.num_items <= b.num_items for a, b in itertools.pairwise(splits))
    fraction = np.linspace(0, 1, len(load_dataset(SyntheticData(num_users=120, num_items=80)).user))
    for s in splits:
        assert np.all(fraction[s.val_index] > s.time_train) and np.all(fraction[s.val_index] <= s.time_next)


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_with_planted_clusters():
    a = load_dataset(SyntheticData(num_users=100, num_items=60, seed=3))
    b = load_dataset(SyntheticData(num_users=100, num_items=60, seed=3))
    c = load_dataset(SyntheticData(num_users=100, num_items=60, seed=4))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.user_id_dtype == "int64" and set(a.item_attributes) == {"genre", "tag"}
    # planted structure: users mostly stay within one genre
    genre = a.item_attributes["genre"]
    item_genre = np.array(
        [genre.values[genre.offsets[i]] if genre.offsets[i + 1] > genre.offsets[i] else -1 for i in range(a.num_items)]
    )
    share = [np.bincount(item_genre[a.item[a.user == u]] + 1).max() / np.sum(a.user == u) for u in range(a.num_users)]
    assert np.mean(share) > 0.6
    s = load_dataset(SyntheticData(num_users=50, num_items=40, string_ids=True))
    assert s.user_id_dtype == "string" and s.user_ids[0].startswith("user-")


# ----------------------------------------------------------------------------- MovieLens
@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason=f"MovieLens 100K not found at {ML100K} (set ML100K_DIR)")
def test_movielens_100k_real_files():
    ds = load_dataset(MovieLensData(path=ML100K))
    assert (ds.num_users, ds.num_items, ds.num_interactions) == (943, 1682, 100_000)
    assert ds.user_id_dtype == "int64" and ds.item_id_dtype == "int64"
    assert np.all(np.diff(ds.timestamp) >= 0)
    assert set(ds.user_ids.tolist()) == set(range(1, 944))
    genre = ds.item_attributes["genre"]
    assert len(genre.vocabulary) == 19
    toy_story = int(np.flatnonzero(ds.item_ids == 1)[0])
    assert genre.tokens(toy_story) == ["Animation", "Children's", "Comedy"]
    assert ds.item_attributes["year"].tokens(toy_story) == ["1995"]
    assert set(ds.user_attributes) == {"age", "gender", "occupation"}
    first = version_splits(ds)[0]
    assert first.num_train + first.num_val <= 60_000 and first.num_users < 943


def _write_movielens(directory: Path, data_lines: list[str]) -> Path:
    directory.mkdir()
    (directory / "u.data").write_text("".join(data_lines))
    flags = "|".join(["0"] * 5 + ["1"] + ["0"] * 13)
    (directory / "u.item").write_text(
        f"1|A (1995)|01-Jan-1995||http://x|{flags}\n2|B (1996)|||http://y|{flags}\n", encoding="latin-1"
    )
    return directory


def test_movielens_fixture_and_its_errors(tmp_path):
    ok = _write_movielens(tmp_path / "ok", ["1\t1\t5\t100\n", "2\t2\t3\t50\n", "1\t2\t4\t200\n"])
    ds = load_movielens_100k(ok)
    assert ds.user_ids.tolist() == [2, 1] and ds.item_ids.tolist() == [2, 1]
    assert ds.item_attributes["year"].tokens(1) == ["1995"] and ds.item_attributes["year"].tokens(0) == []
    assert ds.item_attributes["genre"].tokens(0) == ["Comedy"]
    assert ds.user_attributes == {}  # no u.user in the fixture

    with pytest.raises(DatasetError, match=r"MovieLens 100K: .*absent does not exist -- pass --data-path .*ML100K_DIR"):
        load_movielens_100k(tmp_path / "absent")
    no_data = _write_movielens(tmp_path / "nodata", [])
    (no_data / "u.data").unlink()
    with pytest.raises(DatasetError, match=r"nodata/u\.data is missing"):
        load_movielens_100k(no_data)
    empty = _write_movielens(tmp_path / "empty", [])
    with pytest.raises(DatasetError, match=r"u\.data is empty"):
        load_movielens_100k(empty)
    short = _write_movielens(tmp_path / "short", ["1\t1\t5\n"])
    with pytest.raises(DatasetError, match=r"u\.data: line 1 does not have 4"):
        load_movielens_100k(short)
    bad_time = _write_movielens(tmp_path / "badtime", ["1\t1\t5\tyesterday\n"])
    with pytest.raises(DatasetError, match=r"column 'timestamp' must hold integers"):
        load_movielens_100k(bad_time)
    unknown_item = _write_movielens(tmp_path / "unknown", ["1\t3\t5\t1\n"])
    with pytest.raises(DatasetError, match=r"u\.item: 1 rated items have no line"):
        load_movielens_100k(unknown_item)


# ----------------------------------------------------------------------------- Amazon
def _write_jsonl(path: Path, records: list, gz: bool = False) -> Path:
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _amazon_fixture(tmp_path: Path):
    meta = []
    for i in range(8):
        meta.append(
            {
                "asin": f"00{i:02d}",  # digit strings with leading zeros: must stay strings
                "brand": "Acme" if i < 6 else ("Rare" if i == 6 else ""),
                "category": ["Music", "Guitars" if i % 2 else "Drums", '<span class="a">x</span>'],
                "title": f"item {i}",
            }
        )
    meta.append({"asin": "0000", "brand": "Acme", "category": ["Music", "Guitars", "Drums"]})  # duplicate: last wins
    reviews = []
    for n in range(24):
        asin = f"00{n % 8:02d}"
        day = 1 + n // 3
        review = {"reviewerID": f"U{n % 5}", "asin": asin, "overall": float(1 + n % 5)}
        if n % 4 == 0:
            review["unixReviewTime"] = 1_500_000_000 + day * 86_400 + 3_600  # 01:00 UTC that day
        else:
            review["reviewTime"] = f"07 {day}, 2017"
        reviews.append(review)
    reviews.append({"reviewerID": "U9", "asin": "NOMETA", "overall": 5.0, "reviewTime": "07 1, 2017"})
    return _write_jsonl(tmp_path / "Musical_Instruments_5.json.gz", reviews, gz=True), _write_jsonl(
        tmp_path / "meta_Musical_Instruments.json", meta
    )


def test_amazon_2018_fixture(tmp_path):
    reviews, meta = _amazon_fixture(tmp_path)
    ds = load_dataset(AmazonData(reviews=reviews, meta=meta))
    assert ds.name == "amazon-Musical_Instruments"
    assert ds.num_interactions == 24  # the review without metadata is dropped
    assert "U9" not in ds.user_ids.tolist()
    assert ds.item_id_dtype == "string" and "0003" in ds.item_ids.tolist()
    assert ds.rating.min() == 1 and ds.rating.max() == 5
    assert np.all(ds.timestamp % 86_400 == 0) and np.all(np.diff(ds.timestamp) >= 0)
    brand = ds.item_attributes["brand"]
    assert brand.vocabulary == ("Acme",)  # 'Rare' is on 1 item, '' is not a brand
    category = ds.item_attributes["category"]
    # Music on 8 items, Guitars on 5 (1, 3, 5, 7 and the re-described 0), Drums on 4: below the 5 cut-off
    assert category.vocabulary == ("Music", "Guitars")
    assert not any("</span>" in c for c in category.vocabulary)
    first = int(np.flatnonzero(ds.item_ids == "0000")[0])
    assert category.tokens(first) == ["Music", "Guitars"]  # from the later duplicate meta record


def test_amazon_errors_name_file_and_line(tmp_path):
    reviews, meta = _amazon_fixture(tmp_path)
    bad_json = _write_jsonl(
        tmp_path / "bad.json",
        [{"reviewerID": "U1", "asin": "0001", "overall": 5.0, "reviewTime": "07 1, 2017"}, "{not json"],
    )
    with pytest.raises(DatasetError, match=r"bad\.json, line 2: not valid JSON"):
        load_amazon_2018(bad_json, meta)
    no_rating = _write_jsonl(
        tmp_path / "norating.json", [{"reviewerID": "U1", "asin": "0001", "reviewTime": "07 1, 2017"}]
    )
    with pytest.raises(DatasetError, match=r"norating\.json, line 1: missing field\(s\) overall"):
        load_amazon_2018(no_rating, meta)
    bad_time = _write_jsonl(
        tmp_path / "badtime.json", [{"reviewerID": "U1", "asin": "0001", "overall": 1, "reviewTime": "July"}]
    )
    with pytest.raises(DatasetError, match=r"badtime\.json, line 1: bad reviewTime 'July'"):
        load_amazon_2018(bad_time, meta)
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(DatasetError, match=r"empty\.json is empty"):
        load_amazon_2018(tmp_path / "empty.json", meta)
    with pytest.raises(DatasetError, match="does not exist"):
        load_amazon_2018(tmp_path / "absent.json", meta)


# ----------------------------------------------------------------------------- generic table
def test_table_csv_and_parquet_with_column_mapping(tmp_path):
    frame = pd.DataFrame(
        {
            "uid": ["0042", "7", "0042", "x9"],
            "iid": [10, 11, 10, 12],
            "stars": [5, 3, 4, 2],
            "when": ["2021-01-03", "2021-01-01", "2021-01-05", "2021-01-02T12:00:00Z"],
            "genres": ["Action|Comedy", "Drama", "Comedy|Horror", None],
        }
    )
    csv = tmp_path / "t.csv"
    frame.to_csv(csv, index=False)
    ds = load_table(csv, user="uid", item="iid", timestamp="when", rating="stars", attributes=["genres"])
    assert ds.user_ids.tolist() == ["7", "x9", "0042"]  # leading zeros keep the ids strings
    assert ds.item_ids.tolist() == [11, 12, 10] and ds.item_id_dtype == "int64"
    assert ds.timestamp[0] == pd.Timestamp("2021-01-01", tz="UTC").timestamp()
    genres = ds.item_attributes["genres"]
    assert genres.tokens(2) == ["Action", "Comedy", "Horror"]  # union over the item's rows
    assert genres.tokens(1) == []

    parquet = tmp_path / "t.parquet"
    frame.assign(
        uid=[1, 2, 1, 3],
        when=pd.to_datetime(frame["when"], utc=True, format="mixed"),
        genres=[["a", "b"], ["c"], [], None],
    ).to_parquet(parquet)
    ds2 = load_dataset(TableData(path=parquet, user="uid", item="iid", timestamp="when", attributes=("genres",)))
    assert ds2.user_id_dtype == "int64" and ds2.rating.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert ds2.item_attributes["genres"].tokens(2) == ["a", "b"]


def test_table_errors_name_file_and_column(tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"u": [1, 2], "i": [1, 2], "t": [1, 2]}).to_csv(csv, index=False)
    with pytest.raises(DatasetError, match=r"t\.csv: missing column\(s\) 'ts'.*'u', 'i', 't'"):
        load_table(csv, user="u", item="i", timestamp="ts")
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"u": [1, 2], "i": [1, 2], "t": ["2021-01-01", "not a date"]}).to_csv(bad, index=False)
    with pytest.raises(DatasetError, match=r"bad\.csv: column 't' holds values that are not timestamps"):
        load_table(bad, user="u", item="i", timestamp="t")
    frac = tmp_path / "frac.csv"
    pd.DataFrame({"u": [1, 2], "i": [1, 2], "t": [1.5, 2.0]}).to_csv(frac, index=False)
    with pytest.raises(DatasetError, match=r"frac\.csv: column 't' holds fractional"):
        load_table(frac, user="u", item="i", timestamp="t")
    header_only = tmp_path / "header.csv"
    header_only.write_text("u,i,t\n")
    with pytest.raises(DatasetError, match=r"header\.csv: the table has no rows"):
        load_table(header_only, user="u", item="i", timestamp="t")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match=r"empty\.csv is empty"):
        load_table(empty, user="u", item="i", timestamp="t")
    rating = tmp_path / "rating.csv"
    pd.DataFrame({"u": [1, 2], "i": [1, 2], "t": [1, 2], "r": ["5", "five"]}).to_csv(rating, index=False)
    with pytest.raises(DatasetError, match=r"rating\.csv: column 'r' has a non-numeric value at row 1"):
        load_table(rating, user="u", item="i", timestamp="t", rating="r")


def _data_args(*argv: str):
    import argparse

    from training.data.options import add_data_arguments

    parser = argparse.ArgumentParser()
    add_data_arguments(parser, default_help="test")
    return parser.parse_args(list(argv))


def test_data_options_mean_the_same_in_every_command(tmp_path):
    """train, reproduce and demo share one conversion from options to a data config."""
    from training.data.options import data_config_from_args
    from training.errors import ConfigError

    assert data_config_from_args(_data_args()) is None
    assert data_config_from_args(_data_args("--data", "synthetic")) == SyntheticData()
    movielens_dir = tmp_path / "ml"
    movielens_dir.mkdir()
    assert data_config_from_args(_data_args("--data", str(movielens_dir))) == MovieLensData(path=movielens_dir)
    assert (
        data_config_from_args(_data_args("--data", "movielens-100k", "--data-path", str(movielens_dir))).path
        == movielens_dir
    )
    table = data_config_from_args(
        _data_args(
            "--data",
            "table",
            "--data-path",
            "x.csv",
            "--columns",
            "user=u,item=i,timestamp=t",
            "--attributes",
            "genre,year",
        )
    )
    assert table == TableData(path=Path("x.csv"), user="u", item="i", timestamp="t", attributes=("genre", "year"))
    config_file = tmp_path / "data.json"
    config_file.write_text(SyntheticData(num_users=50, seed=3).model_dump_json())
    assert data_config_from_args(_data_args("--data-config", str(config_file))) == SyntheticData(num_users=50, seed=3)
    with pytest.raises(ConfigError, match="neither a data kind"):
        data_config_from_args(_data_args("--data", str(tmp_path / "missing")))
    with pytest.raises(ConfigError, match="--meta-path"):
        data_config_from_args(_data_args("--data", "amazon-2018", "--data-path", "r.json.gz"))
    with pytest.raises(ConfigError, match="--columns"):
        data_config_from_args(_data_args("--data", "table", "--data-path", "x.csv"))
    config_file.write_text('{"kind": "synthetic", "num_users": 1}')
    with pytest.raises(ConfigError, match="num_users"):
        data_config_from_args(_data_args("--data-config", str(config_file)))
