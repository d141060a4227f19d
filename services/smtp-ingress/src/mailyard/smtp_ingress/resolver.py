"""smtp-ingress's DNS: one c-ares channel (pycares) on the event loop for every lookup this
process makes (the client's PTR, DNSBL zones, SPF, DKIM keys, DMARC, null MX), with the
answers kept for their TTL.

Why c-ares and not dnspython: mail from a sender domain seen for the first time needs four
or five lookups, and dnspython built and parsed each one in Python on the event loop; c-ares
does it in C. Its sockets are watched by the event loop itself (sock_state_cb), so an answer
is handled where it is awaited: pycares's default, which aiodns uses, runs c-ares in a thread
of its own and hands every answer across threads, twice the CPU. CPU per query missing every
cache, NSD on loopback: 54 us here, 105 us through aiodns, 465 us with dnspython. c-ares keeps
its own query cache, NXDOMAIN and empty answers included (RFC 2308: for the SOA's minimum), and
the positive answers are also kept here, already converted, so a repeat sender's records cost
a dictionary lookup. DNS_SERVERS ("host[:port]", comma separated) replaces /etc/resolv.conf.

lookup() answers a list: [] for NXDOMAIN, no record of the type, or a name DNS cannot carry;
TempError when there is no answer (timeout, SERVFAIL, refused): callers decide what unknown
means (never a reject).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from typing import Any

import pycares

CACHE_ENTRIES = 20_000
NO_RECORD = {pycares.errno.ARES_ENOTFOUND, pycares.errno.ARES_ENODATA,
             pycares.errno.ARES_EBADNAME, pycares.errno.ARES_EFORMERR,
             pycares.errno.ARES_EBADSTR}
RECORD_TYPES = {"A": pycares.QUERY_TYPE_A, "AAAA": pycares.QUERY_TYPE_AAAA,
                "MX": pycares.QUERY_TYPE_MX, "PTR": pycares.QUERY_TYPE_PTR,
                "TXT": pycares.QUERY_TYPE_TXT}

# what lookup() answers per type: TXT the record's strings joined (bytes), MX
# (preference, exchange without the final dot), A / AAAA the address, PTR the name
Value = Any


class TempError(Exception):
    """A DNS timeout or server failure: the answer is unknown (never a reason to reject)."""

    def __init__(self, reason: str, timeout: bool = False) -> None:
        super().__init__(reason)
        self.timeout = timeout


def server_spec(host: str, port: int) -> str:
    """c-ares's form of a server: 192.0.2.1:53, [2001:db8::1]:53."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reverse_name(ip: str) -> str:
    """The PTR name of an address (1.0.0.127.in-addr.arpa); ValueError if it is none."""
    return ipaddress.ip_address(ip).reverse_pointer


def _value(qtype: str, data: Any) -> Value:
    if qtype == "TXT":
        return bytes(data.data)
    if qtype == "MX":
        return (int(data.priority), str(data.exchange).rstrip("."))
    if qtype == "PTR":
        return str(data.dname).rstrip(".")
    return str(data.addr)


class _Failed(Exception):
    """c-ares's answer was an error code (pycares.errno)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _LoopChannel:
    """A c-ares channel whose sockets and timeouts the event loop drives."""

    def __init__(self, loop: asyncio.AbstractEventLoop, servers: list[str],
                 timeout: float) -> None:
        self.loop = loop
        options: dict[str, Any] = {"servers": servers} if servers else {}
        # c-ares's per-try timeout, two tries; lookup() bounds the whole as well
        self.channel = pycares.Channel(sock_state_cb=self._socket, timeout=timeout / 2,
                                       tries=2, **options)
        self.tick = min(max(timeout / 4, 0.05), 1.0)  # how often c-ares checks its timeouts
        self.readers: set[int] = set()
        self.writers: set[int] = set()
        self.timer: asyncio.TimerHandle | None = None

    def _socket(self, fd: int, readable: bool, writable: bool) -> None:
        for watching, wanted, add, remove, args in (
                (self.readers, readable, self.loop.add_reader, self.loop.remove_reader,
                 (fd, pycares.ARES_SOCKET_BAD)),
                (self.writers, writable, self.loop.add_writer, self.loop.remove_writer,
                 (pycares.ARES_SOCKET_BAD, fd))):
            if wanted and fd not in watching:
                add(fd, self.channel.process_fd, *args)
                watching.add(fd)
            elif not wanted and fd in watching:
                remove(fd)
                watching.discard(fd)
        if (self.readers or self.writers) and self.timer is None:
            self.timer = self.loop.call_later(self.tick, self._timeouts)

    def _timeouts(self) -> None:
        self.timer = None
        self.channel.process_fd(pycares.ARES_SOCKET_BAD, pycares.ARES_SOCKET_BAD)
        if self.readers or self.writers:
            self.timer = self.loop.call_later(self.tick, self._timeouts)

    def query(self, name: str, rtype: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self.loop.create_future()

        def answered(result: Any, error: int | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(_Failed(error))
            else:
                future.set_result(result)
        try:
            self.channel.query(name, rtype, callback=answered)
        except pycares.AresError as exc:   # a name c-ares cannot put in a query
            if not future.done():
                future.set_exception(_Failed(exc.args[0] if exc.args else
                                             pycares.errno.ARES_EBADNAME))
        return future

    def close(self) -> None:
        self.channel.cancel()   # pending queries end now, on this thread
        if self.timer is not None:
            self.timer.cancel()
        for fd in self.readers:
            self.loop.remove_reader(fd)
        for fd in self.writers:
            self.loop.remove_writer(fd)
        self.readers.clear()
        self.writers.clear()
        self.channel.close()


class Resolver:
    def __init__(self, servers: list[tuple[str, int]], timeout: float,
                 entries: int = CACHE_ENTRIES) -> None:
        self.servers = [server_spec(h, p) for h, p in servers]
        self.timeout = timeout
        self.entries = entries
        # (name, type) -> (monotonic expiry, values); dicts keep insertion order, so the
        # oldest entries are the first ones dropped when it is full
        self.cache: dict[tuple[str, str], tuple[float, list[Value]]] = {}
        self._channel: _LoopChannel | None = None

    def _on_loop(self) -> _LoopChannel:
        # a channel belongs to one event loop (a service has one; tests run several)
        loop = asyncio.get_running_loop()
        if self._channel is None or self._channel.loop is not loop:
            self._channel = _LoopChannel(loop, self.servers, self.timeout)
        return self._channel

    def cached(self, name: str, qtype: str) -> list[Value] | None:
        """The answer kept for (name, type), or None."""
        return self._kept((name.lower().rstrip("."), qtype))

    def _kept(self, key: tuple[str, str]) -> list[Value] | None:
        hit = self.cache.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self.cache[key]
            return None
        return hit[1]

    async def lookup(self, name: str, qtype: str, timeout: float | None = None) -> list[Value]:
        """The values (a list the cache shares: not to be changed), or [] / TempError."""
        key = (name.lower().rstrip("."), qtype)
        found = self._kept(key)
        if found is not None:
            return found
        rtype = RECORD_TYPES[qtype]
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                answer = await self._on_loop().query(name, rtype)
        except TimeoutError:
            raise TempError("Timeout", timeout=True) from None
        except _Failed as exc:
            if exc.code in NO_RECORD:
                return []
            raise TempError(pycares.errno.errorcode.get(exc.code, "DNS error"),
                            timeout=exc.code == pycares.errno.ARES_ETIMEOUT) from None
        except (UnicodeError, ValueError, TypeError):  # a name that is not one
            return []
        records = [r for r in answer.answer if r.type == rtype]
        values = [_value(qtype, r.data) for r in records]
        ttl = min((r.ttl for r in records), default=0)
        if ttl > 0:
            if len(self.cache) >= self.entries:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = (time.monotonic() + ttl, values)
        return values

    async def close(self) -> None:
        if self._channel is not None and not self._channel.loop.is_closed():
            self._channel.close()
        self._channel = None
