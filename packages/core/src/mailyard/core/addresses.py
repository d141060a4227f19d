"""Envelope addresses as the queue and the workers see them (already validated at the edge)."""

from __future__ import annotations

import unicodedata

import idna


def split(address: str) -> tuple[str, str]:
    """("local", "domain") of an address; the domain is lower-cased. "" gives ("", "")."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address, ""
    return local, domain.lower().rstrip(".")


def normalise_local(local: str) -> str:
    """The local part as addresses are matched: lower case, and Unicode NFC (RFC 6530
    section 10.1) when it is not ASCII. "jos\u00e9" and "jose\u0301"
    are one name on screen and on the keyboards that type them; without NFC they were two
    mailboxes, and mail written in the other form was refused as an unknown user. NFC after
    lower(), not before: lower() can decompose (U+0130), and NFC of the lowered text is
    stable under both again. ASCII, nearly every address, pays for lower() alone."""
    local = local.lower()
    return local if local.isascii() else unicodedata.normalize("NFC", local)


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
