"""dkimpy's relaxed canonicalisation (RFC 6376 3.4.2 and 3.4.4) without the regular-expression
passes that change nothing.

dkimpy runs re.sub over the whole body to turn every run of spaces and tabs into one space
and to drop them before line ends; in ordinary text every single space between two words
is such a "run", replaced by itself, and that was the largest share of a DKIM signature's
CPU (bench.sender_auth: 11 % of smtp-ingress's busy time checking mail from outside).
These do the same with a test for anything to change first, and with patterns that only
match what must change; the empty lines at the end of a body (simple and relaxed alike)
are counted in C. Importing this module installs them into dkimpy for signing, verifying
and ARC alike; test_dkim_canon compares them with dkimpy's own on hostile input.
"""

from __future__ import annotations

import re

from dkim import canonicalization

DKIMPY = {name: getattr(canonicalization, name)
          for name in ("strip_trailing_whitespace", "compress_whitespace", "unfold_header_value",
                       "strip_trailing_lines")}

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


def strip_trailing_lines(content: bytes) -> bytes:
    """The body up to its last line that is not empty, with one CRLF (RFC 6376 3.4.3), as
    dkimpy's, which takes the empty lines off one at a time in Python: a body ending in
    5 million of them held the event loop 0.6 s for each signature checked. Here they are
    counted in C: the run of CR and LF at the end alternates after its last doubled octet,
    and ends in CRLF, so from there it is CRLFs, after one LF perhaps."""
    if not content.endswith(b"\r\n"):
        return content + b"\r\n"
    tail = content[len(content.rstrip(b"\r\n")):]
    pairs = (len(tail) - max(tail.rfind(b"\r\r"), tail.rfind(b"\n\n")) - 1) // 2
    return content[:len(content) - 2 * (pairs - 1)]


canonicalization.strip_trailing_whitespace = strip_trailing_whitespace
canonicalization.compress_whitespace = compress_whitespace
canonicalization.unfold_header_value = unfold_header_value
canonicalization.strip_trailing_lines = strip_trailing_lines
