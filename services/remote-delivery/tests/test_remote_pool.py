"""The connection pool's bookkeeping (pool.py) with real SMTP sessions on 127.0.0.1: a kept
connection goes to one job at a time, whatever the sweeper is doing meanwhile."""

from __future__ import annotations

import asyncio
import contextlib

import aiosmtplib

from mailyard.remote_delivery.pool import Connection, DestKey, Pool


class QuitGate:
    """An SMTP server that greets, answers EHLO and holds its reply to QUIT until
    `release` is set, so a client saying QUIT waits as long as the test wants."""

    def __init__(self) -> None:
        self.quit = asyncio.Event()  # a QUIT came in
        self.release = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> QuitGate:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _session(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 gate ESMTP\r\n")
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"QUIT":
                    self.quit.set()
                    await self.release.wait()
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                writer.write(b"250 gate\r\n" if verb in (b"EHLO", b"HELO")
                             else b"502 not here\r\n")
        writer.close()


async def _connect(gate: QuitGate, key: DestKey) -> Connection:
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=gate.port, start_tls=False,
                           local_hostname="client.test", timeout=10)
    await smtp.connect()
    await smtp.ehlo()
    return Connection(smtp, key, "gate.test")


async def test_a_connection_taken_while_the_sweeper_says_quit_is_not_handed_out_again() -> None:
    """Issue 20: the sweeper rebuilt the idle list after awaiting its QUITs and put back a
    connection a job had taken meanwhile; the next job got the same session while the
    first was in its transaction. A connection given back meanwhile was dropped."""
    gate = await QuitGate().start()
    key: DestKey = ("127.0.0.1", gate.port, "none", "", "gate.test")
    pool = Pool(10, idle_timeout=5.0, max_uses=100)
    try:
        old, fresh = await _connect(gate, key), await _connect(gate, key)
        pool.give_back(old)
        pool.give_back(fresh)
        old.idle_since -= 60  # idle too long: the sweeper says QUIT to it
        await asyncio.wait_for(gate.quit.wait(), 30)  # ... and waits for the reply
        assert pool.take(key) is fresh  # a job takes the fresh one meanwhile
        back = await _connect(gate, key)
        pool.give_back(back)  # and another job gives its connection back
        gate.release.set()
        # The sweeper's pass is over once the stale connection has left the idle lists
        # (before the fix that happened only after its QUIT was answered).
        for _ in range(1000):
            if all(conn is not old for conns in pool._idle.values() for conn in conns):
                break
            await asyncio.sleep(0.01)
        assert pool.take(key) is back  # never `fresh`: a job is using it
        assert pool.take(key) is None
        assert fresh.alive
        await fresh.smtp.quit()
    finally:
        gate.release.set()
        await pool.close()
        await gate.stop()
