"""RFC 5321 paths and ESMTP parameters, parsed strictly enough that nothing odd reaches the
queue: NUL and controls are refused, non-ASCII needs SMTPUTF8, source routes are dropped
(RFC 5321 section 4.1.1.3: accept and ignore), and the domain is always the part after the
last @ outside quotes, so quoted local parts, % hacks and bang paths cannot pick a route.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailyard.smtp_ingress import replies

# Labels joined by dots, one final dot allowed. Each label is a letter or digit and then
# anything but a dot, so where a label ends is never a choice: the regex engine gives up on
# a bad name in one pass. (It was "(label .?)+": every way of cutting a long name into
# labels was tried, and 40 letters and a "!" in MAIL FROM held the event loop for hours.)
_LABEL = r"[A-Za-z0-9\u0080-\U0010ffff][A-Za-z0-9\u0080-\U0010ffff-]*"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_LITERAL = re.compile(r"\[(?:[0-9.]{7,15}|IPv6:[0-9A-Fa-f:.]{2,45})\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\u0080-\U0010ffff-]+")
_QUOTED_PAIR = re.compile(r"\\(.)")
ROUTING_CHARS = ("%", "!", "@", '"')


class SyntaxProblem(ValueError):
    """The reply to send is the exception's text."""


@dataclass(frozen=True)
class Path:
    address: str        # "" for the null sender
    local: str
    domain: str
    ascii: bool

    @property
    def routing_local(self) -> bool:
        """Local part that would route somewhere else if anybody honoured it."""
        return any(c in self.local for c in ROUTING_CHARS)


def split_path(text: str) -> tuple[str, str]:
    """'<a@b> SIZE=1' -> ('a@b', 'SIZE=1'); respects quotes inside the brackets."""
    text = text.lstrip(" ")
    if not text.startswith("<"):
        raise SyntaxProblem(replies.ADDRESS_NOT_BRACKETED)
    quoted = escaped = False
    for i, ch in enumerate(text[1:], 1):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return text[1:i], text[i + 1:].strip(" ")
    raise SyntaxProblem(replies.ADDRESS_UNTERMINATED)


def parse_address(raw: str, *, allow_empty: bool) -> Path:
    if raw.startswith("@"):  # source route "@a,@b:user@dom": ignored, never followed
        _, colon, raw = raw.partition(":")
        if not colon:
            raise SyntaxProblem(replies.BAD_ADDRESS)
    if raw == "":
        if allow_empty:
            return Path("", "", "", True)
        raise SyntaxProblem(replies.BAD_RECIPIENT)
    if _CONTROL.search(raw):
        raise SyntaxProblem(replies.BAD_ADDRESS)
    if len(raw.encode()) > 320:
        raise SyntaxProblem(replies.ADDRESS_TOO_LONG)
    if raw.startswith('"'):
        end = _closing_quote(raw)
        local, rest = raw[:end + 1], raw[end + 1:]
        if not rest.startswith("@"):
            raise SyntaxProblem(replies.BAD_ADDRESS)
        domain = rest[1:]
        # "joe"@ is joe@ (RFC 5321 4.1.2), as qmail-smtpd's addrparse reads it: with the
        # quotes kept, the directory looked up '"joe"' and refused a mailbox that exists
        if _is_dot_atom(bare := _QUOTED_PAIR.sub(r"\1", local[1:-1])):
            local = bare
    else:
        local, at, domain = raw.rpartition("@")
        if not at:
            local, domain = raw, ""
        if not _is_dot_atom(local):
            raise SyntaxProblem(replies.BAD_ADDRESS)
    if domain and not (_LITERAL.fullmatch(domain) or (_DOMAIN.fullmatch(domain) and
                                                   len(domain) <= 255)):
        raise SyntaxProblem(replies.BAD_ADDRESS)
    address = f"{local}@{domain}" if domain else local
    return Path(address, local, domain.lower().rstrip("."), address.isascii())


def _is_dot_atom(local: str) -> bool:
    return bool(_ATEXT.fullmatch(local)) and not (local.startswith(".") or local.endswith(".")
                                                  or ".." in local)


def _closing_quote(raw: str) -> int:
    escaped = False
    for i, ch in enumerate(raw[1:], 1):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i
    raise SyntaxProblem(replies.BAD_ADDRESS)


def parse_params(text: str) -> dict[str, str]:
    """'SIZE=100 BODY=8BITMIME SMTPUTF8' -> {'SIZE': '100', 'BODY': '8BITMIME', 'SMTPUTF8': ''}"""
    params: dict[str, str] = {}
    for item in text.split():
        key, _, value = item.partition("=")
        params[key.upper()] = value
    return params
