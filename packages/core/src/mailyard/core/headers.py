"""Where a message's header section ends (RFC 5322 2.1): at the first empty line; a message
that starts with an empty line has no header fields, one without any has no body."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime


def split(message: bytes) -> tuple[bytes, bytes]:
    """(header section with its last CRLF, the rest from the empty line on)."""
    if message.startswith(b"\r\n"):
        return b"", message
    end = message.find(b"\r\n\r\n")
    return (message, b"") if end < 0 else (message[:end + 2], message[end + 2:])


def fields(head: bytes) -> list[list[bytes]]:
    """The header section's fields, each as its lines (continuations kept), without CRLFs."""
    lines = head.split(b"\r\n")
    if head.endswith(b"\r\n"):
        lines = lines[:-1]
    out: list[list[bytes]] = []
    for line in lines:
        if out and line[:1] in (b" ", b"\t"):
            out[-1].append(line)
        else:
            out.append([line])
    return out


def date(when: float) -> str:
    """A Date: value for the Unix time `when`, in UTC written +0000: formatdate's "-0000"
    means "local time unknown" (RFC 5322 3.3). For the mail we write ourselves."""
    return format_datetime(datetime.fromtimestamp(when, UTC))
