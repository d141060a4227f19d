"""Envelope addresses as the queue and the workers see them (already validated at the edge)."""

from __future__ import annotations


def split(address: str) -> tuple[str, str]:
    """("local", "domain") of an address; the domain is lower-cased. "" gives ("", "")."""
    local, sep, domain = address.rpartition("@")
    if not sep:
        return address, ""
    return local, domain.lower().rstrip(".")


def domain_of(address: str) -> str:
    return split(address)[1]


def to_ascii_domain(domain: str) -> str:
    """IDNA A-label of a domain, for DNS and routing tables."""
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return domain.lower()
