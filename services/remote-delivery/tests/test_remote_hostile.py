"""Next hops that misbehave on purpose: replies that never end, that trickle in, that are
not replies at all, that say "yes" in an unusual way or come once too often. Whatever the
server does, every recipient gets a result, deferred unless the server really took the
message, in bounded time and memory, and a session out of step is never used again.

`Hostile` is a raw asyncio server on 127.0.0.1 that answers each command by its verb from
a script; a callable in the script streams whatever it likes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from remote_rig import Rig

from mailyard.api.mail.v1.delivery_pb2 import (
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
    RecipientResult,
)
from mailyard.api.routing.v1 import routing_pb2
from mailyard.remote_delivery.explain import RoutingService
from mailyard.remote_delivery.transaction import MAX_PENDING, _Replies

pytestmark = pytest.mark.both_loops  # uvloop is the service's default; asyncio selectable

MSG = b"Subject: hi\r\n\r\nhello\r\n"
Stream = Callable[["Hostile", asyncio.StreamWriter], Awaitable[bytes | None]]  # what it sent

NORMAL: dict[str, bytes] = {
    "greet": b"220 hostile ESMTP\r\n",
    "EHLO": b"250-hostile\r\n250-SIZE 100000000\r\n250 PIPELINING\r\n",
    "HELO": b"250 hostile\r\n",
    "MAIL": b"250 2.1.0 ok\r\n",
    "RCPT": b"250 2.1.5 ok\r\n",
    "DATA": b"354 go ahead\r\n",
    ".": b"250 2.0.0 ok queued\r\n",
    "RSET": b"250 ok\r\n",
    "QUIT": b"221 bye\r\n",
}


@dataclass
class Hostile:
    script: dict[str, bytes | Stream] = field(default_factory=dict)
    port: int = 0
    sessions: int = 0
    hung_up: int = 0  # sessions the client closed without a QUIT
    stored: list[bytes] = field(default_factory=list)  # bodies answered with the "." reply
    stopped: bool = False
    slow_body: float = 0.0  # a pause after every 64 KB of message read (a slow link)
    stall_body: float = 0.0  # one pause after the first 64 KB (a link that stops a while)
    body_rate: int = 0  # octets of message read per second (a tar-pit); 0: as they come
    _server: asyncio.Server | None = None

    async def start(self) -> Hostile:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a slow body shows
        sock.bind(("127.0.0.1", 0))
        # A tar-pit reads through a small buffer, or the reader would take 128 KB at once.
        limit = 1024 if self.body_rate else 2**16
        self._server = await asyncio.start_server(self._session, sock=sock, limit=limit)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.stopped = True
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _answer(self, step: str, writer: asyncio.StreamWriter) -> bytes | None:
        reply = self.script.get(step, NORMAL.get(step, b"250 ok\r\n"))
        if not isinstance(reply, bytes):
            return await reply(self, writer)
        writer.write(reply)
        await writer.drain()
        return reply

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       ) -> None:
        self.sessions += 1
        body: list[bytes] | None = None
        read = 0
        try:
            await self._answer("greet", writer)
            while line := await reader.readline():
                if body is not None:
                    if line != b".\r\n":
                        body.append(line)
                        read += len(line)
                        if self.body_rate:
                            await asyncio.sleep(len(line) / self.body_rate)
                        if self.slow_body and read >= 65536:
                            read = 0
                            await asyncio.sleep(self.slow_body)
                        if self.stall_body and read >= 65536:
                            await asyncio.sleep(self.stall_body)
                            self.stall_body = 0
                        continue
                    self.stored.append(b"".join(body))
                    body = None
                    await self._answer(".", writer)
                    continue
                verb = line[:4].decode("ascii", "replace").upper()
                sent = await self._answer(verb, writer)
                if verb == "DATA" and sent is not None and sent.startswith(b"354"):
                    body = []
                if verb == "QUIT":
                    return
            self.hung_up += 1  # closed without a QUIT
        except ConnectionError:
            self.hung_up += 1
        finally:
            writer.close()


def endless(line: bytes, pause: float = 0.0) -> Stream:
    """Sends `line` again and again (every `pause` seconds) until the client hangs up."""
    async def stream(server: Hostile, writer: asyncio.StreamWriter) -> None:
        while not server.stopped:
            if writer.is_closing():  # reset meanwhile: uvloop's write() would raise RuntimeError
                raise ConnectionResetError("the client hung up")
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(pause)
    return stream


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[..., Awaitable[Hostile]]]:
    started: list[Hostile] = []

    async def start(body_rate: int = 0, **script: Any) -> Hostile:
        server = await Hostile(script, body_rate=body_rate).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


async def deliver(rig: Rig, server: Hostile, rcpts: list[str] | None = None,
                  data: bytes = MSG) -> list[RecipientResult]:
    """One job to `server`; a hang is a failure, not a stuck test (the bound is far above
    any timeout the tests set)."""
    await rig.routes(f"h.test:127.0.0.1:{server.port}")
    job = await rig.message(data, rcpts or ["a@h.test", "b@h.test"])
    return await asyncio.wait_for(rig.deliverer.deliver(job, data), 60)


async def hung_up(server: Hostile) -> bool:
    """Whether the client closed a session without QUIT; waits for it (on a loaded machine
    the server may take seconds to notice)."""
    for _ in range(1000):
        if server.hung_up:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_a_client_that_resets_mid_reply_is_counted_as_hung_up(hostile) -> None:  # type: ignore[no-untyped-def]
    """The rig itself: a client that resets the connection while a reply streams (what the
    worker's abort does with unread lines in its buffer) has hung up. Under uvloop the next
    write raised RuntimeError (the transport already closed), not a ConnectionError: the
    session ended uncounted and test_a_reply_that_trickles_forever_times_out failed when the
    reset came between two lines."""
    server = await hostile(greet=endless(b"220-x\r\n", pause=0.05))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await reader.readline()
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))  # close: RST
    writer.close()
    assert await hung_up(server)


STEPS = ["greet", "EHLO", "MAIL", "RCPT", "DATA", "."]


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("line", [b"250-\r\n", b"250-" + b"x" * 500 + b"\r\n", b"y" * 65536],
                         ids=["empty", "text", "no-crlf"])
async def test_a_reply_that_never_ends_is_cut_off(rig: Rig, hostile, step: str,  # type: ignore[no-untyped-def]
                                                  line: bytes) -> None:
    """An endless continuation (empty lines too) or megabytes without a line end: the reply
    is given up after a bounded length, the connection closed, nobody counted delivered."""
    server = await hostile(**{step: endless(line)})
    out = await deliver(rig, server)
    assert [r.outcome for r in out] == [OUTCOME_DEFERRED] * 2, out[0].reply
    assert await hung_up(server) and rig.pool.idle_count == 0


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.settings(command_timeout=1.0, connect_timeout=1.0)
async def test_a_reply_that_trickles_forever_times_out(rig: Rig, hostile, step: str) -> None:  # type: ignore[no-untyped-def]
    """Continuation lines at a slow pace are no sign of life: the command's timeout runs
    from the command, not from the last line (qmail-remote's timeoutremote, Postfix's
    smtp_*_timeout with a deadline)."""
    server = await hostile(**{step: endless(b"250-x\r\n", pause=0.05)})
    out = await deliver(rig, server)
    assert [r.outcome for r in out] == [OUTCOME_DEFERRED] * 2, out[0].reply
    assert await hung_up(server) and len(server.stored) == (step == ".")


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(("step", "reply"), [("MAIL", b"251 2.1.0 sure\r\n"),
                                             ("RCPT", b"252 2.1.5 will try\r\n")])
async def test_any_2xx_to_mail_or_rcpt_is_a_yes(rig: Rig, hostile, step: str,  # type: ignore[no-untyped-def]
                                                reply: bytes, pipelining: bool) -> None:
    """As Postfix reads them: the message goes out and only the reply to it decides.
    Taking such a 2xx for the final answer counted recipients delivered that were never
    sent the message."""
    ehlo = NORMAL["EHLO"] if pipelining else b"250 hostile\r\n"
    server = await hostile(EHLO=ehlo, **{step: reply})
    out = await deliver(rig, server)
    assert [(r.outcome, r.reply) for r in out] == [(OUTCOME_DELIVERED,
                                                    "250 2.0.0 ok queued")] * 2
    assert server.stored == [MSG]


@pytest.mark.parametrize("step", ["MAIL", "RCPT", "DATA", "."])
@pytest.mark.parametrize("garbage", [b"abc\r\n", b"99\n", b"99 ok\r\n", b"2500 ok\r\n",
                                     b"250ok\r\n", b"\n", b"\r\n"])
async def test_a_reply_that_is_not_a_reply_defers(rig: Rig, hostile, step: str,  # type: ignore[no-untyped-def]
                                                  garbage: bytes) -> None:
    """A reply line is three digits and then a space, a hyphen or its end (RFC 5321 4.2).
    Anything else means the session is out of step: deferred, never delivered on a "2500",
    never bounced on a "99", and the session is closed."""
    server = await hostile(**{step: garbage})
    out = await deliver(rig, server)
    assert [r.outcome for r in out] == [OUTCOME_DEFERRED] * 2, out[0].reply
    assert await hung_up(server) and rig.pool.idle_count == 0



def first_session(reply: bytes, then: bytes) -> Stream:
    """`reply` in the server's first session, `then` in later ones."""
    async def stream(server: Hostile, writer: asyncio.StreamWriter) -> bytes:
        sent = reply if server.sessions == 1 else then
        writer.write(sent)
        await writer.drain()
        return sent
    return stream


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize(("step", "reply"), [
    ("MAIL", b"250 2.1.0 ok\r\n250 2.1.0 ok again\r\n"),  # one reply too many
    ("DATA", b"250 ok\r\n"),  # neither 354 nor a refusal: is it reading a message now?
])
@pytest.mark.settings(command_timeout=2.0)
async def test_a_session_out_of_step_is_not_used_again(rig: Rig, hostile, step: str,  # type: ignore[no-untyped-def]
                                                       reply: bytes, pipelining: bool) -> None:
    """The first session's replies do not pair with the commands: its job is deferred and
    the session closed, so the next job opens a new one instead of talking into a server
    that reads its commands as message text (and waiting COMMAND_TIMEOUT for nothing)."""
    ehlo = NORMAL["EHLO"] if pipelining else b"250 hostile\r\n"
    server = await hostile(EHLO=ehlo, **{step: first_session(reply, NORMAL[step])})
    out = await deliver(rig, server)
    assert [r.outcome for r in out] == [OUTCOME_DEFERRED] * 2, out[0].reply
    assert rig.pool.idle_count == 0
    out = await deliver(rig, server, data=MSG + b"2")
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED] * 2, out[0].reply
    assert server.sessions == 2 and server.stored[-1] == MSG + b"2\r\n"



@pytest.mark.parametrize(("script", "outcomes", "text"), [
    ({"greet": b"554 5.7.1 go away\r\n"}, [OUTCOME_DEFERRED] * 2, "554 5.7.1 go away"),
    ({"EHLO": b"502 no\r\n", "HELO": b"550 5.7.1 not you\r\n"}, [OUTCOME_DEFERRED] * 2,
     "550 5.7.1 not you"),
    ({"MAIL": b"451 4.3.0 later\r\n"}, [OUTCOME_DEFERRED] * 2, "451 4.3.0 later"),
    ({"MAIL": b"553 5.7.1 not from you\r\n"}, [OUTCOME_FAILED] * 2, "553 5.7.1 not from you"),
    ({"DATA": b"451 4.3.0 no room\r\n"}, [OUTCOME_DEFERRED] * 2, "451 4.3.0 no room"),
    ({"DATA": b"554 5.5.1 no\r\n"}, [OUTCOME_FAILED] * 2, "554 5.5.1 no"),
    ({".": b"452 4.3.1 full\r\n"}, [OUTCOME_DEFERRED] * 2, "452 4.3.1 full"),
    ({".": b"550-5.7.1 spam\r\n550 5.7.1 really\r\n"}, [OUTCOME_FAILED] * 2,
     "550 5.7.1 spam 5.7.1 really"),
], ids=["greet-5xx", "helo-5xx", "mail-4xx", "mail-5xx", "data-4xx", "data-5xx", "dot-4xx",
        "dot-5xx"])
async def test_a_refusal_at_each_step_carries_the_remote_text(  # type: ignore[no-untyped-def]
        rig: Rig, hostile, script: dict[str, bytes], outcomes: list[int], text: str) -> None:
    """Before MAIL a refusal only moves on to the next host (qmail-remote and Postfix's
    smtp_skip_5xx_greeting: deferred); from MAIL on 4xx defers and 5xx bounces, with the
    remote's words in the result."""
    server = await hostile(**script)
    out = await deliver(rig, server)
    assert [r.outcome for r in out] == outcomes
    assert all(text in r.reply for r in out), out[0].reply


@pytest.mark.parametrize("policy", ["may", "must"])
@pytest.mark.parametrize("after", [b"", b"garbage, not a TLS record\r\n"], ids=["close", "junk"])
async def test_starttls_offered_but_the_handshake_fails(rig: Rig, hostile, policy: str,  # type: ignore[no-untyped-def]
                                                        after: bytes) -> None:
    """"may" goes again in clear (the broken handshake is no reason to hold mail), "must"
    defers with why."""
    async def broken(server: Hostile, writer: asyncio.StreamWriter) -> bytes:
        writer.write(b"220 2.0.0 go ahead\r\n" + after)
        await writer.drain()
        writer.close()
        return b""

    server = await hostile(EHLO=b"250-hostile\r\n250 STARTTLS\r\n", STAR=broken)
    await rig.routes(f"h.test:127.0.0.1:{server.port} tls={policy}")
    job = await rig.message(MSG, ["a@h.test"])
    [res] = await asyncio.wait_for(rig.deliverer.deliver(job, MSG), 60)
    if policy == "may":
        assert res.outcome == OUTCOME_DELIVERED, res.reply
        assert server.stored == [MSG] and server.sessions == 2
    else:
        assert res.outcome == OUTCOME_DEFERRED and "STARTTLS failed" in res.reply, res.reply
        assert server.stored == []



@pytest.mark.settings(command_timeout=1.0)
async def test_a_slow_but_steady_upload_is_not_cut_off(rig: Rig, hostile) -> None:
    """A server that takes the message slower than COMMAND_TIMEOUT in all but keeps taking
    it is alive (RFC 5321 4.5.3.2.5: the data timeout is per send; Postfix's
    smtp_data_xfer_timeout): a large message to a slow link must not fail on every try."""
    server = await hostile()
    server.slow_body = 0.03  # about 2 MB/s: 12 MB in some 6 s
    data = (b"x" * 76 + b"\r\n") * (12 * 1024 * 1024 // 78)
    out = await deliver(rig, server, data=data)
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED] * 2, out[0].reply
    assert server.stored == [data]



@pytest.mark.settings(command_timeout=1.0)
async def test_a_message_given_up_on_is_not_finished_later(rig: Rig, hostile) -> None:  # type: ignore[no-untyped-def]
    """A server that stops taking the message is left after COMMAND_TIMEOUT, and what was
    still unsent is dropped, ours and the kernel's: the transport's close() went on sending
    it, the final "." too, so a server that read on later stored the message we had
    counted deferred (delivered twice), and the socket and the buffer stayed for as long
    as the server kept reading."""
    server = await hostile()
    server.stall_body = 2.5  # then reads on: the rest at once
    data = (b"x" * 76 + b"\r\n") * (256 * 1024 // 78)
    out = await deliver(rig, server, data=data)
    assert [(r.outcome, r.enhanced_code) for r in out] == [(OUTCOME_DEFERRED, "4.4.2")] * 2
    assert await hung_up(server) and server.stored == [], out[0].reply


@pytest.mark.settings(command_timeout=1.0, min_data_rate=200_000)
async def test_a_tar_pit_that_takes_the_message_too_slowly_is_left(rig: Rig, hostile) -> None:  # type: ignore[no-untyped-def]
    """A server that takes a little of the message in every COMMAND_TIMEOUT never lets the
    idle timeout fire, and held the job and a worker slot for as long as it liked (300 s
    windows: a few KB each). Below MIN_DATA_RATE, once COMMAND_TIMEOUT's grace is spent,
    the transfer is given up and deferred, as Postfix's smtp_min_data_rate does. Scaled
    down: a 1 s timeout, 256 KB read at 50 KB/s (delivered after some 6 s before), a
    minimum of 200 KB/s."""
    server = await hostile(body_rate=50_000)
    data = (b"x" * 76 + b"\r\n") * (256 * 1024 // 78)
    out = await deliver(rig, server, data=data)
    assert [(r.outcome, r.enhanced_code) for r in out] == [(OUTCOME_DEFERRED, "4.4.2")] * 2
    assert "200000 bytes/s" in out[0].reply, out[0].reply
    assert await hung_up(server) and server.stored == [] and rig.pool.idle_count == 0


@pytest.mark.parametrize(("script", "outcomes"), [
    ({".": b"250 2.0.0 Nachricht angenommen, sch\xf6n\r\n"}, [OUTCOME_DELIVERED] * 2),
    ({"RCPT": b"550 5.1.1 Empf\xe4nger unbekannt\r\n"}, [OUTCOME_FAILED] * 2),
    ({"greet": b"554 5.7.1 Zugriff verweigert \xfc\r\n"}, [OUTCOME_DEFERRED] * 2),
], ids=["dot", "rcpt", "greet"])
async def test_a_reply_in_latin_1_is_kept_with_a_mark(rig: Rig, hostile,  # type: ignore[no-untyped-def]
                                                      script: dict[str, bytes],
                                                      outcomes: list[int]) -> None:
    """Many servers answer in Latin-1. The result carries the text with a "?" where a byte
    is not UTF-8 (qmail-remote and Postfix print "?" too); a protobuf string refuses the
    undecodable bytes, and the whole job was deferred as an internal error after the
    server had taken the message (so it went out again on every retry)."""
    server = await hostile(**script)
    out = await deliver(rig, server)
    assert [r.outcome for r in out] == outcomes, out[0].reply
    assert all("?" in r.reply and "\ufffd" not in r.reply for r in out), out[0].reply



async def test_explain_shows_a_latin_1_greeting(rig: Rig, hostile) -> None:  # type: ignore[no-untyped-def]
    """`mailyard route explain --probe` answers, with "?" for what is not UTF-8 (the
    gRPC reply is protobuf too)."""
    server = await hostile(greet=b"220 Gr\xfc\xdf Gott ESMTP\r\n")
    await rig.routes(f"h.test:127.0.0.1:{server.port}")
    request = routing_pb2.ExplainRequest(address="a@h.test", probe=True)
    out = await RoutingService(rig.deliverer).Explain(request, None)
    assert out.hops[0].answers and out.hops[0].greeting == "127.0.0.1: 220 Gr?? Gott ESMTP"



@pytest.mark.parametrize("step", ["MAIL", "RCPT", "."])
@pytest.mark.parametrize("reply", [b"354 go on\r\n", b"199 hm\r\n", b"999 what\r\n"])
async def test_a_code_outside_2xx_4xx_5xx_defers(rig: Rig, hostile, step: str,  # type: ignore[no-untyped-def]
                                                 reply: bytes) -> None:
    """A 354 to MAIL (replies out of order), a 1xx, a 9xx: no server said no, so nothing
    bounces (RFC 5321 4.2.1: terminate the transaction); it is tried again later."""
    server = await hostile(**{step: reply})
    out = await deliver(rig, server)
    assert [(r.outcome, r.enhanced_code) for r in out] == [(OUTCOME_DEFERRED, "4.0.0")] * 2, \
        out[0].reply


@pytest.mark.parametrize(("reply", "code"), [(b"550 5.7.1 sender refused\r\n", "5.7.1"),
                                             (b"451 4.7.1 later\r\n", "4.7.1")])
async def test_a_refused_mail_from_keeps_its_enhanced_code(rig: Rig, hostile,  # type: ignore[no-untyped-def]
                                                           reply: bytes, code: str) -> None:
    """A refused MAIL FROM gave its recipients 5.0.0 (4.0.0): the enhanced code was looked
    for at the start of "550 5.7.1 ...", where the reply code stands, so the bounce's
    Status lost it. Our own replies (553 5.6.7 no SMTPUTF8, 552 5.3.4) lost theirs too."""
    server = await hostile(MAIL=reply)
    out = await deliver(rig, server)
    assert [r.enhanced_code for r in out] == [code] * 2, out[0].reply


@pytest.mark.parametrize("size", [b"1" + b"0" * 5000, "\u00b2".encode(), b"12x"],
                         ids=["5000-digits", "superscript", "not-a-number"])
async def test_a_size_that_is_no_number_is_no_limit(rig: Rig, hostile, size: bytes) -> None:  # type: ignore[no-untyped-def]
    """An EHLO SIZE that is not a plain number is read as no limit, as Postfix reads it
    ("bad EHLO SIZE limit"): int() refuses 4,300 digits and a superscript "2", which
    isdigit() lets through, and the ValueError ended every job for that server as an
    internal error with a traceback."""
    server = await hostile(EHLO=b"250-hostile\r\n250 SIZE " + size + b"\r\n")
    out = await deliver(rig, server)
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED] * 2, out[0].reply
    assert server.stored == [MSG]


# -- the reply parser alone ----------------------------------------------------------

_TEXT = st.text("abz 09.-", max_size=20).map(str.strip)
_REPLY = st.tuples(st.integers(200, 599), st.lists(_TEXT, min_size=1, max_size=4))


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=200, deadline=None)
@given(replies=st.lists(_REPLY, min_size=1, max_size=5), points=st.lists(st.integers(0, 10**6)),
       eol=st.sampled_from([b"\r\n", b"\n"]))
async def test_replies_read_the_same_however_they_are_cut(
        replies: list[tuple[int, list[str]]], points: list[int], eol: bytes) -> None:
    wire = b"".join(b"".join(b"%d%s%s%s" % (code, b"-" if i < len(lines) - 1 else b" ",
                                            line.encode(), eol)
                             for i, line in enumerate(lines))
                    for code, lines in replies)
    parser = _Replies(asyncio.Protocol(), 10.0)
    for chunk in cut(wire, points):
        parser.data_received(chunk)
    got = await parser.read(len(replies))
    parser.done()
    assert not parser.failed
    assert [(r.code, r.message) for r in got] == [(c, "\n".join(t)) for c, t in replies]


@settings(max_examples=300, deadline=None)
@given(chunks=st.lists(st.one_of(st.binary(max_size=300),
                                 st.sampled_from([b"250-", b"\r\n", b"\n", b"250 ", b"x" * 9000,
                                                  b"250-\r\n" * 40000])),
                       max_size=40))
async def test_any_bytes_give_replies_or_a_failure_never_more(chunks: list[bytes]) -> None:
    """Whatever comes, no exception, and a reply that has not ended never holds more than
    MAX_PENDING octets (its lines counted at one octet at least: empty ones too)."""
    parser = _Replies(asyncio.Protocol(), 10.0)
    for chunk in chunks:
        parser.data_received(chunk)
        held = len(parser._lines) + sum(map(len, parser._lines)) + len(parser._partial)
        assert parser.failed or held <= MAX_PENDING
    parser.done()
