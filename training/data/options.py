"""The data options of ``train``, ``reproduce`` and ``demo``: one parser block, one conversion.

Every command that loads interactions accepts the same spelling (``--data KIND`` or a MovieLens
directory, ``--data-config`` JSON, ``--data-path``/``--meta-path``/``--columns`` ...), so a data
source that works for ``train`` works unchanged for ``reproduce`` and ``demo``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from training.data.config import AmazonData, DataConfig, MovieLensData, SyntheticData, TableData
from training.errors import ConfigError

DATA_KINDS = ("synthetic", "movielens-100k", "amazon-2018", "table")


def parse_columns(text: str) -> dict[str, str]:
    mapping = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in ("user", "item", "timestamp", "rating"):
            raise argparse.ArgumentTypeError(
                f"--columns takes user=COL,item=COL,timestamp=COL[,rating=COL]; got {part!r}"
            )
        mapping[key.strip()] = value.strip()
    return mapping


def add_data_arguments(parser: argparse.ArgumentParser, *, default_help: str) -> None:
    parser.add_argument("--data", help=f"{', '.join(DATA_KINDS)}, or a MovieLens 100K directory ({default_help})")
    parser.add_argument("--data-config", help="JSON file with a data config (instead of the options below)")
    parser.add_argument("--data-path", help="MovieLens directory, Amazon reviews file, or the table file")
    parser.add_argument("--meta-path", help="Amazon meta_*.json[.gz]")
    parser.add_argument("--columns", type=parse_columns, help="table: user=COL,item=COL,timestamp=COL[,rating=COL]")
    parser.add_argument(
        "--attributes",
        help="table: comma-separated item attribute columns (of the table, or of --item-attributes when given)",
    )
    parser.add_argument("--attribute-sep", default="|", help="table: separator inside attribute cells")
    parser.add_argument(
        "--item-attributes",
        metavar="FILE",
        help="table: a parquet/CSV file of item attributes (one or more rows per item) joined by item id; "
        "the --attributes columns are taken from it",
    )
    parser.add_argument(
        "--item-attributes-key",
        metavar="COL",
        help="table: the item id column of --item-attributes (default: the --columns item column)",
    )
    parser.add_argument(
        "--missing-item-attributes",
        choices=("error", "empty"),
        help="table: items without a row in --item-attributes are refused (error, the default) "
        "or get no attributes (empty, with a warning)",
    )


def validation_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
    return str(exc)


def data_config_from_args(args: argparse.Namespace) -> DataConfig | None:
    """The data config the options describe, or None when no data option was given."""
    if args.item_attributes is not None and (args.data_config or args.data != "table"):
        raise ConfigError("--item-attributes applies to --data table (in a --data-config file: item_attributes_path)")
    if args.data_config is None and args.data is None:
        return None
    kind, data_path = args.data, args.data_path
    if kind is not None and kind not in DATA_KINDS:
        if not Path(kind).is_dir():
            raise ConfigError(
                f"--data {kind!r} is neither a data kind ({', '.join(DATA_KINDS)}) nor a MovieLens 100K directory"
            )
        kind, data_path = "movielens-100k", kind
    try:
        if args.data_config:
            return TypeAdapter(DataConfig).validate_json(Path(args.data_config).read_text())
        if kind == "synthetic":
            return SyntheticData()
        if kind == "movielens-100k":
            return MovieLensData(path=data_path) if data_path else MovieLensData()
        if kind == "amazon-2018":
            if not (data_path and args.meta_path):
                raise ConfigError(
                    "--data amazon-2018 needs --data-path REVIEWS.json[.gz] and --meta-path META.json[.gz]"
                )
            return AmazonData(reviews=data_path, meta=args.meta_path)
        if not (data_path and args.columns):
            raise ConfigError("--data table needs --data-path FILE and --columns user=..,item=..,timestamp=..")
        attributes = tuple(a for a in (args.attributes or "").split(",") if a)
        if args.item_attributes is None and (args.item_attributes_key or args.missing_item_attributes):
            raise ConfigError("--item-attributes-key and --missing-item-attributes need --item-attributes FILE")
        if args.item_attributes is not None and not attributes:
            raise ConfigError("--item-attributes FILE needs --attributes COL,...: the columns to take from it")
        item_file = {}
        if args.item_attributes is not None:
            item_file = dict(
                item_attributes_path=args.item_attributes,
                item_attributes_item=args.item_attributes_key,
                missing_item_attributes=args.missing_item_attributes or "error",
            )
        return TableData(
            path=data_path,
            attributes=attributes,
            attribute_separator=args.attribute_sep,
            **item_file,
            **args.columns,
        )
    except (ValidationError, OSError) as exc:
        raise ConfigError(f"invalid data options: {validation_text(exc)}") from None
