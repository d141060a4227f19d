"""Envelope addresses as the queue and the workers see them (already validated at the edge)."""

from __future__ import annotations

import idna


def split(address: str) -> tuple[str, str]:
    """("local", "domain") of an address; the domain is lower-cased. "" gives ("", "")."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address, ""
    return local, domain.lower().rstrip(".")


def domain_of(address: str) -> str:
    return split(address)[1]


def to_ascii_domain(domain: str) -> str:
    """IDNA A-label of a domain, for DNS, routing tables and directory keys: IDNA 2008 as
    UTS #46 processes it (non-transitional), as registries, browsers and other MTAs do.
    Python's "idna" codec is IDNA 2003, which maps ß, final ς, ZWJ and ZWNJ away: mail for
    joe@straße.de went to the MX of strasse.de, another domain. A name either refuses is
    returned lowered (the caller's checks refuse it, or DNS finds nothing)."""
    if domain.isascii():
        return domain.lower()  # what either IDNA gives an ASCII name; the usual case
    try:
        return idna.encode(domain, uts46=True, transitional=False).decode("ascii").lower()
    except (idna.IDNAError, UnicodeError):
        return domain.lower()
