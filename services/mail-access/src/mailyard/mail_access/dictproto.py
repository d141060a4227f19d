"""Dovecot's dict proxy protocol, the server side (what Dovecot's `proxy:` dict client
talks to; Dovecot 2.3 sends protocol 3.x).

One request per line, answered in order on the same connection:

    H<major>\t<minor>\t<value type>\t<user>\t<dict name>    hello, no answer
    L<key>[\t<user>]                                         lookup
      -> O<value>   found      N   not found

Fields are tab-separated; a tab, CR, LF or \\x01 inside a field is escaped as \\x01 followed
by t, r, n or 1 (Dovecot's str_tabescape). Everything else Dovecot's dict can send
(iterate, transactions) is refused: the bridge is read-only, and the config disables
iteration. The failure answer (F<reason>) is never sent: Dovecot logs the key of a failed
lookup, and a passdb key holds the password (bridge._temporary_failure).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 64 * 1024       # Dovecot's DICT_CLIENT_MAX_LINE_LENGTH
SUPPORTED_MAJOR = (2, 3)   # 2.2 speaks 2, 2.3 speaks 3; lookups are the same

_UNESCAPE = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n", "0": "\x00"}
_ESCAPE = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n", "\x00": "\x010"}


class ProtocolError(ValueError):
    """A line the bridge cannot answer: the connection is closed (Dovecot reconnects)."""


def unescape(field: str) -> str:
    if "\x01" not in field:
        return field
    out, chars = [], iter(field)
    for char in chars:
        if char != "\x01":
            out.append(char)
            continue
        code = next(chars, "")
        if code not in _UNESCAPE:
            raise ProtocolError("bad escape in field")
        out.append(_UNESCAPE[code])
    return "".join(out)


def escape(field: str) -> str:
    return "".join(_ESCAPE.get(c, c) for c in field)


@dataclass(frozen=True)
class Hello:
    major: int
    minor: int
    dict_name: str


@dataclass(frozen=True)
class Lookup:
    key: str
    user: str


def parse(line: bytes) -> Hello | Lookup:
    """One request line (without its newline). Raises ProtocolError."""
    if len(line) > MAX_LINE:
        raise ProtocolError("line too long")
    # Dovecot passes the client's bytes through (a password sent in Latin-1): bytes that are
    # not UTF-8 stay as surrogates, so that lookup is answered (nothing matches it) instead
    # of the connection being dropped.
    text = line.decode("utf-8", "surrogateescape")
    if not text:
        raise ProtocolError("empty request")
    command, rest = text[0], text[1:]
    fields = [unescape(f) for f in rest.split("\t")]
    if command == "H":
        # isascii: str.isdigit() is also true for "²" and other digits int() refuses
        if len(fields) < 2 or not all(f.isascii() and f.isdigit() for f in fields[:2]):
            raise ProtocolError("bad hello")
        major = int(fields[0])
        if major not in SUPPORTED_MAJOR:
            raise ProtocolError(f"unsupported dict protocol version {major}")
        return Hello(major, int(fields[1]), fields[4] if len(fields) > 4 else "")
    if command == "L":
        if not fields[0]:
            raise ProtocolError("lookup without a key")
        return Lookup(fields[0], fields[1] if len(fields) > 1 else "")
    raise ProtocolError(f"unsupported dict command {command!r}")


def found(value: str) -> bytes:
    return b"O" + escape(value).encode() + b"\n"


NOT_FOUND = b"N\n"

