"""tcpserver limits, idle timeout and the DATA rate floor, over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from ingress_helpers import Client, MakeIngress, committed, session

from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress


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
