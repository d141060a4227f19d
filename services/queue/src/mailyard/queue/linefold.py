"""The text of the failed message a bounce returns (its header section; QSBMF's copy of
the whole message), made to fit RFC 5322's 998 octets a line.

Mail from outside may have a header line over 998 octets (smtp-ingress accepts it; real
mail breaks SMTP's limit). Returned as it came, it made the bounce itself break RFC 5322,
and remote-delivery, which breaks such a line on the way out, sent the bounce unsigned
(signing.py, long_line): a bounce from <> fails DMARC then. Postfix's bounce(8) copies
the returned lines as they are too (bounce_original), and its smtp client breaks them
after any signer did its work (smtp_line_length_limit). So a long line is folded here,
before the bounce is written, and the bounce is signed as any other.

A line is folded before white space followed by text (RFC 5322 2.2.3): unfolding gives
back the line octet for octet, and no line is white space only. Where 998 octets hold no
such place (one token longer than a line), the line is cut there with MARK and goes on at
its next place to fold; the octets in between are dropped, as bouncemaxbytes drops the
end of a long message. Nothing else changes: no re-encoding, line ends as they came. A
bare CR or LF ends a line here as it does for remote-delivery (wire.normalise).
"""

from __future__ import annotations

import re
from bisect import bisect_right

LIMIT = 998  # octets a line, without its end
MARK = b"[...]"  # where a line was cut
_ENDS = re.compile(rb"(\r\n|\r|\n)")
_FOLD_AT = re.compile(rb"[ \t](?=[^ \t])")  # a new line may start with this one


def fit(text: bytes) -> bytes:
    """`text` with every line over LIMIT octets folded, or cut where it cannot be; `text`
    itself when no line is too long (the common case: one split, in C)."""
    if max(map(len, text.splitlines()), default=0) <= LIMIT:
        return text
    return b"".join(_fit(part) if len(part) > LIMIT else part for part in _ENDS.split(text))


def _fit(line: bytes) -> bytes:
    folds = [m.start() for m in _FOLD_AT.finditer(line)]
    out = []
    start = 0
    while len(line) - start > LIMIT:
        nearest = bisect_right(folds, start + LIMIT) - 1  # the last place within reach
        if nearest >= 0 and folds[nearest] > start:
            out.append(line[start:folds[nearest]])
            start = folds[nearest]
            continue
        out.append(line[start:_char_start(line, start + LIMIT - len(MARK))] + MARK)
        following = nearest + 1  # no place in reach: the next is past it
        if following == len(folds):
            return b"\r\n".join(out)
        start = folds[following]
    out.append(line[start:])
    return b"\r\n".join(out)


def _char_start(line: bytes, at: int) -> int:
    """`at`, moved back to the start of the UTF-8 character it falls in (a returned UTF-8
    header, RFC 6532, is not cut inside a character)."""
    for _ in range(3):
        if not 0x80 <= line[at] < 0xC0:
            break
        at -= 1
    return at
