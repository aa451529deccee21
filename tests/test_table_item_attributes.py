"""``--data table`` with a separate item attribute file joined by item id."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from training.data import TableData, load_dataset
from training.data.table import load_table
from training.errors import ConfigError, DatasetError

COLUMNS = dict(user="u", item="i", timestamp="t")


def _interactions(tmp_path, items=(10, 11, 10, 12, 11), name="inter.csv"):
    frame = pd.DataFrame({"u": [1, 2, 3, 1, 2][: len(items)], "i": list(items), "t": [5, 1, 3, 2, 4][: len(items)]})
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _tokens(ds, name):
    group = ds.item_attributes[name]
    return {raw: group.tokens(r) for r, raw in enumerate(ds.item_ids.tolist())}


def test_parquet_list_cells_give_the_same_dataset_as_inline_attributes(tmp_path):
    genres = {10: ["Action", "Comedy"], 11: ["Drama"], 12: []}
    brand = {10: ["acme"], 11: [], 12: ["zeta"]}
    inter = pd.DataFrame({"u": [1, 2, 3, 1, 2], "i": [10, 11, 10, 12, 11], "t": [5, 1, 3, 2, 4], "r": [4, 5, 3, 1, 2]})
    inline = inter.assign(genres=inter["i"].map(genres), brand=inter["i"].map(brand))
    inline.to_parquet(tmp_path / "inline.parquet")
    inter.to_csv(tmp_path / "inter.csv", index=False)
    items = pd.DataFrame(
        {
            "i": [12, 11, 10, 99],
            "genres": [[], ["Drama"], ["Action", "Comedy"], ["Noir"]],
            "brand": [["zeta"], None, ["acme"], ["x"]],
        }
    )
    items.to_parquet(tmp_path / "items.parquet")

    one = load_table(tmp_path / "inline.parquet", rating="r", attributes=["genres", "brand"], name="d", **COLUMNS)
    two = load_table(
        tmp_path / "inter.csv",
        rating="r",
        attributes=["genres", "brand"],
        name="d",
        item_attributes_path=tmp_path / "items.parquet",
        **COLUMNS,
    )
    assert two.item_ids.tolist() == [11, 12, 10] and two.item_id_dtype == "int64"
    assert _tokens(two, "genres") == {11: ["Drama"], 12: [], 10: ["Action", "Comedy"]}
    assert _tokens(two, "brand") == {11: [], 12: ["zeta"], 10: ["acme"]}
    assert two.item_attributes["genres"].vocabulary == ("Drama", "Action", "Comedy")  # "Noir" only on unused item 99
    for a, b in ((one.user, two.user), (one.item, two.item), (one.rating, two.rating), (one.timestamp, two.timestamp)):
        np.testing.assert_array_equal(a, b)
    assert one.fingerprint() == two.fingerprint()


def test_csv_attribute_file_with_separated_cells_and_duplicate_rows(tmp_path):
    inter = _interactions(tmp_path)
    items = tmp_path / "items.csv"
    items.write_text("item_id,genres\n10,Action|Comedy\n11,Drama\n12,\n10,Comedy|Horror\n")
    ds = load_table(inter, attributes=["genres"], item_attributes_path=items, item_attributes_item="item_id", **COLUMNS)
    assert _tokens(ds, "genres") == {11: ["Drama"], 12: [], 10: ["Action", "Comedy", "Horror"]}  # rows of 10 merged

    commas = tmp_path / "commas.csv"
    commas.write_text('item_id,genres\n10,"A, B"\n11,C\n12,A\n')
    ds2 = load_table(
        inter,
        attributes=["genres"],
        attribute_separator=",",
        item_attributes_path=commas,
        item_attributes_item="item_id",
        item_attributes_format="csv",
        **COLUMNS,
    )
    assert _tokens(ds2, "genres") == {11: ["C"], 12: ["A"], 10: ["A", "B"]}


def test_string_ids_with_leading_zeros_match_as_text(tmp_path):
    inter = tmp_path / "inter.csv"
    inter.write_text("u,i,t\n1,0042,1\n2,17,2\n3,x9,3\n")
    items = tmp_path / "items.csv"
    items.write_text("i,genres\n42,wrong\n0042,A|B\n17,C\nx9,D\n")
    ds = load_table(inter, attributes=["genres"], item_attributes_path=items, **COLUMNS)
    assert ds.item_ids.tolist() == ["0042", "17", "x9"]
    assert _tokens(ds, "genres") == {"0042": ["A", "B"], "17": ["C"], "x9": ["D"]}  # '42' is not '0042'

    # a subset of string ids that only looks numeric is compared as text
    digits = tmp_path / "digits.csv"
    digits.write_text("i,genres\n17,C\n")
    ds2 = load_table(
        inter, attributes=["genres"], item_attributes_path=digits, missing_item_attributes="empty", **COLUMNS
    )
    assert _tokens(ds2, "genres") == {"0042": [], "17": ["C"], "x9": []}


def test_integer_ids_match_integer_text_and_mismatched_kinds_are_refused(tmp_path):
    inter = _interactions(tmp_path)
    text_ids = tmp_path / "text_ids.parquet"
    pd.DataFrame({"i": ["10", "11", "12"], "genres": ["A", "B", "C"]}).to_parquet(text_ids)
    ds = load_table(inter, attributes=["genres"], item_attributes_path=text_ids, **COLUMNS)
    assert _tokens(ds, "genres") == {11: ["B"], 12: ["C"], 10: ["A"]}

    zeros = tmp_path / "zeros.csv"
    zeros.write_text("i,genres\n010,A\n11,B\n12,C\n")
    with pytest.raises(
        DatasetError,
        match=r"inter\.csv \(column 'i'\) holds integer ids but .*zeros\.csv \(column 'i'\) "
        r"holds string ids such as '010'",
    ):
        load_table(inter, attributes=["genres"], item_attributes_path=zeros, **COLUMNS)

    str_inter = tmp_path / "str_inter.csv"
    str_inter.write_text("u,i,t\n1,0042,1\n2,7,2\n")
    int_items = tmp_path / "int_items.parquet"
    pd.DataFrame({"i": [42, 7], "genres": ["A", "B"]}).to_parquet(int_items)
    with pytest.raises(
        DatasetError,
        match=r"str_inter\.csv \(column 'i'\) holds string ids such as '0042' but "
        r".*int_items\.parquet \(column 'i'\) holds integer ids",
    ):
        load_table(str_inter, attributes=["genres"], item_attributes_path=int_items, **COLUMNS)


def test_items_missing_from_the_attribute_file(tmp_path, caplog):
    inter = _interactions(tmp_path, items=(10, 11, 12, 13, 14))
    items = tmp_path / "items.csv"
    items.write_text("i,genres\n10,A\n12,B\n77,C\n")
    with pytest.raises(DatasetError) as err:
        load_table(inter, attributes=["genres"], item_attributes_path=items, **COLUMNS)
    message = str(err.value)
    assert "3 of 5 items of" in message and "inter.csv (column 'i') have no row in" in message
    assert "items.csv (column 'i'), e.g. 11, 13, 14" in message
    assert "1 id(s) that match no interaction, e.g. 77" in message and "--missing-item-attributes empty" in message

    with caplog.at_level(logging.INFO, logger="training.data.table_attributes"):
        ds = load_table(
            inter, attributes=["genres"], item_attributes_path=items, missing_item_attributes="empty", **COLUMNS
        )
    assert _tokens(ds, "genres") == {11: [], 14: [], 12: ["B"], 13: [], 10: ["A"]}
    assert ds.item_attributes["genres"].vocabulary == ("B", "A")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "3 of 5 items" in warnings[0].getMessage()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "1 item id(s) of column 'i' never occur in" in infos[0] and "e.g. 77" in infos[0]


def test_extra_attribute_ids_are_ignored(tmp_path, caplog):
    inter = _interactions(tmp_path)
    items = tmp_path / "items.csv"
    items.write_text("i,genres\n" + "".join(f"{k},g{k}\n" for k in range(10, 30)))
    with caplog.at_level(logging.INFO, logger="training.data.table_attributes"):
        ds = load_table(inter, attributes=["genres"], item_attributes_path=items, **COLUMNS)
    assert _tokens(ds, "genres") == {11: ["g11"], 12: ["g12"], 10: ["g10"]}
    assert ds.item_attributes["genres"].vocabulary == ("g11", "g12", "g10")
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "17 item id(s) of column 'i' never occur in " + str(inter) + " and are ignored, e.g. 13, 14, 15, 16, 17, ..."
    ]


def test_attribute_file_errors_name_file_and_column(tmp_path):
    inter = _interactions(tmp_path)
    run = lambda path, **kw: load_table(inter, attributes=["genres"], item_attributes_path=path, **COLUMNS, **kw)  # noqa: E731
    good = tmp_path / "good.csv"
    good.write_text("i,genres,tags\n10,A,x\n11,B,y\n12,C,z\n")
    with pytest.raises(
        DatasetError,
        match=r"good\.csv: the item attribute file has no column\(s\) 'item_id'; "
        r"it has 'i', 'genres', 'tags'",
    ):
        run(good, item_attributes_item="item_id")
    with pytest.raises(DatasetError, match=r"good\.csv: the item attribute file has no column\(s\) 'brand'"):
        load_table(inter, attributes=["genres", "brand"], item_attributes_path=good, **COLUMNS)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match=r"empty\.csv is empty"):
        run(empty)
    header = tmp_path / "header.csv"
    header.write_text("i,genres\n")
    with pytest.raises(DatasetError, match=r"header\.csv: the item attribute file has no rows"):
        run(header)
    with pytest.raises(DatasetError, match=r"absent\.csv does not exist"):
        run(tmp_path / "absent.csv")
    holes = tmp_path / "holes.csv"
    holes.write_text("i,genres\n10,A\n,B\n")
    with pytest.raises(DatasetError, match=r"holes\.csv: column 'i' has 1 missing ids"):
        run(holes)

    both = tmp_path / "both.csv"
    pd.DataFrame({"u": [1], "i": [10], "t": [1], "genres": ["A"]}).to_csv(both, index=False)
    with pytest.raises(DatasetError, match=r"attribute column\(s\) 'genres' are in both .*both\.csv and .*good\.csv"):
        load_table(both, attributes=["genres"], item_attributes_path=good, **COLUMNS)
    with pytest.raises(ConfigError, match="needs the attribute columns"):
        load_table(inter, item_attributes_path=good, **COLUMNS)
    with pytest.raises(DatasetError, match="missing_item_attributes must be one of error, empty; got 'skip'"):
        run(good, missing_item_attributes="skip")


def test_table_config_and_options_carry_the_attribute_file(tmp_path):
    import argparse

    from training.data.config import absolute
    from training.data.options import add_data_arguments, data_config_from_args

    parser = argparse.ArgumentParser()
    add_data_arguments(parser, default_help="test")
    inter = _interactions(tmp_path)
    items = tmp_path / "items.csv"
    items.write_text("iid,genres\n10,A\n11,B\n")
    argv = [
        "--data",
        "table",
        "--data-path",
        str(inter),
        "--columns",
        "user=u,item=i,timestamp=t",
        "--item-attributes",
        str(items),
        "--attributes",
        "genres",
        "--item-attributes-key",
        "iid",
    ]
    config = data_config_from_args(parser.parse_args(argv))
    assert config == TableData(
        path=inter, item_attributes_path=items, item_attributes_item="iid", attributes=("genres",), **COLUMNS
    )
    with pytest.raises(DatasetError, match=r"1 of 3 items .* e\.g\. 12"):
        load_dataset(config)
    config = data_config_from_args(parser.parse_args([*argv, "--missing-item-attributes", "empty"]))
    assert config.missing_item_attributes == "empty"
    assert _tokens(load_dataset(config), "genres") == {11: ["B"], 12: [], 10: ["A"]}
    assert TableData.model_validate_json(config.model_dump_json()) == config  # stored in the training state
    relative = TableData(path="inter.csv", item_attributes_path="items.csv", attributes=("genres",), **COLUMNS)
    assert absolute(relative).item_attributes_path.is_absolute()

    refusals = {
        "needs --attributes": argv[:8],
        "--item-attributes-key and --missing-item-attributes need --item-attributes": [
            *argv[:6],
            "--item-attributes-key",
            "x",
        ],
        "applies to --data table": ["--data", "synthetic", "--item-attributes", str(items)],
    }
    for message, args in refusals.items():
        with pytest.raises(ConfigError, match=message):
            data_config_from_args(parser.parse_args(args))
    with pytest.raises(ValueError, match="item_attributes_path needs attributes"):
        TableData(path=inter, item_attributes_path=items, **COLUMNS)
    with pytest.raises(ValueError, match="need item_attributes_path"):
        TableData(path=inter, item_attributes_item="iid", **COLUMNS)
