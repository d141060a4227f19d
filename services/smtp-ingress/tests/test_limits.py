"""tcpserver limits, idle timeout and the DATA rate floor, over real sockets."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
from ingress_helpers import Client, MakeIngress, committed, session, wait_for

from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress
from mailyard.smtp_ingress.session import Session


async def test_per_ip_and_total_connection_limits(make_ingress: MakeIngress) -> None:
    ingress = await make_ingress(max_per_ip=2)
    first = await Client.connect(ingress.ports["smtp"])
    second = await Client.connect(ingress.ports["smtp"])
    assert (await first.reply()).startswith("220")
    assert (await second.reply()).startswith("220")
    third = await Client.connect(ingress.ports["smtp"])
    assert await third.reply() == R.TOO_MANY_CONNECTIONS
    assert await third.eof()
    await first.cmd("QUIT")
    await first.close()
    for _ in range(100):  # the slot comes back once the first session is gone
        if ingress.limits.total < 2:
            break
        await asyncio.sleep(0.02)
    fourth = await Client.connect(ingress.ports["smtp"])
    assert (await fourth.reply()).startswith("220")


async def test_total_connection_limit(make_ingress: MakeIngress) -> None:
    ingress = await make_ingress(max_connections=1)
    first = await Client.connect(ingress.ports["smtp"])
    assert (await first.reply()).startswith("220")
    second = await Client.connect(ingress.ports["submission"])
    assert await second.reply() == R.TOO_MANY_CONNECTIONS


async def test_idle_client_gets_451_timeout(make_ingress: MakeIngress) -> None:
    ingress = await make_ingress(idle_timeout=0.5)
    client = await Client.connect(ingress.ports["smtp"])
    assert (await client.reply()).startswith("220")
    await client.send("NOOP")  # half a command, then nothing
    assert await client.reply() == R.TIMEOUT
    assert await client.eof()


async def test_a_client_that_keeps_talking_outlives_idle_timeout(
        make_ingress: MakeIngress) -> None:
    """The idle timeout counts from the last read, not from the first: a session's one timer
    fires at the first deadline, finds it moved by the commands since, and waits again."""
    ingress = await make_ingress(idle_timeout=0.6)
    client = await session(ingress.ports["smtp"])
    for _ in range(8):  # ~1.6 s in all, well past the first deadline
        assert (await client.cmd("NOOP")).startswith("250")
        await asyncio.sleep(0.2)
    await client.send("NOOP")  # half a command, then silence: the timeout still fires
    assert await client.reply() == R.TIMEOUT
    assert await client.eof()


async def _data_session(ingress: Ingress) -> Client:
    client = await session(ingress.ports["smtp"])
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
        assert (await client.cmd(line)).startswith("250")
    assert await client.cmd("DATA") == R.GO_AHEAD
    return client


async def test_slow_upload_outlives_idle_timeout(make_ingress: MakeIngress, js: Any) -> None:
    """Every chunk restarts the idle timer (aiosmtpd only restarts it per command), so an
    upload longer than IDLE_TIMEOUT in total completes."""
    from ingress_helpers import seed_directory, wait_for

    # wide margins: a loaded CI machine may oversleep, and a missed chunk must not pass
    ingress = await make_ingress(idle_timeout=1.2, min_data_rate=1000, data_rate_grace=0.5)
    await seed_directory(js, "example.org", ["alice@example.org"])
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    client = await _data_session(ingress)
    line = b"z" * 1998 + b"\r\n"
    for _ in range(8):  # ~2.4 s in total (twice the idle timeout) at ~6.7 kB/s
        await client.send(line)
        await asyncio.sleep(0.3)
    await client.send(b".\r\n")
    assert (await client.reply()).startswith("250 ok ")
    assert len(committed(ingress)) == 1


async def test_slow_loris_loses_its_slot(make_ingress: MakeIngress, js: Any) -> None:
    from ingress_helpers import seed_directory, wait_for

    ingress = await make_ingress(idle_timeout=5, min_data_rate=1000, data_rate_grace=0.3)
    await seed_directory(js, "example.org", ["alice@example.org"])
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    client = await _data_session(ingress)

    async def dribble() -> None:
        try:
            for _ in range(50):
                await client.send(b"x")
                await asyncio.sleep(0.1)
        except ConnectionError:
            pass

    task = asyncio.create_task(dribble())
    assert await client.reply() == R.TIMEOUT
    task.cancel()
    assert committed(ingress) == []


async def test_pregreet_talker_is_refused_and_counted(make_ingress: MakeIngress) -> None:
    """GREET_PAUSE on the MX listener: a client that talks before the 220 gets 554 5.5.0;
    one that waits is greeted. Submission is never paused."""
    from prometheus_client import REGISTRY

    def refused() -> float:
        return REGISTRY.get_sample_value("mailyard_smtp_rejections_total",
                                         {"reason": "pregreet"}) or 0.0

    ingress = await make_ingress(greet_pause=0.5)
    before = refused()
    eager = await Client.connect(ingress.ports["smtp"])
    await eager.send("EHLO spam.test\r\n")  # at once, before any greeting
    assert await eager.reply() == R.PREGREET
    assert await eager.eof()
    assert refused() == before + 1
    patient = await Client.connect(ingress.ports["smtp"])
    assert await patient.reply() == R.greeting("mx.test")
    assert (await patient.cmd("EHLO client.test")).startswith("250")
    submission = await Client.connect(ingress.ports["submission"])
    await submission.send("EHLO client.test\r\n")
    assert await submission.reply() == R.greeting("mx.test")
    assert refused() == before + 1


async def _deaf_session(ingress: Ingress) -> tuple[asyncio.StreamWriter, Session]:
    """A client that reads nothing (a small window, and its transport reads nothing: asyncio
    would take 128 KB into memory first), and its session. The kernel's part of the
    server side fixed small: its own tuning gives it megabytes."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", ingress.ports["smtp"]))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.transport.pause_reading()
    writer.write(b"EHLO client.test\r\n")
    await wait_for(lambda: len(ingress.sessions) == 1)
    session = next(iter(ingress.sessions.values()))
    assert session is not None
    session.writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                                                       8192)
    return writer, session


@pytest.mark.both_loops
async def test_a_client_that_reads_no_replies_loses_its_slot(make_ingress: MakeIngress) -> None:
    """Replies go out before each read. A client that pipelines commands and reads none of
    their replies (its window shut) held its session in that write for ever: the idle
    timeout watched only reads, so not even the 451 timeout ended it. Writes wait at most
    IDLE_TIMEOUT too, then the connection is dropped (nothing more can reach the client)."""
    ingress = await make_ingress(idle_timeout=0.5, junk_command_limit=10**6)
    writer, session = await _deaf_session(ingress)
    writer.write(b"HELP\r\n" * 4000)  # 184 KB of replies: past the buffers
    await wait_for(lambda: not ingress.sessions)  # gone, and its connection slot with it
    assert ingress.limits.total == 0
    await wait_for(lambda: session.writer.get_extra_info("socket").fileno() == -1)
    writer.transport.abort()


@pytest.mark.both_loops
async def test_last_replies_a_client_never_reads_do_not_keep_the_socket(
        make_ingress: MakeIngress) -> None:
    """Replies left in the transport at the end (QUIT after pipelined commands, the client
    reading nothing) kept the socket open for ever after the session: the close waited
    for them without a bound. It now waits as long as a write may, then drops them."""
    ingress = await make_ingress(idle_timeout=0.5, junk_command_limit=10**6)
    writer, session = await _deaf_session(ingress)
    writer.write(b"HELP\r\n" * 1000 + b"QUIT\r\n")  # 46 KB of replies: the write does
    await wait_for(lambda: not ingress.sessions)        # not wait (the mark is 64 KB)
    await wait_for(lambda: session.writer.get_extra_info("socket").fileno() == -1)
    writer.transport.abort()
