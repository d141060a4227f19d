"""Header fields as text, read from bytes a stranger wrote: never raises. For what reads a
few fields of a message (a vacation reply's Subject and References, who a list post is
From:), not for what must keep the octets (DKIM, the spool)."""

from __future__ import annotations

import re
from email.utils import getaddresses

from mailyard.core.directory import canonical

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_NAME = re.compile(r"[!-9;-~]+")
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def unfolded(data: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of every field in the header of `data`."""
    if data.startswith((b"\r\n", b"\n")):
        return []
    end = _HEADER_END.search(data)
    header = data[:end.start()] if end else data
    out: list[tuple[str, str]] = []
    for raw in header.split(b"\n"):
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if line[:1] in (" ", "\t"):
            if out:
                out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if colon and _NAME.fullmatch(name):
            out.append((name.lower(), value.strip()))
    return out


def addresses(values: list[str]) -> set[str]:
    """The addresses in these field values (To, Cc, From), canonical."""
    out: set[str] = set()
    try:
        pairs = getaddresses(values)
    except Exception:
        return out
    for _, addr in pairs:
        local, _, domain = addr.rpartition("@")
        if local and domain and not CONTROLS.search(addr):
            try:
                out.add(canonical(addr))
            except Exception:  # noqa: S112 (a domain IDNA cannot encode: not ours anyway)
                continue
    return out
