"""aiosmtplib's protocol, reading each reply once (installed for every aiosmtplib.SMTP of
this process on import; deliver.py imports it).

aiosmtplib parses the buffered reply from its first line at every read that ends a line,
whether or not a last line ("250 ", not "250-") has come: a greeting or EHLO reply of
empty "250-" lines, one per read, costs 11 s (CRLF) to 17 s (LF) of the event loop before
its 32 KB bound ends it, and COMMAND_TIMEOUT (300 s) leaves a next hop that time for
every EHLO of every session; the loop is every delivery's of the replica. Here each line
is looked at once, and the buffer goes to aiosmtplib's parser only when a last line has
come. The transaction itself is read by transaction.py, which is linear too.
"""

from __future__ import annotations

import aiosmtplib.smtp
from aiosmtplib.protocol import SMTPProtocol
from aiosmtplib.response import SMTPResponse


class Protocol(SMTPProtocol):
    _scanned = 0  # where the first line not yet known to be a continuation starts

    def data_received(self, data: bytes) -> None:
        if not self._buffer:  # taken or dropped (a reply too long, STARTTLS): start over
            self._scanned = 0
        super().data_received(data)

    def _read_response_from_buffer(self) -> SMTPResponse | None:
        buffer, start = self._buffer, self._scanned
        while (end := buffer.find(b"\n", start)) != -1:
            if buffer[start + 3:start + 4] != b"-":  # a last line (or garbage): parse it all
                self._scanned = 0
                return super()._read_response_from_buffer()
            start = end + 1
        self._scanned = start
        return None


setattr(aiosmtplib.smtp, "SMTPProtocol", Protocol)  # noqa: B010 (its SMTP has no hook)
