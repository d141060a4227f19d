"""SPF on the event loop: pyspf's lookups are answered from the evaluation's own answers and
the resolver's cache, a miss is fetched asynchronously and the evaluation run again (real DNS
server on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import spf
from hypothesis import given, settings
from hypothesis import strategies as st

from mailyard.smtp_ingress.authdns import AuthDns
from mailyard.smtp_ingress.resolver import Resolver
from mailyard.smtp_ingress.spf_check import PYSPF_TOPLAB, SpfChecker
from mailyard.testing import DnsServer


@pytest.fixture
async def checker() -> AsyncIterator[Callable[[DnsServer], SpfChecker]]:
    made: list[Resolver] = []

    def make(dns: DnsServer) -> SpfChecker:
        made.append(Resolver([("127.0.0.1", dns.port)], 0.5))
        return SpfChecker(AuthDns(made[-1], 0.5))
    yield make
    for resolver in made:
        await resolver.close()


async def test_results_and_a_repeat_sender_needs_no_query(dns_server: DnsServer,
        checker: Callable[[DnsServer], SpfChecker]) -> None:
    dns_server.add("pass.test", "TXT", '"v=spf1 include:inc.test -all"')
    dns_server.add("inc.test", "TXT", '"v=spf1 mx:mx.inc.test a:a.inc.test -all"')
    dns_server.add("mx.inc.test", "MX", "10 host.inc.test.")
    dns_server.add("host.inc.test", "A", "192.0.2.9")
    dns_server.add("a.inc.test", "A", "127.0.0.2")
    dns_server.add("helo.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    dns_server.add("soft.test", "TXT", '"v=spf1 ~all"')
    dns_server.add("bad.test", "TXT", '"v=spf1 ip4:300.1.1.1 -all"')
    dns_server.servfail.add("broken.test")
    spf = checker(dns_server)
    asked = [await spf.check("127.0.0.2", "a@pass.test", "helo.test"),
             await spf.check_helo("127.0.0.2", "helo.test"),
             await spf.check("127.0.0.2", "a@nxdomain.test", "helo.test"),
             await spf.check("127.0.0.2", "a@soft.test", "helo.test"),
             await spf.check("127.0.0.2", "a@bad.test", "helo.test"),
             await spf.check("127.0.0.2", "a@broken.test", "helo.test"),
             await spf.check("127.0.0.2", "", "helo.test")]
    assert [(r.result, r.domain, r.identity) for r in asked] == [
        ("pass", "pass.test", "mailfrom"), ("fail", "helo.test", "helo"),
        ("none", "nxdomain.test", "mailfrom"), ("softfail", "soft.test", "mailfrom"),
        ("permerror", "bad.test", "mailfrom"), ("temperror", "broken.test", "mailfrom"),
        ("fail", "helo.test", "helo")]
    # every lookup of the include chain was made once, in order of need
    assert dns_server.queries[:5] == [("pass.test", "TXT"), ("inc.test", "TXT"),
                                      ("mx.inc.test", "MX"), ("host.inc.test", "A"),
                                      ("a.inc.test", "A")]
    before = len(dns_server.queries)
    again = await spf.check("127.0.0.2", "a@pass.test", "helo.test")
    assert again == asked[0] and len(dns_server.queries) == before   # all from the cache


async def test_a_slow_lookup_leaves_the_loop_free(dns_server: DnsServer,
        checker: Callable[[DnsServer], SpfChecker]) -> None:
    dns_server.silent.add("slow.test")
    dns_server.add("fast.test", "TXT", '"v=spf1 ip4:127.0.0.2 -all"')
    spf = checker(dns_server)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1
    ticker = asyncio.create_task(tick())
    slow, fast = await asyncio.gather(spf.check("127.0.0.2", "a@slow.test", "h.test"),
                                      spf.check("127.0.0.2", "a@fast.test", "h.test"))
    ticker.cancel()
    assert (slow.result, fast.result) == ("temperror", "pass")
    assert ticks >= 20   # the loop ran on while the slow lookup waited


async def test_explanation_lookup_that_pyspf_swallows_is_made(dns_server: DnsServer,
        checker: Callable[[DnsServer], SpfChecker]) -> None:
    # pyspf reads exp= inside a bare except: the miss is fetched all the same
    dns_server.add("exp.test", "TXT", '"v=spf1 -all exp=why.exp.test"')
    dns_server.add("why.exp.test", "TXT", '"%{i} may not send for %{d}"')
    result = await checker(dns_server).check("127.0.0.2", "a@exp.test", "h.test")
    assert result.result == "fail"
    assert result.explanation == "127.0.0.2 may not send for exp.test"


async def test_a_lookup_bomb_costs_a_bounded_number_of_queries(dns_server: DnsServer,
        checker: Callable[[DnsServer], SpfChecker]) -> None:
    names = [f"i{i}.bomb.test" for i in range(30)]
    dns_server.add_txt("bomb.test", "v=spf1 " + " ".join(f"include:{n}" for n in names)
                       + " -all")
    for n in names:
        dns_server.add(n, "TXT", '"v=spf1 mx a ptr -all"')
        dns_server.add(n, "MX", *(f"{k} mx{k}.{n}." for k in range(12)))
    result = await checker(dns_server).check("127.0.0.2", "a@bomb.test", "h.test")
    assert result.result == "permerror"          # RFC 7208's 10 lookups
    assert len(dns_server.queries) <= 30


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "Z", "7", "-", ".", "%", "{", "}", "_", "!", "ab",
                                 "%{d}", ".com", "1.2"]), max_size=30).map("".join))
def test_the_label_pattern_finds_what_pyspfs_finds(text: str) -> None:
    assert spf.RE_TOPLAB.split(text) == PYSPF_TOPLAB.split(text)


@pytest.mark.timeout(30)
def test_the_label_pattern_is_one_pass() -> None:
    # pyspf's: 8,000 letters 0.8 s, these hours
    for arg, valid in (("x." + "a" * 500_000 + "!", False), ("x." + "1" * 500_000 + "a.", True),
                       ("." + "a-" * 300_000, False), ("x." + "1" * 500_000, False)):
        assert (spf.RE_TOPLAB.split(arg)[-1] == "") == valid
