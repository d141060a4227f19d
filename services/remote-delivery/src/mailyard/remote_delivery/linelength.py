"""RFC 5321 4.5.3.1.6: a line is at most 998 octets plus CRLF. A longer stored line (a
client's HTML in one line, a generated header) is folded as Postfix's
smtp_line_length_limit does: <CR><LF><SPACE> is inserted every 998 octets, so no line
on the wire is longer. In a header the inserted SPACE makes an RFC 5322 continuation line,
so the header stays whole; in a body it adds a space and a line break, which readers of
text and HTML tolerate. Encoded parts (base64, quoted-printable) never have such lines.
A DKIM signature over a folded line breaks, as it does after Postfix: a sender that signs
must keep its lines short. The alternative, bouncing, would lose mail that every other MTA
relays.
"""

from __future__ import annotations

LIMIT = 998  # octets per line, without CRLF


def fold(message: bytes) -> bytes:
    """`message` (CRLF line endings, as normalise() makes it) with every line longer than
    LIMIT octets broken by CRLF SPACE; returned unchanged (the same object) when no line
    is too long, the common case.

    The lines are found by one split, in C and linear in the size. A regular expression
    for "999 octets without CR or LF" was tried at every offset, each try running up to
    the next line end: 0.9 s of CPU for a 2 MB message of 80-octet lines and 18 s for one
    of 998-octet lines, all of it on the event loop, so every other delivery and the
    progress acks of the jobs in flight stood still (jobs went out twice, issue 20)."""
    lines = message.split(b"\r\n")
    limit = LIMIT
    if max(map(len, lines)) <= limit:
        return message
    out = []
    for line in lines:
        if len(line) <= limit:
            out.append(line)
            continue
        pieces = [line[:limit]]
        rest = line[limit:]
        while rest:
            pieces.append(b" " + rest[:limit - 1])
            rest = rest[limit - 1:]
        out.append(b"\r\n".join(pieces))
    return b"\r\n".join(out)
