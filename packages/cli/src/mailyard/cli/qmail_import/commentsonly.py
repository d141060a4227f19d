"""A .qmail of comment lines only: mail accepted and delivered nowhere.

qmail-local takes its default delivery only when a .qmail is missing or empty (0 bytes); a
file with lines, every one a comment, runs no delivery and qmail-local exits 0, so the
message is gone (the qmail way to drop an address's mail). vdelivermail 5.4 reads a user's
own .qmail alike (a comment line counts as a delivery); before 5.4 it skipped the comments
and delivered to the Maildir.
"""

from __future__ import annotations


def first_comment(lines: list[str]) -> int:
    """The number of the first comment line when every other line is blank, else 0."""
    first = 0
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            return 0
        first = first or number
    return first
