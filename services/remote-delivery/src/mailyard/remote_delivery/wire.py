"""The message as DATA sends it: CRLF everywhere, no line over 998 octets, dot-stuffed and
ended by ".\r\n"; made once per job, whichever hops are tried.

`normalise` turns every bare CR and bare LF into CRLF before the SIZE we announce and the
dot-stuffing, so a stored "\\r.\\r\\n" can never end the DATA early (SMTP smuggling);
`linelength.fold` then breaks lines over 998 octets as Postfix does.

Each of those is a pass over every byte: on mail of mixed sizes they were a third of
remote-delivery's CPU (issue 20). smtp-ingress has passed over the bytes already and says
in the envelope's Lines what it found (every line ends in CRLF, the longest line, a line
starting with a dot); with those facts, the passes whose answer is known are skipped.
Without them (bounces, forwards, lists) every pass is made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailyard.api.mail.v1.envelope_pb2 import Lines
from mailyard.remote_delivery.linelength import LIMIT, fold

_LINE_ENDINGS = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


@dataclass(frozen=True)
class Wire:
    size: int       # octets of the message: what SIZE= announces
    data: bytes     # what follows the 354: dot-stuffed, ".\r\n" at the end


def normalise(data: bytes) -> bytes:
    """CRLF everywhere, ending in CRLF: what goes on the wire (before dot-stuffing)."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:  # a bare CR or LF somewhere
        data = _LINE_ENDINGS.sub(b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def stuffed(message: bytes, dots: bool = True) -> bytes:
    """A normalised message (CRLF everywhere, ends in CRLF) as DATA sends it: dot-stuffed
    and terminated, so no line of it can end the DATA early. `dots` False: no line of it
    starts with a dot (known from Lines), so none is looked for."""
    if dots and (message.startswith(b".") or b"\n." in message):
        message = _LEADING_DOT.sub(b"..", message)
    return message + b".\r\n"


def wire(data: bytes, lines: Lines | None = None) -> Wire:
    """The spooled message `data` as it goes out; `lines`: the envelope's facts, if set."""
    if lines is None or not data.endswith(b"\r\n"):
        message = fold(normalise(data))
        return Wire(len(message), stuffed(message))
    message = data if lines.longest <= LIMIT else fold(data)
    return Wire(len(message), stuffed(message, lines.leading_dot))
