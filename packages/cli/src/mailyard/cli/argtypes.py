"""argparse types for values bound for a protobuf field: one the field cannot hold (a
negative quota, a --limit past uint32, a time past the year 9999) is a usage error naming
the option, not a ValueError traceback from the message or Timestamp it was put in."""

from __future__ import annotations

import argparse
from collections.abc import Callable

UINT32 = 2**32 - 1
UINT64 = 2**64 - 1
# google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z, in Unix seconds
FIRST_SECOND, LAST_SECOND = -62_135_596_800, 253_402_300_799


def integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def timestamp(seconds: float) -> float:
    """`seconds` (a Unix time) if a Timestamp can hold it."""
    if not FIRST_SECOND <= seconds <= LAST_SECOND:
        raise argparse.ArgumentTypeError("not a time between the years 1 and 9999 (UTC)")
    return seconds
