"""`mailyard` subcommands of this area (filled in by the area's owner)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    _ = (sub, argparse)
