"""Argument helpers every `feast-bc` command (and the training CLI) shares: ids, numbers, pairs, reports."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from feast_bc.errors import InvalidInputError


def parse_ids(raw: list[str] | None, ids_file: str | None, dtype: str):
    values: list[str] = []
    # Ids never start or end with whitespace (the catalog refuses such ids), so stripping loses nothing.
    for item in raw or []:
        values.extend(v.strip() for v in item.split(",") if v.strip())
    if ids_file:
        try:
            text = Path(ids_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"--ids-file {ids_file}: cannot read it ({exc}); give a UTF-8 file, one id per line"
            ) from None
        values.extend(line.strip() for line in text.splitlines() if line.strip())
    if raw is None and ids_file is None:
        return None
    if not values:
        raise InvalidInputError("--ids/--ids-file given but no ids in it")
    if dtype == "int64":
        try:
            return [int(v) for v in values]
        except ValueError as exc:
            raise InvalidInputError(f"ids must be integers for this family: {exc}") from None
    return values


def emit(report, render, as_json: bool) -> None:
    """A report (a pydantic model) as JSON, or as its text rendering."""
    print(json.dumps(report.model_dump(mode="json"), indent=2) if as_json else render(report))


def existing_repo(repo: str) -> None:
    if not Path(repo).is_dir():
        raise InvalidInputError(f"{repo} is not a directory: pass the feature repo (`feast-bc init` creates one)")


def whole_number(minimum: int):
    """An argparse type: a whole number >= ``minimum`` (a bad value is argparse's one-line usage
    error). Shared by feast-bc's and the training CLI's options."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {minimum} or more, got {value}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def parse_pairs(items: list[str] | None, option: str, key=str) -> dict:
    """``NAME=NUMBER`` command-line values (limits, metrics) as a dict; a malformed or non-finite
    one is a one-line error naming ``option``. Shared by `feast-bc gate` and `fit-transform --metric`."""
    out = {}
    for item in items or []:
        name, sep, value = item.rpartition("=")
        try:
            number = float(value)
            out[key(name.strip())] = number
        except ValueError:
            sep = ""
        if not sep or not name.strip() or not math.isfinite(number):
            raise InvalidInputError(f"{option} expects NAME=NUMBER (finite), got {item!r}")
    return out
