"""SMTP connection reuse and the per-destination limit.

A connection that finished a transaction cleanly is kept for `idle_timeout` seconds and
handed to the next job for the same destination (address, port, TLS policy, AUTH user):
qmail opened one connection per message; with hundreds of messages to the same big MX a
reused session saves the TCP, EHLO and TLS round trips.

The per-destination limit L (PER_DESTINATION_LIMIT) is cluster-wide: every replica
announces itself in KV bucket `remote_members` (see membership.py) and allows
a = max(1, ceil(L / N)) transactions at once per address:port, N being the members it
counts (itself included, never 0). When all replicas count the same N the cluster total per
destination is N * a: exactly L when N divides L, N when N >= L (each replica keeps one),
and never more than L + N - 1 (rounding up: L=10 gives 10, 12, 12, 10 for N = 2, 3, 4, 5
and 20 for N = 20). Outside that steady state:
- a replica sees a join or a graceful leave at its next heartbeat (MEMBER_TTL / 3) and a
  crashed member only after MEMBER_TTL; a crashed member still counted only lowers a;
- a smaller a never cancels transactions already running, new ones wait until the replica
  is under it: after a join the total can exceed the bound by the older replicas' former
  shares until their next heartbeat and the end of the transactions they had started;
- without KV a replica keeps its last count (one that never reached KV counts itself
  alone: the full L, as with one replica).
Only transactions in progress count: a kept idle session holds no slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
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


def allowance(limit: int, members: int) -> int:
    """This replica's share of a cluster-wide per-destination limit."""
    return max(1, math.ceil(limit / max(1, members)))


class Limiter:
    """A counting limiter whose size changes live (a resizable asyncio.Semaphore).

    Shrinking never takes a slot back from a holder: new acquisitions wait until fewer than
    `limit` are held. Growing lets waiters in at once, first come first served.
    """

    def __init__(self, limit: int) -> None:
        self._limit = max(1, limit)
        self.held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def limit(self) -> int:
        return self._limit

    @limit.setter
    def limit(self, value: int) -> None:
        self._limit = max(1, value)
        self._wake()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def idle(self) -> bool:
        return self.held == 0 and not self.waiting

    async def acquire(self) -> None:
        if self.held < self._limit and not self.waiting:
            self.held += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted, then cancelled before it could be used
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.held -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.held < self._limit:
            waiter = self._waiters.popleft()
            if waiter.done():  # cancelled while waiting
                continue
            self.held += 1
            waiter.set_result(None)


class Pool:
    """`per_destination` is the cluster-wide limit L; `set_members` gives this replica's
    share of it (see the module docstring)."""

    def __init__(self, per_destination: int, idle_timeout: float, max_uses: int) -> None:
        self.per_destination = per_destination
        self.idle_timeout = idle_timeout
        self.max_uses = max_uses
        self.members = 1
        self.allowance = allowance(per_destination, 1)
        self._slots: dict[tuple[str, int], Limiter] = {}
        self._idle: dict[DestKey, list[Connection]] = defaultdict(list)
        self._sweeper: asyncio.Task[None] | None = None
        metrics.DESTINATION_LIMIT.set(self.allowance)

    def set_members(self, members: int) -> None:
        """Resize every destination's limiter to L / members (live, never below 1)."""
        self.members = max(1, members)
        share = allowance(self.per_destination, self.members)
        if share == self.allowance:
            return
        log.info("per-destination allowance changed",
                 extra={"members": self.members, "allowance": share})
        self.allowance = share
        metrics.DESTINATION_LIMIT.set(share)
        for limiter in self._slots.values():
            limiter.limit = share

    def limiter(self, address: str, port: int) -> Limiter:
        found = self._slots.get((address, port))
        if found is None:
            found = self._slots[(address, port)] = Limiter(self.allowance)
        return found

    @contextlib.asynccontextmanager
    async def slot(self, address: str, port: int) -> AsyncIterator[None]:
        """Held for the whole transaction on that destination."""
        dest = (address, port)
        limiter = self.limiter(address, port)
        try:
            await limiter.acquire()
            try:
                yield
            finally:
                limiter.release()
        finally:
            if limiter.idle and self._slots.get(dest) is limiter:
                del self._slots[dest]  # no state kept for destinations not in use

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
        """Say QUIT to connections idle too long; stop when nothing is kept.

        The stale ones leave the idle lists before the first QUIT is awaited. The lists
        used to be rebuilt after the QUITs, which put back a connection a job had taken
        meanwhile: the next job for that destination got the same session while the
        first was still in its transaction, took the first one's replies as its own and
        left it waiting for replies that had gone elsewhere (issue 20: in the mixed bench
        a job sat in its transaction with no connection open, and a message never reached
        the next hop). A connection given back meanwhile was dropped without a QUIT."""
        while any(self._idle.values()):
            await asyncio.sleep(min(1.0, self.idle_timeout))
            now = time.monotonic()
            stale: list[Connection] = []
            for key, conns in list(self._idle.items()):
                keep: list[Connection] = []
                for conn in conns:
                    fresh = conn.alive and now - conn.idle_since < self.idle_timeout
                    (keep if fresh else stale).append(conn)
                if keep:
                    conns[:] = keep
                else:
                    del self._idle[key]
            for conn in stale:
                await quit_quietly(conn)

    async def close(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        kept = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()  # first, for the same reason as in _sweep
        for conn in kept:
            await quit_quietly(conn)

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
