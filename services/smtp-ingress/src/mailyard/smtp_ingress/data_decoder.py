"""The DATA byte stream decoded incrementally: the end-of-data line, dot-unstuffing, bare
CR/LF and NUL found, chunk by chunk, so a message never has to be held whole.

Work is done on whole lines at a time with bytes.find/count/replace (a few C passes per
64 KB chunk). Only a partial last line is carried to the next chunk; a line longer than
PARTIAL_MAX is passed on in pieces (its first bytes decide the unstuffing; a trailing CR is
kept back until we see whether an LF follows), so no line, however long, piles up.

Dot-unstuffing is what it always was here: a line starting with ".." loses one dot.
"""

from __future__ import annotations

PARTIAL_MAX = 8192      # a partial line longer than this is passed on in pieces


class DataDecoder:
    def __init__(self, partial_max: int = PARTIAL_MAX) -> None:
        self.partial_max = partial_max
        self.bol = True         # the next byte starts a line
        self.carry = b""        # a partial line (or a lone trailing CR) not yet decoded
        self.bare = False       # a CR or LF outside CRLF was seen: the message is refused
        self.nul = False        # a NUL was seen: the message is refused

    def feed(self, chunk: bytes) -> tuple[bytes, bytes | None]:
        """Decode `chunk`: (message bytes, None) while the message goes on; at its end
        (the message's last bytes, the input after the ".\\r\\n" line). After `bare` is set
        the output means nothing: the caller must stop."""
        data = self.carry + chunk if self.carry else chunk
        self.carry = b""
        out = b""
        last = data.rfind(b"\n")
        if last >= 0:
            whole = data[:last + 1]
            if self.bol and whole.startswith(b".\r\n"):
                end = 0
            else:
                found = whole.find(b"\r\n.\r\n")
                end = found + 2 if found >= 0 else -1
            body = whole if end < 0 else whole[:end]
            out = self._lines(body)
            if end >= 0:
                return out, data[end + 3:]
            self.bol = True
            rest = data[last + 1:]
        else:
            rest = data
        if len(rest) > self.partial_max:
            keep = 1 if rest.endswith(b"\r") else 0
            piece, rest = rest[:len(rest) - keep], rest[len(rest) - keep:]
            if b"\r" in piece:
                self.bare = True
            if b"\0" in piece:
                self.nul = True
            if self.bol and piece.startswith(b".."):
                piece = piece[1:]
            out += piece
            self.bol = False
        self.carry = rest
        return out, None

    def _lines(self, body: bytes) -> bytes:
        """Whole lines (body ends with LF, or is empty): checked and unstuffed."""
        lf = body.count(b"\n")
        if body.count(b"\r\n") != lf or body.count(b"\r") != lf:
            self.bare = True
        if b"\0" in body:
            self.nul = True
        out = body.replace(b"\r\n..", b"\r\n.")
        if self.bol and out.startswith(b".."):
            out = out[1:]
        return out


def decode_whole(stream: bytes) -> tuple[bytes, bytes | None, bool, bool]:
    """The whole-buffer reference the incremental decoder must agree with (tests):
    (message, rest after the end or None, bare, nul)."""
    if stream.startswith(b".\r\n"):
        raw, rest = b"", stream[3:]
    else:
        found = stream.find(b"\r\n.\r\n")
        if found < 0:
            raw, rest = stream, None
        else:
            raw, rest = stream[:found + 2], stream[found + 5:]
    lines = raw.split(b"\r\n")
    complete = lines if rest is not None else lines[:-1]
    bare = any(b"\r" in line or b"\n" in line for line in complete)
    nul = b"\0" in raw
    message = b"\r\n".join(line[1:] if line.startswith(b"..") else line for line in lines)
    return message, rest, bare, nul
