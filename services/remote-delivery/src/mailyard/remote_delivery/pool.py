"""SMTP connection reuse and the per-destination limit.

A connection that finished a transaction cleanly is kept for `idle_timeout` seconds and
handed to the next job for the same destination (address, port, TLS policy, AUTH user):
qmail opened one connection per message; with hundreds of messages to the same big MX a
reused session saves the TCP, EHLO and TLS round trips. At most `per_destination_limit`
connections per address:port are in use per replica, so one MX is never flooded by us.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field

import aiosmtplib

from mailyard.remote_delivery import metrics

log = logging.getLogger(__name__)

DestKey = tuple[str, int, str, str, str]  # address, port, tls policy, auth user, tls name


@dataclass
class Connection:
    smtp: aiosmtplib.SMTP
    key: DestKey
    host: str
    tls: bool = False
    uses: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    broken: bool = False

    @property
    def alive(self) -> bool:
        return not self.broken and self.smtp.is_connected


class Pool:
    def __init__(self, per_destination: int, idle_timeout: float, max_uses: int) -> None:
        self.per_destination = per_destination
        self.idle_timeout = idle_timeout
        self.max_uses = max_uses
        self._slots: dict[tuple[str, int], asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(self.per_destination))
        self._idle: dict[DestKey, list[Connection]] = defaultdict(list)
        self._sweeper: asyncio.Task[None] | None = None

    def slot(self, address: str, port: int) -> asyncio.Semaphore:
        """Held for the whole transaction on that destination."""
        return self._slots[(address, port)]

    def take(self, key: DestKey) -> Connection | None:
        """An idle, live connection for this destination, if one is kept."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.alive and now - conn.idle_since < self.idle_timeout:
                metrics.REUSED.inc()
                return conn
            _close(conn)
        return None

    def give_back(self, conn: Connection) -> None:
        conn.uses += 1
        if not conn.alive or conn.uses >= self.max_uses or self.idle_timeout <= 0:
            asyncio.get_running_loop().create_task(quit_quietly(conn))
            return
        conn.idle_since = time.monotonic()
        self._idle[conn.key].append(conn)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """Say QUIT to connections idle too long; stop when nothing is kept."""
        while any(self._idle.values()):
            await asyncio.sleep(min(1.0, self.idle_timeout))
            now = time.monotonic()
            for key, conns in list(self._idle.items()):
                keep = [c for c in conns if c.alive and now - c.idle_since < self.idle_timeout]
                for conn in conns:
                    if conn not in keep:
                        await quit_quietly(conn)
                self._idle[key] = keep

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        for conns in self._idle.values():
            for conn in conns:
                await quit_quietly(conn)
        self._idle.clear()

    @property
    def idle_count(self) -> int:
        return sum(len(c) for c in self._idle.values())


async def quit_quietly(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        if conn.smtp.is_connected:
            await asyncio.wait_for(conn.smtp.quit(), 5)
    _close(conn)


def _close(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.smtp.close()
