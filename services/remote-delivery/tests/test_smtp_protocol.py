"""The protocol our aiosmtplib sessions (greeting, EHLO, STARTTLS, AUTH, RSET, QUIT) read
replies with: a reply is parsed once, however many reads bring it."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import aiosmtplib.smtp
import pytest
from aiosmtplib.protocol import SMTPProtocol
from hypothesis import given, settings
from hypothesis import strategies as st

import mailyard.remote_delivery.deliver  # noqa: F401  (installs the protocol, as the service does)


@pytest.fixture
async def protocol() -> AsyncIterator[SMTPProtocol]:
    """The protocol aiosmtplib.SMTP makes, on a real loopback connection to a server that
    sends nothing: the test hands it what reads would bring."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    transport, made = await loop.create_connection(
        lambda: aiosmtplib.smtp.SMTPProtocol(loop=loop), "127.0.0.1", port)
    yield made
    transport.close()
    server.close()


async def test_a_reply_read_line_by_line_is_parsed_once(protocol: SMTPProtocol,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosmtplib parsed the buffered reply again at every read that ended a line: 5,500
    empty "250-" lines of an EHLO reply, one per read, held the event loop 11 s
    (test_a_reply_that_never_ends_is_cut_off's EHLO case ran into the 10 s timeout, busy,
    instead of being cut off at 32 KB)."""
    parses = 0
    parse = SMTPProtocol._read_response_from_buffer

    def counted(self: SMTPProtocol) -> object:
        nonlocal parses
        parses += 1
        return parse(self)

    monkeypatch.setattr(SMTPProtocol, "_read_response_from_buffer", counted)
    for _ in range(2000):
        protocol.data_received(b"250-\r\n")
    protocol.data_received(b"250 SIZE 1000\r\n")
    reply = await protocol.read_response(timeout=1)
    assert (reply.code, reply.message) == (250, "SIZE 1000")  # empty lines add nothing
    assert parses == 1


_TEXT = st.text("abz 09.-", max_size=20).map(str.strip)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(_TEXT, min_size=1, max_size=6), code=st.integers(200, 599),
       points=st.lists(st.integers(0, 10**6)), eol=st.sampled_from([b"\r\n", b"\n"]),
       after=st.sampled_from([b"", b"250 next\r\n", b"250-par"]))
async def test_a_reply_reads_the_same_however_it_is_cut(
        lines: list[str], code: int, points: list[int], eol: bytes, after: bytes) -> None:
    """As aiosmtplib's own parser reads it, whatever the reads, and what came after it in
    the same read is kept as its parser keeps it (later reads it drops: nothing asked)."""
    wire = b"".join(b"%d%s%s%s" % (code, b"-" if i < len(lines) - 1 else b" ", line.encode(),
                                   eol) for i, line in enumerate(lines)) + after
    edges = sorted({0, len(wire), *(p % (len(wire) + 1) for p in points)})
    chunks = [wire[a:b] for a, b in itertools.pairwise(edges)]
    loop = asyncio.get_running_loop()
    got = []
    for kind in (aiosmtplib.smtp.SMTPProtocol, SMTPProtocol):
        protocol = kind(loop=loop)
        protocol._response_waiter = loop.create_future()  # as connection_made arms it
        protocol._response_pending = True
        for chunk in chunks:
            protocol.data_received(chunk)
        reply = await protocol.read_response(timeout=1)
        got.append((reply.code, reply.message, bytes(protocol._buffer)))
    assert got[0] == got[1] and got[0][0] == code
