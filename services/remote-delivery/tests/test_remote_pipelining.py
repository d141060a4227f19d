"""The transaction on the wire (transaction.py): pipelined groups, the serial fallback, odd
replies and dying servers, against a raw asyncio SMTP server on 127.0.0.1 that records
exactly what arrives and when it answers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from remote_rig import Rig, Smtp, server_tls

from mailyard.api.mail.v1.delivery_pb2 import (
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
)
from mailyard.remote_delivery.deliver import CONNECTION_DIED
from mailyard.remote_delivery.wire import stuffed

MSG = b"Subject: hi\r\n\r\nhello\r\n"


@dataclass
class Raw:
    """An SMTP server answering line by line. Replies are written when a read's lines are
    all handled (an RFC 2920 server flushes when its input runs dry); with `hold_for_data`
    nothing of a transaction is answered before its DATA arrived, so a client that waits
    for the MAIL reply never gets one. `die` maps the n-th MAIL this server saw (counted
    from 0, over all sessions) to how many replies of that transaction are sent before the
    server closes the connection (with `stall`: goes silent until the client hangs up)."""

    pipelining: bool = True
    rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply line
    data_reply: str = ""  # "" = 354 if a recipient was accepted, else 554
    empty_reply: str = "554 5.5.1 no valid recipients"  # to a DATA with no recipients
    hold_for_data: bool = False
    die: dict[int, int] = field(default_factory=dict)
    stall: bool = False
    hung_up: int = 0  # sessions the client closed while the server was silent
    tls: ssl.SSLContext | None = None
    port: int = 0
    reads: list[list[bytes]] = field(default_factory=list)  # command lines of each read
    held: list[bytes] = field(default_factory=list)  # lines that came in while holding
    stored: list[tuple[list[str], bytes]] = field(default_factory=list)  # rcpts, wire body
    empty_data: int = 0
    sessions: int = 0
    mails: int = 0
    tls_transactions: int = 0
    _server: asyncio.Server | None = None

    async def start(self) -> Raw:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       ) -> None:
        self.sessions += 1
        out: list[bytes] = []
        rcpts: list[str] = []
        budget: int | None = None  # replies left before dying
        body: list[bytes] | None = None
        encrypted = False
        held = False  # holding back this transaction's replies until its DATA
        writer.write(b"220 raw ESMTP\r\n")
        try:
            pending = b""
            while chunk := await reader.read(65536):
                lines = (pending + chunk).split(b"\r\n")
                pending = lines.pop()
                if body is None:
                    self.reads.append([line + b"\r\n" for line in lines])
                for raw in lines:
                    line = raw + b"\r\n"
                    if body is not None:
                        if line != b".\r\n":
                            body.append(line)
                            continue
                        if rcpts:
                            self.stored.append((rcpts, b"".join(body)))
                            out.append(b"250 2.0.0 ok queued")
                        else:
                            self.empty_data += 1
                            out.append(self.empty_reply.encode())
                        body, rcpts = None, []
                        continue
                    verb = line[:4].upper()
                    if held:
                        self.held.append(line)
                    if verb in (b"EHLO", b"HELO"):
                        ext = [b"raw", b"8BITMIME", b"SIZE 1000000"]
                        if self.pipelining:
                            ext.append(b"PIPELINING")
                        if self.tls is not None and not encrypted:
                            ext.append(b"STARTTLS")
                        out.append(b"\r\n".join(b"250-" + e for e in ext[:-1])
                                   + b"\r\n250 " + ext[-1])
                    elif verb == b"STAR" and self.tls is not None:
                        writer.write(b"220 go ahead\r\n")
                        await writer.drain()
                        await writer.start_tls(self.tls)
                        encrypted = True
                    elif verb == b"MAIL":
                        held = self.hold_for_data
                        if held:
                            self.held.append(line)
                        budget = self.die.get(self.mails)
                        self.mails += 1
                        rcpts = []
                        out.append(b"250 2.1.0 ok")
                    elif verb == b"RCPT":
                        address = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                        reply = self.rcpt.get(address, "250 2.1.5 ok")
                        if reply.startswith("25"):
                            rcpts.append(address)
                        out.append(reply.encode())
                    elif verb == b"DATA":
                        held = False
                        reply = self.data_reply or ("354 go ahead" if rcpts else
                                                    "554 5.5.1 no valid recipients")
                        out.append(reply.encode())
                        if reply.startswith("354"):
                            body = []
                            self.tls_transactions += encrypted
                    elif verb == b"QUIT":
                        writer.write(b"221 bye\r\n")
                        await writer.drain()
                        return
                    else:  # RSET, NOOP
                        rcpts = []
                        out.append(b"250 ok")
                if held or not out:
                    continue
                if budget is not None and budget < len(out):
                    writer.write(b"".join(r + b"\r\n" for r in out[:budget]))
                    await writer.drain()
                    if self.stall:
                        await reader.read()
                        self.hung_up += 1
                    return  # dies here, mid-group
                if budget is not None:
                    budget -= len(out)
                writer.write(b"".join(r + b"\r\n" for r in out))
                out = []
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw_servers() -> AsyncIterator[Callable[..., Awaitable[Raw]]]:
    started: list[Raw] = []

    async def start(**kw: Any) -> Raw:
        server = await Raw(**kw).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


def wire_group(sender: str, rcpts: list[str]) -> list[bytes]:
    return ([f"MAIL FROM:<{sender}> SIZE={len(MSG)}\r\n".encode()]
            + [f"RCPT TO:<{r}>\r\n".encode() for r in rcpts] + [b"DATA\r\n"])


@pytest.mark.settings(command_timeout=3.0)
async def test_mail_rcpts_and_data_go_out_in_one_group(rig: Rig, raw_servers) -> None:  # type: ignore[no-untyped-def]
    """The server answers nothing before DATA arrives: only a pipelining client gets on."""
    server = await raw_servers(hold_for_data=True)
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    rcpts = ["a@p.test", "b@p.test", "c@p.test"]
    job = await rig.message(MSG, rcpts)
    out = await rig.deliverer.deliver(job, MSG)
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED] * 3, out[0].reply
    assert server.held == wire_group("a@ours.test", rcpts)
    assert server.reads[1] == wire_group("a@ours.test", rcpts)  # one write, one read
    assert server.stored == [(rcpts, MSG)]
    assert out[0].reply == "250 2.0.0 ok queued" and out[0].enhanced_code == "2.0.0"


async def test_one_550_in_the_middle(rig: Rig, raw_servers) -> None:  # type: ignore[no-untyped-def]
    server = await raw_servers(rcpt={"b@p.test": "550 5.1.1 no such user"})
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["a@p.test", "b@p.test", "c@p.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED, OUTCOME_FAILED, OUTCOME_DELIVERED]
    assert out[1].reply == "550 5.1.1 no such user" and out[1].enhanced_code == "5.1.1"
    assert server.stored == [(["a@p.test", "c@p.test"], MSG)]  # the body once


@pytest.mark.parametrize("data_reply", ["354 go ahead", "554 5.5.1 no valid recipients"])
async def test_all_refused_then_the_session_goes_on(rig: Rig, raw_servers,  # type: ignore[no-untyped-def]
                                                    data_reply: str) -> None:
    """Every RCPT refused: nothing is sent as a message, whether the server still says 354
    to DATA (it gets a lone ".") or 554; the session is reused for the next job."""
    refuse = {"x@p.test": "550 5.1.1 unknown", "y@p.test": "553 5.7.1 not here"}
    server = await raw_servers(rcpt=refuse, data_reply=data_reply)
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["x@p.test", "y@p.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert [r.outcome for r in out] == [OUTCOME_FAILED, OUTCOME_FAILED]
    assert [r.reply for r in out] == ["550 5.1.1 unknown", "553 5.7.1 not here"]
    assert server.stored == []
    assert server.empty_data == (1 if data_reply.startswith("354") else 0)
    server.data_reply = ""
    job = await rig.message(MSG + b"2", ["ok@p.test"])
    [res] = await rig.deliverer.deliver(job, MSG)
    assert res.outcome == OUTCOME_DELIVERED, res.reply
    assert server.sessions == 1 and server.stored == [(["ok@p.test"], MSG)]


async def test_without_pipelining_one_command_per_reply(rig: Rig, raw_servers) -> None:  # type: ignore[no-untyped-def]
    server = await raw_servers(pipelining=False, rcpt={"b@p.test": "550 5.1.1 no"})
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["a@p.test", "b@p.test", "c@p.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED, OUTCOME_FAILED, OUTCOME_DELIVERED]
    commands = [read for read in server.reads[1:] if read]
    assert commands == [[line] for line in wire_group("a@ours.test",
                                                      ["a@p.test", "b@p.test", "c@p.test"])]
    assert server.stored == [(["a@p.test", "c@p.test"], MSG)]


async def test_no_accepted_recipient_without_pipelining_sends_no_data(  # type: ignore[no-untyped-def]
        rig: Rig, raw_servers) -> None:
    server = await raw_servers(pipelining=False, rcpt={"x@p.test": "450 4.2.1 later"})
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["x@p.test"])
    [res] = await rig.deliverer.deliver(job, MSG)
    assert res.outcome == OUTCOME_DEFERRED and res.reply == "450 4.2.1 later"
    sent = [line for read in server.reads for line in read]
    assert b"DATA\r\n" not in sent and b"RSET\r\n" in sent


@pytest.mark.parametrize("pipelining", [True, False])
async def test_the_body_is_normalised_and_stuffed_on_the_wire(rig: Rig, raw_servers,  # type: ignore[no-untyped-def]
                                                              pipelining: bool) -> None:
    server = await raw_servers(pipelining=pipelining)
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    stored = b".leading\r\nsmuggled\r.\r\nbare\n.\r\nlf\nlone cr\r..two\r\nend"
    job = await rig.message(stored, ["u@p.test"])
    [res] = await rig.deliverer.deliver(job, stored)
    assert res.outcome == OUTCOME_DELIVERED, res.reply
    # what the server read between 354 and the final dot: CRLF only, every leading dot doubled
    assert server.stored == [(["u@p.test"], b"..leading\r\nsmuggled\r\n..\r\nbare\r\n..\r\n"
                                            b"lf\r\nlone cr\r\n...two\r\nend\r\n")]


def test_stuffed() -> None:
    assert stuffed(b"a\r\n") == b"a\r\n.\r\n"
    assert stuffed(b".\r\n.x\r\n") == b"..\r\n..x\r\n.\r\n"


@pytest.mark.parametrize("replies", [0, 1, 2, 3, 4])
async def test_server_dies_in_the_middle_of_the_group(rig: Rig, raw_servers,  # type: ignore[no-untyped-def]
                                                      replies: int) -> None:
    """The connection dies after `replies` of MAIL, RCPT, RCPT, DATA were answered: every
    recipient is deferred with qmail's text, nothing counts as delivered; the message goes
    out only after the 354 (4: it arrived, its reply did not, so it is deferred too)."""
    server = await raw_servers(die={0: replies})
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["a@p.test", "b@p.test"])
    out = await rig.deliverer.deliver(job, MSG)
    died = CONNECTION_DIED.format(host="127.0.0.1")
    assert [(r.outcome, r.reply, r.enhanced_code) for r in out] == [
        (OUTCOME_DEFERRED, died, "4.4.2")] * 2
    assert len(server.stored) == (replies == 4) and rig.pool.idle_count == 0


async def test_reused_session_closed_before_mail_is_answered(rig: Rig, raw_servers) -> None:  # type: ignore[no-untyped-def]
    """A kept session the server dropped: a new connection, no result from the old one."""
    server = await raw_servers(die={1: 0})
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    for i in range(2):
        job = await rig.message(MSG + str(i).encode(), ["u@p.test"])
        [res] = await rig.deliverer.deliver(job, MSG)
        assert res.outcome == OUTCOME_DELIVERED, res.reply
    assert server.sessions == 2 and len(server.stored) == 2


async def test_421_to_a_recipient_closes_the_session(rig: Rig, raw_servers) -> None:  # type: ignore[no-untyped-def]
    server = await raw_servers(rcpt={"b@p.test": "421 4.3.2 shutting down"},
                               data_reply="354 go ahead")
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["a@p.test", "b@p.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert [r.outcome for r in out] == [OUTCOME_DEFERRED, OUTCOME_DEFERRED]
    assert out[1].reply == "421 4.3.2 shutting down"
    assert server.stored == [] and rig.pool.idle_count == 0


@pytest.mark.settings(command_timeout=3.0)
async def test_pipelined_after_starttls(rig: Rig, raw_servers, ca) -> None:  # type: ignore[no-untyped-def]
    server = await raw_servers(hold_for_data=True, tls=server_tls(ca, "mx.p.test"))
    await rig.routes(f"p.test:127.0.0.1:{server.port} tls=must")
    for i in range(2):  # a fresh and a reused TLS session
        job = await rig.message(MSG + str(i).encode(), ["a@p.test", "b@p.test"])
        out = await rig.deliverer.deliver(job, MSG)
        assert [r.outcome for r in out] == [OUTCOME_DELIVERED] * 2, out[0].reply
    assert server.tls_transactions == 2 and server.sessions == 1
    assert len(server.stored) == 2


@pytest.mark.settings(command_timeout=1.0)
async def test_a_silent_server_times_out_mid_group(rig: Rig, raw_servers) -> None:  # type: ignore[no-untyped-def]
    server = await raw_servers(die={0: 2}, stall=True)
    await rig.routes(f"p.test:127.0.0.1:{server.port}")
    job = await rig.message(MSG, ["a@p.test", "b@p.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert [(r.outcome, r.enhanced_code) for r in out] == [(OUTCOME_DEFERRED, "4.4.2")] * 2
    for _ in range(100):  # the session out of step is closed, not kept
        if server.hung_up:
            break
        await asyncio.sleep(0.02)
    assert server.hung_up == 1 and rig.pool.idle_count == 0 and server.stored == []


async def test_smtputf8_size_limit_and_unusable_addresses(rig: Rig, raw_servers,  # type: ignore[no-untyped-def]
                                                          smtp_servers) -> None:
    raw = await raw_servers()
    utf8 = Smtp(pipelining=True).start()
    smtp_servers.append(utf8)
    await rig.routes(f"p.test:127.0.0.1:{raw.port}\nu.test:127.0.0.1:{utf8.port}")
    # the server cannot take SMTPUTF8: refused here, nothing sent
    job = await rig.message(MSG, ["jörg@p.test"], smtputf8=True)
    [res] = await rig.deliverer.deliver(job, MSG)
    assert res.outcome == OUTCOME_FAILED and res.reply.startswith("553 5.6.7")
    # larger than its SIZE
    big = MSG + b"x" * 1_000_000
    job = await rig.message(big, ["u@p.test"])
    [res] = await rig.deliverer.deliver(job, big)
    assert res.outcome == OUTCOME_FAILED and res.reply.startswith("552 5.3.4 Message is")
    # an address that cannot go on a command line fails alone
    job = await rig.message(MSG, ["a@p.test", "x y@p.test"])
    out = await rig.deliverer.deliver(job, MSG)
    assert [r.outcome for r in out] == [OUTCOME_DELIVERED, OUTCOME_FAILED]
    assert out[1].reply == "553 5.1.3 address not usable in SMTP"
    assert raw.stored == [(["a@p.test"], MSG)]
    # a server with SMTPUTF8 gets it, pipelined
    job = await rig.message(MSG, ["jörg@u.test"], sender="zoë@ours.test", smtputf8=True)
    [res] = await rig.deliverer.deliver(job, MSG)
    assert res.outcome == OUTCOME_DELIVERED, res.reply
    got = utf8.messages[0]
    assert got.rcpt_tos == ["jörg@u.test"] and got.mail_from == "zoë@ours.test"
    assert "SMTPUTF8" in got.mail_options


async def test_smtputf8_mail_without_utf8_in_envelope_or_header_goes_to_any_server(
        rig: Rig, raw_servers) -> None:  # type: ignore[no-untyped-def]
    """RFC 6531 section 3.2 keeps only UTF-8 addresses and header fields from a server
    without SMTPUTF8. A client that asks for SMTPUTF8 on every message had its ASCII mail
    bounced 553 5.6.7 at every such server; it goes without the parameter now, as with
    Postfix. UTF-8 in an address or a header field still bounces, and nothing is sent."""
    raw = await raw_servers()
    await rig.routes(f"p.test:127.0.0.1:{raw.port}")
    body = "Subject: hi\r\n\r\nGr\u00fc\u00dfe, 8-bit body only\r\n".encode()
    job = await rig.message(body, ["u@p.test"], smtputf8=True)
    [res] = await rig.deliverer.deliver(job, body)
    assert res.outcome == OUTCOME_DELIVERED, res.reply
    assert raw.stored == [(["u@p.test"], body)]
    mails = [line for read in raw.reads for line in read if line.startswith(b"MAIL")]
    assert mails and not any(b"SMTPUTF8" in line for line in mails)
    header = "Subject: Gr\u00fc\u00dfe\r\n\r\nhi\r\n".encode()
    for data, recipient, sender in ((header, "u@p.test", "a@ours.test"),
                                    (body, "j\u00f6rg@p.test", "a@ours.test"),
                                    (body, "u@p.test", "zo\u00eb@ours.test")):
        job = await rig.message(data, [recipient], sender=sender, smtputf8=True)
        [res] = await rig.deliverer.deliver(job, data)
        assert res.outcome == OUTCOME_FAILED and res.reply.startswith("553 5.6.7"), data
        assert res.enhanced_code == "5.6.7"  # the bounce's Status
    assert len(raw.stored) == 1


async def test_smtputf8_mail_with_utf8_in_a_mime_part_header_still_needs_it(
        rig: Rig, raw_servers) -> None:  # type: ignore[no-untyped-def]
    """RFC 6531 section 3.2 keeps UTF-8 header fields "at any level within its MIME
    structure" from a server without SMTPUTF8: a part's header (a file name) or an enclosed
    message's. Only the top-level header was looked at, so such mail went out raw. A body
    of one part may be 8-bit (8BITMIME); a multipart or message/* one with 8-bit octets
    keeps needing SMTPUTF8."""
    raw = await raw_servers()
    await rig.routes(f"p.test:127.0.0.1:{raw.port}")
    part = ("Subject: hi\r\nMIME-Version: 1.0\r\nContent-Type:\r\n multipart/mixed; "
            "boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: "
            "attachment; filename=\"Gr\u00fc\u00dfe.txt\"\r\n\r\nhi\r\n--b--\r\n").encode()
    enclosed = ("Subject: fwd\r\nContent-Type: message/global\r\n\r\n"
                "From: j\u00f6rg@x.test\r\n\r\nhi\r\n").encode()
    for data in (part, enclosed):
        job = await rig.message(data, ["u@p.test"], smtputf8=True)
        [res] = await rig.deliverer.deliver(job, data)
        assert res.outcome == OUTCOME_FAILED and res.enhanced_code == "5.6.7", data
    assert raw.stored == []
    # the usual multipart, its parts encoded (quoted-printable, base64): all ASCII, it goes
    ascii_parts = part.replace("Gr\u00fc\u00dfe".encode(), b"=?utf-8?q?Gr=C3=BC=C3=9Fe?=")
    job = await rig.message(ascii_parts, ["u@p.test"], smtputf8=True)
    [res] = await rig.deliverer.deliver(job, ascii_parts)
    assert res.outcome == OUTCOME_DELIVERED, res.reply
