"""One SMTP connection: buffered input, ordered replies, the command loop.

Replies are queued and written in one go when the input runs dry (real PIPELINING, replies
always in command order), every command line must end in CRLF, lines are bounded, an idle
client is told 451 4.4.2 (timeout) before we close, and input buffered before STARTTLS is
thrown away. Why this engine rather than aiosmtpd: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.smtp_ingress import auth, data, ehlo, mail, rcpt, replies
from mailyard.smtp_ingress.errors import Close, Disconnect, IdleTimeout, LineTooLong
from mailyard.smtp_ingress.metrics import REJECTIONS

if TYPE_CHECKING:
    from mailyard.smtp_ingress.dnsbl import Listing
    from mailyard.smtp_ingress.server import Ingress, Listener
    from mailyard.smtp_ingress.transaction import Transaction

log = logging.getLogger(__name__)
CRLF = b"\r\n"
T = TypeVar("T")
# Postfix's junk commands: harmless once, but a client sending nothing else would hold its
# slot until IDLE_TIMEOUT; past JUNK_COMMAND_LIMIT each counts as an error
JUNK = frozenset({"HELO", "EHLO", "NOOP", "RSET", "VRFY", "HELP"})


class Session:
    def __init__(self, app: Ingress, listener: Listener, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, client: tuple[str, int] | None = None,
                 early: bytes = b"") -> None:
        self.app = app
        self.settings = app.settings
        self.listener = listener
        self.reader = reader
        self.writer = writer
        self.buf = bytearray(early)  # bytes a proxy sent after its PROXY header
        self.out = bytearray()
        # the client: from the PROXY header when a proxy in front sent one, else the peer
        peer = client or writer.get_extra_info("peername") or ("", 0)
        self.ip: str = peer[0]
        self.tls = tls_description(writer)
        self.helo = ""
        self.esmtp = False
        self.auth_user = ""
        self.auth_failures = 0
        self.errors = 0  # refused commands and recipients since the last accepted message
        self.junk = 0    # JUNK commands, as long
        self.client: ra.CheckClientResponse | None = None  # None: relay-auth did not answer
        self.dnsbl: asyncio.Task[Listing | None] | None = None
        self.ptr: asyncio.Task[str] | None = None
        self.admitted = False  # counted against the per-IP limit (limits.py)
        self.tx: Transaction | None = None
        self.committing = False  # a graceful stop waits for these sessions
        # the read and write timeout (see _timed): one timer per session, not one per read
        self.loop = asyncio.get_running_loop()
        # the task that runs the session (made in it, as every read and write of it is):
        # asyncio.current_task() per read was 2 % of a connection's cost
        self.task = asyncio.current_task()
        self.deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Task[object] | None = None  # set while a read or write waits
        self._expired = False

    # -- output ----------------------------------------------------------------------------

    def reply(self, text: str) -> None:
        self.out += text.encode("utf-8", "replace") + CRLF

    async def flush(self) -> None:
        """Send the queued replies. The write waits at most IDLE_TIMEOUT, as qmail-smtpd's
        writes do: a client that pipelines commands and reads no reply (its window shut)
        held the session in drain() for ever. Then the connection is dropped (aborted:
        nothing more reaches such a client, not even a 451)."""
        if self.out:
            self.writer.write(bytes(self.out))
            self.out.clear()
            if not self.writer.transport.get_write_buffer_size():
                return  # the socket took it all (the usual case): nothing to wait for
            try:
                await self._timed(self.writer.drain(), self.settings.idle_timeout)
            except IdleTimeout:
                self.writer.transport.abort()
                raise Disconnect from None
            except (ConnectionError, RuntimeError) as exc:
                raise Disconnect from exc

    # -- input -----------------------------------------------------------------------------

    async def read_chunk(self, timeout: float) -> bytes:
        """Read more input; replies queued so far go out first (the pipelining flush).
        IdleTimeout if nothing came within `timeout` seconds."""
        await self.flush()
        try:
            chunk = await self._timed(self.reader.read(65536), timeout)
        except (ConnectionError, OSError) as exc:
            raise Disconnect from exc
        if not chunk:
            raise Disconnect
        return chunk

    async def _timed(self, waiting: Awaitable[T], timeout: float) -> T:
        """Await a read or a write under the session's timer; IdleTimeout if it is not
        done within `timeout` seconds."""
        self._arm(timeout)
        self._waiter = self.task
        try:
            return await waiting
        except asyncio.CancelledError:
            if not self._expired:
                raise
            self._expired = False
            assert self._waiter is not None
            if self._waiter.uncancel() > 0:  # a graceful stop as well: that wins
                raise
            raise IdleTimeout from None
        finally:
            self._waiter = None

    def _arm(self, timeout: float) -> None:
        """asyncio.timeout() around every read was an eighth of a connection's cost (a
        Timeout object, a timer made and cancelled, per read). Instead every read moves
        the session's deadline, and its one timer, when it fires early, re-arms itself at
        the deadline as it is then; a new timer is made only for a deadline earlier than
        the armed one, or after the timer has run."""
        self.deadline = self.loop.time() + timeout
        timer = self._timer
        if timer is None or timer.when() > self.deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(self.deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        task = self._waiter
        if task is None:
            return  # not reading or writing now: the next read arms the timer again
        if self.deadline - self.loop.time() > 0.001:  # a read since moved the deadline
            self._timer = self.loop.call_at(self.deadline, self._expire)
            return
        # as asyncio.timeout does: cancel the waiting read, _timed turns it into
        # IdleTimeout. The task is suspended in that read (it would have cleared
        # _waiter otherwise), so the cancellation lands there and nowhere else.
        self._expired = True
        task.cancel()

    async def fill(self, timeout: float) -> None:
        self.buf += await self.read_chunk(timeout)

    async def line(self, limit: int) -> bytes:
        """One line with its line ending; the whole line must arrive within IDLE_TIMEOUT.
        A line longer than `limit` is consumed and LineTooLong raised."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.idle_timeout
        start, too_long = 0, False
        while True:
            end = self.buf.find(b"\n", start)
            if end >= 0:
                raw = bytes(self.buf[:end + 1])
                del self.buf[:end + 1]
                if too_long or len(raw) > limit:
                    raise LineTooLong
                return raw
            if len(self.buf) > limit:  # keep memory bounded; remember to refuse the line
                too_long = True
                self.buf.clear()
            start = len(self.buf)
            await self.fill(max(0.0, deadline - loop.time()))

    async def text_line(self, limit: int) -> str | None:
        """A CRLF-terminated line as text, or None after replying to a bad one."""
        try:
            raw = await self.line(limit)
        except LineTooLong:
            self.reject(replies.LINE_TOO_LONG, "line_too_long")
            return None
        body = raw[:-2] if raw.endswith(CRLF) else None
        if body is None or b"\r" in body:
            self.reject(replies.BARE_LF_COMMAND, "bare_lf")
            return None
        if b"\x00" in body:
            self.reject(replies.NUL_IN_COMMAND, "syntax")
            return None
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            self.reject(replies.BAD_UTF8, "syntax")
            return None

    def reject(self, reply: str, reason: str, error: bool = True) -> None:
        REJECTIONS.labels(reason).inc()
        self.reply(reply)
        if error:
            self.errors += 1

    def discard_input(self) -> None:
        """STARTTLS: whatever the client sent in clear after the command must not survive
        into the encrypted session (CVE-2011-0411, the STARTTLS injection)."""
        self.buf.clear()
        pending = getattr(self.reader, "_buffer", None)
        if isinstance(pending, bytearray):
            pending.clear()

    # -- state -----------------------------------------------------------------------------

    @property
    def may_relay(self) -> bool | None:
        """True/False, or None when relay-auth could not be asked (never relay then)."""
        if self.auth_user or (self.client is not None and self.client.allow_relay):
            return True
        return None if self.client is None else False

    def reset_after_tls(self) -> None:
        self.helo, self.esmtp, self.tx, self.auth_user = "", False, None, ""
        self.tls = tls_description(self.writer)

    # -- the command loop ------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if await ehlo.greet(self):
                while True:
                    slow = self.errors >= self.settings.soft_error_limit
                    text = await self.text_line(self.settings.max_line)
                    if text is not None and not await self.command(text):
                        break
                    if slow or self.errors:  # nothing to do for a client without errors
                        await self.error_limits(slow)
        except IdleTimeout:
            self.reject(replies.TIMEOUT, "timeout")
        except Close as close:
            if close.reason:
                REJECTIONS.labels(close.reason).inc()
            self.reply(close.reply)
        except Disconnect:
            pass
        except asyncio.CancelledError:  # graceful stop of an idle session
            self.reply(replies.SHUTTING_DOWN)
        except Exception:  # never show exception text to a client
            log.exception("session failed", extra={"client_ip": self.ip})
            self.reply(replies.INTERNAL_ERROR)
        finally:
            await self.close()

    async def command(self, text: str) -> bool:
        """Handle one command; False ends the session."""
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        handler = COMMANDS.get(verb)
        if handler is None:
            self.reject(replies.UNIMPLEMENTED, "unknown_command")
            return True
        if verb in JUNK:
            self.junk += 1
            if self.junk > self.settings.junk_command_limit:
                self.errors += 1
        return await handler(self, arg)

    async def error_limits(self, slow: bool) -> None:
        """Postfix's smtpd_hard_error_limit and smtpd_soft_error_limit, after a command:
        at the hard limit, 421 and close (a dictionary attack ends there too); `slow` (the
        soft limit was reached before it) holds its reply back ERROR_SLEEP_TIME, as
        Postfix's sleep before each reply."""
        if self.errors >= self.settings.hard_error_limit:
            log.info("too many errors, session closed",
                     extra={"client_ip": self.ip, "listener": self.listener.name,
                            "errors": self.errors, "helo": self.helo[:100]})
            raise Close(replies.too_many_errors(self.app.me()), "too_many_errors")
        if slow and self.settings.error_sleep_time:
            await asyncio.sleep(self.settings.error_sleep_time)

    async def close(self) -> None:
        for task in (self.dnsbl, self.ptr):
            if task is not None and not task.done():
                task.cancel()
        try:
            with contextlib.suppress(Disconnect, Exception):
                await self.flush()
        finally:
            if self._timer is not None:  # armed by that flush as well
                self._timer.cancel()
                self._timer = None
            self.writer.close()

    async def wait_closed(self) -> None:
        """The transport's last bytes gone. Awaited after the session gave back its
        connection slots: a client that got its 221 reconnects at once, and must not find
        its old connection still counted against the per-IP limit. Bytes a client does not
        read within 5 s (IDLE_TIMEOUT if shorter) are dropped: the transport would keep
        the socket open for them for ever."""
        try:
            if not self.tls and not self.writer.transport.get_write_buffer_size():
                await self.writer.wait_closed()  # plain TCP, nothing left to send: the
                return                           # loop's next turn closes it
            async with asyncio.timeout(min(5.0, self.settings.idle_timeout)):
                await self.writer.wait_closed()
        except TimeoutError:
            self.writer.transport.abort()
        except Exception:
            pass


def tls_description(writer: asyncio.StreamWriter) -> str:
    ssl_object = writer.get_extra_info("ssl_object")
    if ssl_object is None:
        return ""
    cipher = ssl_object.cipher()
    return f"{ssl_object.version()} {cipher[0] if cipher else ''}".strip()


async def _noop(s: Session, arg: str) -> bool:
    s.reply(replies.OK)
    return True


async def _rset(s: Session, arg: str) -> bool:
    s.tx = None
    s.reply(replies.FLUSHED)
    return True


async def _quit(s: Session, arg: str) -> bool:
    s.reply(replies.quit_reply(s.app.me()))
    return False


async def _vrfy(s: Session, arg: str) -> bool:
    s.reply(replies.VRFY)
    return True


async def _help(s: Session, arg: str) -> bool:
    s.reply(replies.HELP)
    return True


COMMANDS = {
    "HELO": ehlo.helo, "EHLO": ehlo.ehlo, "STARTTLS": ehlo.starttls, "AUTH": auth.auth,
    "MAIL": mail.mail, "RCPT": rcpt.rcpt, "DATA": data.data, "RSET": _rset, "NOOP": _noop,
    "QUIT": _quit, "VRFY": _vrfy, "HELP": _help,
}
