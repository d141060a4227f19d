"""Subscribing to a list by mail (ezmlm-manage's double opt-in): the commands a list's
command address carries, and the cookie that proves a confirmation came from the mailbox
asked.

Command addresses (the extension after the list's local part and a recipient delimiter;
inside it "-" separates, as with ezmlm whatever the delimiter):

    subscribe / unsubscribe                  for the envelope sender
    subscribe-user=host / unsubscribe-...    for user@host (ezmlm's form)
    sc.COOKIE-user=host / uc.COOKIE-...      the confirmation of a request for user@host

COOKIE is STAMP.MAC: STAMP the request's time (hex seconds), MAC an HMAC-SHA256 over
(list, action, address, STAMP) under a secret of KV bucket `listcookies` (made at first
use, as the SRS secrets are: mailyard.core.srs_keys), cut to MAC_HEX hex digits. Good for
COOKIE_DAYS (ezmlm's 10), compared in constant time. Everything is lower case: the
directory's canonical form of the recipient lower-cases its local part.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from mailyard.core import listaddresses

SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
CONFIRM_PREFIX = {SUBSCRIBE: "sc.", UNSUBSCRIBE: "uc."}
COOKIE_DAYS = 10
COOKIE_SECONDS = COOKIE_DAYS * 86400
SKEW = 300        # seconds a stamp may lie ahead of our clock (another replica's)
MAC_HEX = 20      # 80 bits: guessing one takes 2^79 tries, each a message
_STAMP_HEX = 10   # up to year 36812; a longer one is not ours
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Command:
    action: str            # SUBSCRIBE or UNSUBSCRIBE
    address: str           # "" = the envelope sender
    cookie: str = ""       # set: a confirmation


def _target(text: str) -> str | None:
    """user=host as user@host (the last "=", as ezmlm: a local part may hold "="), or None
    when it is no address."""
    user, eq, host = text.rpartition("=")
    if not eq or not user or not host or "@" in text or "." not in host.strip("."):
        return None
    if any(c.isspace() or ord(c) < 32 or c in "<>()[]\\,;:\"" for c in text):
        return None
    return f"{user}@{host}"


def parse(extension: str) -> Command | None:
    """The command in a list's command address's extension (lower case), or None."""
    for action in (SUBSCRIBE, UNSUBSCRIBE):
        if extension == action:
            return Command(action, "")
        if extension.startswith(action + "-"):
            target = _target(extension[len(action) + 1:])
            return Command(action, target) if target else None
        prefix = CONFIRM_PREFIX[action]
        if extension.startswith(prefix):
            cookie, dash, rest = extension[len(prefix):].partition("-")
            target = _target(rest) if dash else None
            if target is None or not well_formed(cookie):
                return None
            return Command(action, target, cookie)
    return None


def well_formed(cookie: str) -> bool:
    stamp, dot, mac = cookie.partition(".")
    return (bool(dot) and 0 < len(stamp) <= _STAMP_HEX and len(mac) == MAC_HEX
            and set(stamp) <= _HEX and set(mac) <= _HEX)


def _mac(secret: bytes, list_address: str, action: str, address: str, stamp: str) -> str:
    text = "\0".join((list_address.lower(), action, address.lower(), stamp)).encode()
    return hmac.new(secret, text, hashlib.sha256).hexdigest()[:MAC_HEX]


def make(secret: bytes, list_address: str, action: str, address: str, now: float) -> str:
    stamp = format(int(now), "x")
    return f"{stamp}.{_mac(secret, list_address, action, address, stamp)}"


def valid(secrets: list[bytes], list_address: str, action: str, address: str, cookie: str,
          now: float) -> bool:
    """Made by one of `secrets` for exactly this list, action and address, within
    COOKIE_SECONDS of `now`."""
    if action not in CONFIRM_PREFIX or not well_formed(cookie):
        return False
    stamp, _, mac = cookie.partition(".")
    if not -SKEW <= now - int(stamp, 16) <= COOKIE_SECONDS:
        return False
    good = False
    for secret in secrets:  # every one compared: no hint of which matched
        good |= hmac.compare_digest(_mac(secret, list_address, action, address, stamp), mac)
    return good


def confirm_address(list_address: str, delimiter: str, action: str, address: str,
                    cookie: str) -> str:
    """LIST-sc.COOKIE-user=host@domain (with the delimiter in use)."""
    user, _, host = address.rpartition("@")
    return listaddresses.command(list_address, delimiter,
                                 f"{CONFIRM_PREFIX[action]}{cookie}-{user}={host}")


def command_address(list_address: str, delimiter: str, action: str) -> str:
    return listaddresses.command(list_address, delimiter, action)
