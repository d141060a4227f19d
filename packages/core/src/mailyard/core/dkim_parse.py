"""dkimpy's reading of a message's header fields, in time linear in the message on hostile
input. dkimpy hands every message to these before any check, for verifying, ARC and
signing alike; importing this module installs them (test_dkim_parse compares them with
dkimpy's own).

- rfc822_parse: dkimpy added each continuation line to its field with bytes +=, copying
  the field so far at every line: a field folded over 1 MB of short lines held the event
  loop 4 s, over 10 MB for minutes (such header sections are refused now, by
  data_header_size, but dkimpy is not told so). Here a field's lines are joined once.
  A message whose first line is a continuation is a MessageFormatError (a permerror),
  where dkimpy's IndexError ended the SMTP session with 421 internal error.
- select_headers: for every name in a signature's h= dkimpy searched the header fields
  from the bottom, so h= with thousands of names absent from a message of thousands of
  fields cost their product. Here the fields are indexed by name once.
"""

from __future__ import annotations

import re

import dkim

DKIMPY = {"rfc822_parse": dkim.rfc822_parse, "select_headers": dkim.select_headers}

_BREAK = re.compile(rb"\r?\n")
_NAME = re.compile(rb"([\x21-\x7e]+?):")


def rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """([name, value with its CRLFs] of each header field, the body CRLF-joined)."""
    fields: list[list[bytes]] = []   # each: the name, then the value's lines
    lines = _BREAK.split(message)
    body = len(lines)
    for i, line in enumerate(lines):
        if not line:
            body = i + 1
            break
        if line[0] in (0x09, 0x20):
            if not fields:
                raise dkim.MessageFormatError("a continuation line before any header field")
            fields[-1].append(line + b"\r\n")
            continue
        m = _NAME.match(line)
        if m is not None:
            fields.append([m.group(1), line[m.end(0):] + b"\r\n"])
        elif not line.startswith(b"From "):
            raise dkim.MessageFormatError(
                f"Unexpected characters in RFC822 header: {line!r}")  # dkimpy's words
    return [[f[0], b"".join(f[1:])] for f in fields], b"\r\n".join(lines[body:])


def select_headers(headers: list[tuple[bytes, bytes]],
                   include_headers: list[bytes]) -> list[tuple[bytes, bytes]]:
    """The fields an h= list names, in its order: each name takes the lowest field of that
    name not yet taken (RFC 6376 5.4.2); a name with none left takes nothing."""
    where: dict[bytes, list[int]] = {}
    for i, (name, _) in enumerate(headers):
        where.setdefault(name.lower(), []).append(i)
    selected = []
    for name in include_headers:
        left = where.get(name)
        if left:
            selected.append(headers[left.pop()])
    return selected


dkim.rfc822_parse = rfc822_parse
dkim.select_headers = select_headers
