"""smtp-ingress's DNS: one c-ares channel (pycares through aiodns) for every lookup this
process makes (the client's PTR, DNSBL zones, SPF, DKIM keys, DMARC, null MX), with the
answers kept for their TTL.

Why c-ares and not dnspython: mail from a sender domain seen for the first time needs four
or five lookups, and dnspython built and parsed each one in Python, ~0.45 ms of CPU a query
on the event loop; c-ares does it in C for ~0.15 ms (bench.sender_auth). c-ares keeps its
own query cache, NXDOMAIN and empty answers included (RFC 2308: for the SOA's minimum), and
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

import aiodns
import aiodns.error
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


class Resolver:
    def __init__(self, servers: list[tuple[str, int]], timeout: float,
                 entries: int = CACHE_ENTRIES) -> None:
        self.servers = [server_spec(h, p) for h, p in servers]
        self.timeout = timeout
        self.entries = entries
        # (name, type) -> (monotonic expiry, values); dicts keep insertion order, so the
        # oldest entries are the first ones dropped when it is full
        self.cache: dict[tuple[str, str], tuple[float, list[Value]]] = {}
        self._channel: aiodns.DNSResolver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _resolver(self) -> aiodns.DNSResolver:
        # aiodns hands its answers to the loop it was made on: one channel per loop (a
        # service has one; tests run several in turn)
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            # c-ares's per-try timeout; the whole lookup is bounded below as well
            self._channel = aiodns.DNSResolver(self.servers or None, loop=loop,
                                               timeout=max(0.1, self.timeout / 2), tries=2)
            self._loop = loop
        return self._channel

    def cached(self, name: str, qtype: str) -> list[Value] | None:
        """The answer kept for (name, type), or None."""
        key = (name.lower().rstrip("."), qtype)
        hit = self.cache.get(key)
        if hit is None:
            return None
        if hit[0] <= time.monotonic():
            del self.cache[key]
            return None
        return hit[1]

    async def lookup(self, name: str, qtype: str, timeout: float | None = None) -> list[Value]:
        found = self.cached(name, qtype)
        if found is not None:
            return found
        try:
            async with asyncio.timeout(timeout if timeout is not None else self.timeout):
                answer = await self._resolver().query_dns(name, qtype)
        except TimeoutError:
            raise TempError("Timeout", timeout=True) from None
        except aiodns.error.DNSError as exc:
            code = exc.args[0] if exc.args else None
            if code in NO_RECORD:
                return []
            raise TempError(pycares.errno.errorcode.get(code, "DNS error"),
                            timeout=code == pycares.errno.ARES_ETIMEOUT) from None
        except (UnicodeError, ValueError):  # a name that is not one
            return []
        rtype = RECORD_TYPES[qtype]
        records = [r for r in answer.answer if r.type == rtype]
        values = [_value(qtype, r.data) for r in records]
        ttl = min((r.ttl for r in records), default=0)
        if ttl > 0:
            if len(self.cache) >= self.entries:
                self.cache.pop(next(iter(self.cache)))
            self.cache[(name.lower().rstrip("."), qtype)] = (time.monotonic() + ttl, values)
        return values

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
