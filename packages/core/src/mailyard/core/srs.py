"""SRS, the Sender Rewriting Scheme (Shevek's, as libsrs2 and postsrsd write it), so a
forward keeps passing SPF at the next hop and its bounces still reach the original sender.

    forward  joe@paypal.com via ours.example ->  SRS0=HHHH=TT=paypal.com=joe@ours.example
    forward  SRS0=HHHH=TT=paypal.com=joe@fwd.example (re-forwarded) via ours.example
             ->  SRS1=GGGG=fwd.example==HHHH=TT=paypal.com=joe@ours.example

HHHH: HMAC-SHA1 of the lower-cased fields (timestamp, domain, local part; for SRS1 the
first forwarder's domain and the rest of its SRS0 address) under our secret, base64,
first 4 characters, compared without case (some MTAs lower-case local parts; libsrs2 does
the same). TT: the day number mod 1024 in base32: an address is honoured for MAX_AGE_DAYS
(postsrsd's 21) after it was made.

Secrets: newest first; addresses are made with the first and accepted under any, so a
new secret can be put in front and the old one dropped once its addresses have expired.

Pure functions: the secrets come from the caller (mailyard.core.srs_keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

PREFIXES = ("srs0", "srs1")
SEPARATORS = "=+-"  # libsrs2 accepts any of these after SRS0/SRS1; we write "="
HASH_LENGTH = 4
MAX_AGE_DAYS = 21
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_DAY = 86400
_STAMP_CYCLE = 1024


class SrsError(ValueError):
    """An address that looks like SRS but is not ours to reverse; the text says why."""


def is_srs(local: str) -> bool:
    """The prefix test every RCPT pays: "SRS0=" or "SRS1=" (any case, any separator)."""
    return len(local) > 5 and local[:4].lower() in PREFIXES and local[4] in SEPARATORS


def _author(local: str) -> tuple[str, str] | None:
    """(domain, local part) of the author an SRS local part carries (SRS0=HHHH=TT=DOMAIN=LOCAL,
    SRS1=HHHH=first=<SRS0 part>), whoever made it and without checking its hash; None when
    it is not one or is malformed. The domain may be empty (libsrs2 then means the SRS
    address's own)."""
    if not is_srs(local):
        return None
    body = local[5:]
    if local[:4].lower() == "srs1":
        parts = body.split("=", 2)  # HHHH, the first forwarder, its SRS0 part after a separator
        if len(parts) < 3 or not parts[2]:
            return None
        body = parts[2][1:]
    parts = body.split("=", 3)
    return (parts[2], parts[3]) if len(parts) == 4 and parts[3] else None


def original_local(local: str) -> str:
    """The author's local part an SRS local part ends with, `local` itself when it is not
    one or is malformed (see _author). For rules about who the author is (a vacation
    reply's owner-* or MAILER-DAEMON), which SRS hides behind its prefix."""
    author = _author(local)
    return local if author is None else author[1]


def original(address: str) -> str:
    """The author's address an SRS address carries (see _author), `address` itself when it
    is none. For rules that must see one sender where a forwarder's SRS address changes
    daily (its hash and day stamp): greylisting's triplet, vacation's once per sender."""
    local, _, domain = address.rpartition("@")
    author = _author(local)
    if author is None:
        return address
    return f"{author[1]}@{author[0] or domain}"


def _hash(secret: bytes, *fields: str) -> str:
    mac = hmac.new(secret, b"".join(f.lower().encode("utf-8", "surrogateescape")
                                    for f in fields), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()[:HASH_LENGTH]


def _check_hash(secrets: list[bytes], given: str, *fields: str) -> bool:
    given = given.lower()
    return any(hmac.compare_digest(_hash(s, *fields).lower(), given) for s in secrets)


def timestamp(now: float) -> str:
    day = int(now // _DAY) % _STAMP_CYCLE
    return _BASE32[day >> 5] + _BASE32[day & 31]


def _age_days(stamp: str, now: float) -> int | None:
    try:
        then = (_BASE32.index(stamp[0].upper()) << 5) | _BASE32.index(stamp[1].upper())
    except ValueError:
        return None
    return (int(now // _DAY) - then) % _STAMP_CYCLE


def forward(sender: str, domain: str, secrets: list[bytes], now: float | None = None) -> str:
    """The sender to forward with from `domain` (ours). `sender` must have a domain."""
    local, _, sender_domain = sender.rpartition("@")
    if not local or not sender_domain:
        raise SrsError(f"not an address: {sender!r}")
    if is_srs(local) and local[:4].lower() == "srs0":
        # re-forwarding: keep the first forwarder and its opaque part (SRS1)
        opaque = local[4:]
        return f"SRS1={_hash(secrets[0], sender_domain, opaque)}={sender_domain}={opaque}@{domain}"
    if is_srs(local):
        # SRS1 again: the same first forwarder and SRS0 part, our own hash
        rest = local[5:].split("=", 1)[1] if "=" in local[5:] else ""
        first, sep, opaque = rest.partition("=")
        if sep and first and opaque:
            return f"SRS1={_hash(secrets[0], first, opaque)}={first}={opaque}@{domain}"
    stamp = timestamp(time.time() if now is None else now)
    digest = _hash(secrets[0], stamp, sender_domain, local)
    return f"SRS0={digest}={stamp}={sender_domain}={local}@{domain}"


def reverse(address: str, secrets: list[bytes], now: float | None = None,
            max_age_days: int = MAX_AGE_DAYS) -> str:
    """Where a bounce to our SRS address goes. Raises SrsError (forged, expired, malformed)."""
    local = address.rpartition("@")[0]
    if not is_srs(local):
        raise SrsError("not an SRS address")
    kind, body = local[:4].lower(), local[5:]
    if kind == "srs1":
        # HHHH=first-forwarder=<its SRS0 opaque part, which starts with a separator>
        digest, sep1, rest = body.partition("=")
        first, sep2, opaque = rest.partition("=")
        if not (sep1 and sep2 and first and opaque and len(digest) == HASH_LENGTH):
            raise SrsError("malformed SRS1 address")
        if not _check_hash(secrets, digest, first, opaque):
            raise SrsError("invalid SRS hash")
        return f"SRS0{opaque}@{first}"
    parts = body.split("=", 3)
    if len(parts) != 4 or not all(parts) or len(parts[0]) != HASH_LENGTH \
            or len(parts[1]) != 2:
        raise SrsError("malformed SRS0 address")
    digest, stamp, domain, orig_local = parts
    if not _check_hash(secrets, digest, stamp, domain, orig_local):
        raise SrsError("invalid SRS hash")
    age = _age_days(stamp, time.time() if now is None else now)
    if age is None or age > max_age_days:
        raise SrsError("expired SRS address")
    return f"{orig_local}@{domain}"
