"""DNS for the sender checks (SPF, DKIM keys, DMARC, null MX): the resolver settings
(DNS_SERVERS, AUTH_DNS_TIMEOUT) apply to every lookup, including those pyspf makes.

dkimpy and the DMARC and MX lookups use dnspython's async resolver on the event loop.
pyspf is synchronous (its lookups are recursive: include:, a:, mx:), so it runs in a small
thread pool with its own synchronous resolver pointed at the same servers; the number of
SPF evaluations waiting for that pool is bounded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import spf

from mailyard.smtp_ingress.settings import Settings

CACHE_ENTRIES = 20000


class TempError(Exception):
    """A DNS timeout or server failure: the answer is unknown (never a reason to reject)."""


class CacheMiss(Exception):
    """An SPF lookup not answered from the cache while pyspf runs on the event loop
    (spf_check tries there first): the evaluation goes to the thread pool instead."""


def _configure(resolver: dns.resolver.BaseResolver, servers: list[tuple[str, int]],
               timeout: float) -> None:
    if servers:
        resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
    resolver.lifetime = timeout
    resolver.timeout = timeout
    # answers are kept for their TTL: most mail comes from a few big senders, whose SPF,
    # DMARC and key records then cost a dictionary lookup instead of a query (a query
    # costs ~0.6-1.2 ms of CPU in dnspython; bench/dkim_cost.py)
    resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)


class AuthDns:
    def __init__(self, settings: Settings) -> None:
        servers = settings.dns_nameservers()
        self.timeout = settings.auth_dns_timeout
        self.resolver = dns.asyncresolver.Resolver(configure=not servers)
        _configure(self.resolver, servers, self.timeout)
        self.sync_resolver = dns.resolver.Resolver(configure=not servers)
        _configure(self.sync_resolver, servers, self.timeout)
        # pyspf looks names up through its module-level DNSLookup; this process has one
        # set of resolver settings, so pointing it at ours is process-wide by design.
        spf.DNSLookup = self.spf_lookup
        # An SPF evaluation whose answers are all cached needs no thread: spf_check runs it
        # on the event loop first, with lookups answered by this resolver, which shares the
        # cache and has no server, so a miss raises at once instead of blocking the loop.
        self.cache_only = dns.resolver.Resolver(configure=False)
        self.cache_only.nameservers = []
        self.cache_only.cache = self.sync_resolver.cache
        self._here = threading.local()

    @contextmanager
    def from_cache(self) -> Iterator[None]:
        """pyspf's lookups in this thread, while in the block, come from the cache only
        (a miss raises CacheMiss)."""
        self._here.cache_only = True
        try:
            yield
        finally:
            self._here.cache_only = False

    async def txt(self, name: str) -> list[bytes]:
        """TXT strings of a name, each record's strings joined; [] when none.
        Raises TempError on timeout / SERVFAIL."""
        try:
            answer = await self.resolver.resolve(name, "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise TempError(type(exc).__name__) from None
        except dns.exception.DNSException:  # a bad name and friends: no record
            return []
        return [b"".join(r.strings) for r in answer]

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        try:
            answer = await self.resolver.resolve(domain, "MX")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise TempError(type(exc).__name__) from None
        except dns.exception.DNSException:
            return []
        return [(r.preference, r.exchange.to_text()) for r in answer]

    async def dkim_key(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkimpy's dnsfunc: the key record's text, or None. A timeout raises TempError
        so the signature counts as temperror, not as a missing key."""
        records = await self.txt(name.decode("ascii", "replace"))
        return records[0] if records else None

    def dkim_key_sync(self, name: bytes, timeout: float = 5) -> bytes | None:
        """dkim_key for dkimpy's synchronous verifiers (ARC), in a worker thread."""
        try:
            answer = self.sync_resolver.resolve(name.decode("ascii", "replace"), "TXT",
                                                lifetime=min(timeout, self.timeout))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise TempError(type(exc).__name__) from None
        except dns.exception.DNSException:
            return None
        records = [b"".join(r.strings) for r in answer]
        return records[0] if records else None

    def _in_cache(self, name: str, qtype: str) -> bool:
        """An answer, or a cached NXDOMAIN (dnspython keeps those under ANY), is there."""
        cache = self.sync_resolver.cache
        try:
            qname = dns.name.from_text(name)
            rdtype = dns.rdatatype.from_text(qtype)
        except dns.exception.DNSException:
            return True  # a bad name: resolve() says so, without the network
        return cache is not None and any(
            cache.get((qname, t, dns.rdataclass.IN)) is not None
            for t in (rdtype, dns.rdatatype.ANY))

    def spf_lookup(self, name: str, qtype: str, strict: object = True,
                   timeout: float = 30) -> list[tuple[tuple[str, str], object]]:
        """pyspf's DNSLookup driver (same shape as its dnspython one), on our resolver."""
        out: list[tuple[tuple[str, str], object]] = []
        cache_only = getattr(self._here, "cache_only", False)
        if cache_only and not self._in_cache(name, qtype):
            raise CacheMiss(name)  # before dnspython builds a query it cannot send
        resolver = self.cache_only if cache_only else self.sync_resolver
        try:
            answer = resolver.resolve(name, qtype, lifetime=min(timeout, self.timeout))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return out
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            if cache_only:  # the cache-only resolver has no server to fail
                raise CacheMiss(name) from None
            raise spf.TempError(f"DNS {type(exc).__name__}") from None
        for rdata in answer:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rdata.strings))
        return out
