"""The process's resolver (c-ares on the event loop) against a real DNS server on loopback:
answers per type, no record, failures, its TTL cache, hostile names, closing mid-query."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailyard.smtp_ingress.resolver import Resolver, TempError, reverse_name
from mailyard.testing import DnsServer


@pytest.fixture
async def resolver() -> AsyncIterator[Callable[[DnsServer, float], Resolver]]:
    made: list[Resolver] = []

    def make(dns: DnsServer, timeout: float = 0.5) -> Resolver:
        made.append(Resolver([("127.0.0.1", dns.port)], timeout))
        return made[-1]
    yield make
    for each in made:
        await each.close()


async def test_answers_by_type(dns_server: DnsServer,
                               resolver: Callable[[DnsServer, float], Resolver]) -> None:
    dns_server.add("a.test", "TXT", '"v=spf1 " "-all"', '"second"')
    dns_server.add("a.test", "MX", "10 mx.a.test.")
    dns_server.add("null.test", "MX", "0 .")
    dns_server.add("a.test", "A", "192.0.2.7")
    dns_server.add("a.test", "AAAA", "2001:db8::7")
    dns_server.add(reverse_name("192.0.2.7"), "PTR", "host.a.test.")
    r = resolver(dns_server, 0.5)
    assert sorted(await r.lookup("a.test", "TXT")) == [b"second", b"v=spf1 -all"]
    assert await r.lookup("a.test", "MX") == [(10, "mx.a.test")]
    assert await r.lookup("A.Test.", "MX") == [(10, "mx.a.test")]   # one name, one entry
    assert await r.lookup("null.test", "MX") == [(0, "")]          # RFC 7505's "."
    assert await r.lookup("a.test", "A") == ["192.0.2.7"]
    assert await r.lookup("a.test", "AAAA") == ["2001:db8::7"]
    assert await r.lookup("7.2.0.192.in-addr.arpa", "PTR") == ["host.a.test"]
    assert await r.lookup("nowhere.test", "TXT") == []               # NXDOMAIN
    assert await r.lookup("a.test", "PTR") == []                     # no record of the type


async def test_failures_are_temp_errors_within_the_timeout(
        dns_server: DnsServer, resolver: Callable[[DnsServer, float], Resolver]) -> None:
    dns_server.servfail.add("broken.test")
    dns_server.silent.add("slow.test")
    r = resolver(dns_server, 0.4)
    with pytest.raises(TempError) as failed:
        await r.lookup("broken.test", "TXT")
    assert not failed.value.timeout
    started = time.monotonic()
    with pytest.raises(TempError) as slow:
        await r.lookup("slow.test", "TXT")
    assert slow.value.timeout and time.monotonic() - started < 1.5
    with pytest.raises(TempError):
        await r.lookup("slow.test", "TXT", timeout=0.1)


async def test_answers_are_kept_for_their_ttl(
        dns_server: DnsServer, resolver: Callable[[DnsServer, float], Resolver]) -> None:
    dns_server.add("kept.test", "TXT", '"one"')
    r = resolver(dns_server, 0.5)
    assert await r.lookup("kept.test", "TXT") == [b"one"]
    dns_server.add("kept.test", "TXT", '"two"')
    assert await r.lookup("KEPT.test.", "TXT") == [b"one"]           # from the cache
    assert dns_server.queries.count(("kept.test", "TXT")) == 1
    dns_server.ttl = 0                                               # TTL 0: never kept
    dns_server.add("fresh.test", "TXT", '"a"')
    await r.lookup("fresh.test", "TXT")
    await r.lookup("fresh.test", "TXT")
    assert dns_server.queries.count(("fresh.test", "TXT")) == 2
    small = resolver(dns_server, 0.5)
    small.entries = 2
    dns_server.ttl = 60
    for name in ("x1.test", "x2.test", "x3.test"):
        dns_server.add(name, "A", "192.0.2.1")
        await small.lookup(name, "A")
    assert len(small.cache) == 2 and small.cached("x1.test", "A") is None


async def test_close_with_a_query_pending_ends_it(
        dns_server: DnsServer, resolver: Callable[[DnsServer, float], Resolver]) -> None:
    dns_server.silent.add("slow.test")
    r = resolver(dns_server, 5)
    pending = asyncio.create_task(r.lookup("slow.test", "TXT"))
    await asyncio.sleep(0.05)
    await r.close()
    with pytest.raises(TempError):
        await asyncio.wait_for(pending, 1)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300) | st.sampled_from(["..", ".", "a" * 64 + ".test", "a\x00b.test",
                                                  "-.test", "xn--.test", "é" * 40 + ".test"]),
       st.sampled_from(["A", "AAAA", "MX", "PTR", "TXT"]))
def test_hostile_names_get_an_answer_or_a_temp_error(dns_server: DnsServer, name: str,
                                                     qtype: str) -> None:
    async def ask() -> None:
        r = Resolver([("127.0.0.1", dns_server.port)], 0.3)
        try:
            assert isinstance(await r.lookup(name, qtype), list)
        except TempError:
            pass
        finally:
            await r.close()
    asyncio.run(ask())
