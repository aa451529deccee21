"""argparse value types shared by the ``python -m training`` subcommands (and the benchmarks)."""

from __future__ import annotations

import argparse

from feast_bc.cli import whole_number


def int_list(text: str) -> tuple[int, ...]:
    """``"256,320"`` -> ``(256, 320)``."""
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def float_list(text: str) -> tuple[float, ...]:
    """``"0,0.25"`` -> ``(0.0, 0.25)``."""
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def name_list(text: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``."""
    return [s.strip() for s in text.split(",") if s.strip()]


#: A whole number >= 1 (argparse turns a bad value into a one-line usage error).
positive_int = whole_number(1)
