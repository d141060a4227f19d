"""The wire side of one SMTP transaction: MAIL, RCPT..., DATA, the message; pipelined
(RFC 2920) when the server offers PIPELINING, one command per reply otherwise.

aiosmtplib keeps the session (connect, EHLO, STARTTLS, AUTH, RSET, QUIT), but its protocol
takes one reply per read and drops whatever follows it, so for the transaction the
transport is lent to `_Replies`, which parses every reply a read brings and hands them out
in order. The transport goes back to aiosmtplib's protocol in every path; a session that
did not end in step (lost, timed out, a garbled reply, a reply too many, a DATA answered
with neither 354 nor a refusal, cancelled) is closed, since what the server makes of the
commands still in flight is unknowable.

What the replies mean (delivered, deferred, failed) is deliver.py's business; this module
only decides what may be sent next: the message only after a 2xx to MAIL, at least one
accepted RCPT, no 421 and a 354 to DATA; a 354 nobody should get (no accepted recipient)
is ended with a lone "." at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import sys
import termios
from dataclasses import dataclass, field
from typing import cast

import aiosmtplib
from aiosmtplib.response import SMTPResponse

MAX_PENDING = 32 * 1024  # an unfinished reply longer than this is garbage (aiosmtplib's bound)

@dataclass
class Replies:
    """The replies, in the order the commands went out. Missing ones were never sent or
    never came (`lost`: the connection died or went silent)."""

    mail: SMTPResponse | None = None
    rcpts: list[SMTPResponse] = field(default_factory=list)  # a prefix of the RCPTs sent
    data: SMTPResponse | None = None
    final: SMTPResponse | None = None  # to the message (or to the lone "."), after a 354
    sent_message: bool = False
    lost: bool = False
    too_slow: bool = False  # given up: the server took the message below the minimum rate


class _Replies(asyncio.Protocol):
    """Holds the transport for one transaction: collects replies, wakes the reader once
    the number it waits for is there (one wakeup per pipelined group, not per reply).
    One timer per transaction, not per read: it fires `timeout` after the last sign of
    life (a read begun, a reply come) and only then counts the server as gone. A line of
    an unfinished reply is no sign of life: a server trickling "250-" lines would otherwise
    hold the transaction for ever. What an unfinished reply holds is counted in octets as
    they came, so empty continuation lines count too. The server taking what we send is a
    sign of life too (what `transport` holds unsent or unacknowledged shrank since the last
    look): a message over a slow link may take longer than `timeout` in all (RFC 5321
    4.5.3.2.5 times each send, as Postfix's smtp_data_xfer_timeout). But a server taking a
    little in each `timeout` would then hold the transaction for ever, so from `sending` on
    it must also keep a minimum rate: the message gets `timeout` plus one second for every
    `min_rate` octets the server took (Postfix's smtp_min_data_rate with its
    smtp_per_request_deadline)."""

    def __init__(self, owner: asyncio.BaseProtocol, timeout: float,
                 transport: asyncio.WriteTransport | None = None, min_rate: float = 0.0,
                 ) -> None:
        self._owner = owner
        self._timeout = timeout
        self._transport = transport
        self._min_rate = min_rate
        self._sending: tuple[float, int] | None = None  # since when, octets to be taken
        self._unsent = 0  # the write buffer when last looked at
        self._loop = asyncio.get_running_loop()
        self._partial = b""  # an unfinished line
        self._lines: list[bytes] = []  # the reply being read, line by line
        self._replies: list[SMTPResponse] = []
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heard = 0.0
        self._held = 0  # octets of the whole lines of the reply being read
        self.failed = False
        self.too_slow = False

    def data_received(self, data: bytes) -> None:
        if self.failed:
            return  # given up on; the transport is being closed
        if self._partial:
            data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # b"" when the data ended with a whole line
        replies = len(self._replies)
        for line in lines:
            code = line[:3]
            # Three digits, then a space, a hyphen or the end (RFC 5321 4.2); a "2500" or
            # a "99" is no reply: the session is out of step, not delivered nor bounced.
            if len(code) < 3 or not code.isdigit() or line[3:4] not in b" -\r":
                self._fail()
                return
            self._held += len(line) + 1
            self._lines.append(line[4:].strip(b" \t\r"))
            if line[3:4] != b"-":
                text = b"\n".join(self._lines).decode("utf-8", "surrogateescape")
                self._replies.append(SMTPResponse(int(code), text))
                self._lines.clear()
                self._held = 0
        if self._held + len(self._partial) > MAX_PENDING:
            self._fail()
        elif len(self._replies) > replies:
            self._heard = self._loop.time()
            if len(self._replies) >= self._want:
                self._wake()

    def eof_received(self) -> bool:
        self._fail()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()
        self._owner.connection_lost(exc)  # aiosmtplib learns it too and closes its session

    def _fail(self) -> None:
        self.failed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _check_time(self) -> None:
        now = self._loop.time()
        if self._transport is not None:
            unsent = _unsent(self._transport)
            if unsent < self._unsent:
                self._heard = now
            self._unsent = unsent
        left = self._heard + self._timeout - now
        if self._sending is not None and self._min_rate and self._waiter is not None:
            since, octets = self._sending
            taken = max(0, octets - self._unsent)
            behind = since + self._timeout + taken / self._min_rate - now
            if behind <= 0:
                self.too_slow = True
            left = min(left, behind)
        if left > 0 or self._waiter is None:  # alive, or not waiting for anything now
            self._timer = self._loop.call_later(max(left, 0.1), self._check_time)
        else:
            self._fail()

    def sending(self, octets: int) -> None:
        """`octets` go out now (the message): from here the minimum rate holds."""
        unsent = _unsent(self._transport) if self._transport is not None else 0
        self._sending = (self._loop.time(), octets + unsent)

    async def read(self, count: int) -> list[SMTPResponse]:
        """The next `count` replies, or fewer once the connection has failed."""
        if len(self._replies) < count and not self.failed:
            self._want = count
            self._heard = self._loop.time()
            if self._transport is not None:
                self._unsent = _unsent(self._transport)
            if self._timer is None:
                self._timer = self._loop.call_later(self._timeout, self._check_time)
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        got = self._replies[:count]
        del self._replies[:count]
        return got

    @property
    def drained(self) -> bool:
        """Nothing came that was not asked for (so far)."""
        return not (self._replies or self._lines or self._partial)

    def done(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


async def run(smtp: aiosmtplib.SMTP, mail: bytes, rcpts: list[bytes], message: bytes, *,
              pipelining: bool, timeout: float, min_rate: float = 0.0) -> Replies:
    """Send one transaction: `mail` and `rcpts` are whole command lines (CRLF included),
    `message` what follows the 354, stuffed and terminated (wire.py). At least one RCPT.
    `min_rate`: octets per second the server must take the message at after `timeout`
    (0: none)."""
    out = Replies()
    transport = smtp.transport
    if transport is None or transport.is_closing():
        out.lost = True
        return out
    # aiosmtplib types it BaseTransport; uvloop's transports are not asyncio's subclasses
    transport = cast(asyncio.Transport, transport)
    owner = transport.get_protocol()
    replies = _Replies(owner, timeout, transport, min_rate)
    transport.set_protocol(replies)
    in_step = False
    try:
        if pipelining:
            transport.write(b"".join([mail, *rcpts, b"DATA\r\n"]))
            got = await replies.read(len(rcpts) + 2)
            if got:
                out.mail = got[0]
                out.rcpts = got[1:len(rcpts) + 1]
            if len(got) == len(rcpts) + 2:
                out.data = got[-1]
        else:
            out.mail = await _ask(transport, replies, mail)
            if out.mail is not None and accepted(out.mail):
                for line in rcpts:
                    reply = await _ask(transport, replies, line)
                    if reply is None:
                        break
                    out.rcpts.append(reply)
                    if reply.code == 421:
                        break
                if _may_send(out):
                    out.data = await _ask(transport, replies, b"DATA\r\n")
        closing = any(r is not None and r.code == 421 for r in (out.mail, *out.rcpts, out.data))
        if out.data is not None and out.data.code == 354 and not closing:
            out.sent_message = _may_send(out)
            if out.sent_message:
                replies.sending(len(message))
            # Nothing may go out to nobody: a 354 without an accepted recipient gets "."
            out.final = await _ask(transport, replies, message if out.sent_message
                                   else b".\r\n")
        out.lost = replies.failed
        out.too_slow = replies.too_slow
        # In step: nothing left over (one reply too many shifts every later one) and a
        # DATA answered with 354 or refused; after any other answer the server may be
        # reading our next commands as a message.
        in_step = (not replies.failed and not closing and replies.drained
                   and (out.data is None or out.data.code == 354 or out.data.code >= 400))
    finally:
        replies.done()
        transport.set_protocol(owner)
        if replies.failed and _unsent(transport):
            _abort(transport)  # given up with some of it unsent: none of the rest goes out
        elif not in_step:
            transport.close()  # aiosmtplib's protocol hears connection_lost and cleans up
    return out


def _abort(transport: asyncio.Transport) -> None:
    """Close at once, dropping what is still unsent: close() goes on sending the buffer
    and the kernel its queue, the final "." too, so a server that took the rest after we
    gave up would have the message we count deferred (sent again: delivered twice).
    SO_LINGER 0 makes the kernel drop its queue and reset the connection."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _unsent(transport: asyncio.WriteTransport) -> int:
    """Octets written that the server has not taken yet: the transport's buffer and the
    socket's send queue (Linux TIOCOUTQ: not sent or not acknowledged; some MB on a fast
    host, so the buffer alone would miss the end of a slow transfer)."""
    size = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            size += int.from_bytes(queued, sys.byteorder, signed=True)
    return size


def accepted(reply: SMTPResponse) -> bool:
    """A yes to MAIL, RCPT or the message: any 2xx, as Postfix reads it (250 and 251 are
    the usual ones; a 252 taken for a final answer left a recipient "delivered" unsent)."""
    return 200 <= reply.code < 300


def _may_send(out: Replies) -> bool:
    return (out.mail is not None and accepted(out.mail)
            and any(accepted(r) for r in out.rcpts)
            and not any(r.code == 421 for r in out.rcpts))


async def _ask(transport: asyncio.WriteTransport, replies: _Replies,
               line: bytes) -> SMTPResponse | None:
    if replies.failed:
        return None
    transport.write(line)
    got = await replies.read(1)
    return got[0] if got else None
