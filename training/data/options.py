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
    parser.add_argument("--attributes", help="table: comma-separated item attribute columns")
    parser.add_argument("--attribute-sep", default="|", help="table: separator inside attribute cells")


def validation_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors())
    return str(exc)


def data_config_from_args(args: argparse.Namespace) -> DataConfig | None:
    """The data config the options describe, or None when no data option was given."""
    if args.data_config is None and args.data is None:
        return None
    kind, data_path = args.data, args.data_path
    if kind is not None and kind not in DATA_KINDS:
        if not Path(kind).is_dir():
            raise ConfigError(f"--data {kind!r} is neither a data kind ({', '.join(DATA_KINDS)}) nor a MovieLens 100K directory")
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
                raise ConfigError("--data amazon-2018 needs --data-path REVIEWS.json[.gz] and --meta-path META.json[.gz]")
            return AmazonData(reviews=data_path, meta=args.meta_path)
        if not (data_path and args.columns):
            raise ConfigError("--data table needs --data-path FILE and --columns user=..,item=..,timestamp=..")
        return TableData(
            path=data_path,
            attributes=tuple(a for a in (args.attributes or "").split(",") if a),
            attribute_separator=args.attribute_sep,
            **args.columns,
        )
    except (ValidationError, OSError) as exc:
        raise ConfigError(f"invalid data options: {validation_text(exc)}") from None
