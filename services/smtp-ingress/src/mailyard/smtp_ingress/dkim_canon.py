"""dkimpy's relaxed canonicalisation (RFC 6376 3.4.2 and 3.4.4) without the regular-expression
passes that change nothing.

dkimpy runs re.sub over the whole body to turn every run of spaces and tabs into one space
and to drop them before line ends; in ordinary text every single space between two words
is such a "run", replaced by itself, and that was the largest share of a DKIM signature's
CPU (bench.sender_auth: 11 % of smtp-ingress's busy time checking mail from outside).
These do the same with a test for anything to change first, and with patterns that only
match what must change. Importing this module installs them into dkimpy for signing,
verifying and ARC alike; test_dkim_canon compares them with dkimpy's own on hostile input.
"""

from __future__ import annotations

import re

from dkim import canonicalization

DKIMPY = {name: getattr(canonicalization, name)
          for name in ("strip_trailing_whitespace", "compress_whitespace", "unfold_header_value")}

# a run of WSP before a CRLF, tried only where a run starts: tried at every blank, a long
# run that no CRLF ends was scanned again from each of its blanks (dkimpy's "[\t ]+\r\n":
# 40,000 spaces held the event loop 3 s, a 10 MB message could hold it for hours)
_TRAILING = re.compile(rb"(?<![\t ])[\t ]+\r\n")
# a run of WSP that is not already one space: it starts with a tab, or is two or more long
_RUNS = re.compile(rb"\t[\t ]*| [\t ]+")
_FOLDS = re.compile(rb"\r?\n")


def strip_trailing_whitespace(content: bytes) -> bytes:
    if b" \r\n" not in content and b"\t\r\n" not in content:
        return content
    return _TRAILING.sub(b"\r\n", content)


def compress_whitespace(content: bytes) -> bytes:
    if b"\t" not in content and b"  " not in content:
        return content
    return _RUNS.sub(b" ", content)


def unfold_header_value(content: bytes) -> bytes:
    if b"\n" not in content:
        return content
    return _FOLDS.sub(b"", content)


canonicalization.strip_trailing_whitespace = strip_trailing_whitespace
canonicalization.compress_whitespace = compress_whitespace
canonicalization.unfold_header_value = unfold_header_value
