"""SPF evaluations whose answers are all in the resolver's cache run on the event loop;
anything that needs the network still goes to the thread pool, and the answers are the
same either way (real DNS server on loopback)."""

from __future__ import annotations

import asyncio

from mailyard.smtp_ingress.authdns import AuthDns
from mailyard.smtp_ingress.settings import Settings
from mailyard.smtp_ingress.spf_check import SpfChecker
from mailyard.testing import DnsServer


def checker(dns: DnsServer) -> tuple[AuthDns, SpfChecker]:
    authdns = AuthDns(Settings(dns_servers=dns.address, auth_dns_timeout=0.5))
    return authdns, SpfChecker(2, 16, 0.5, authdns.from_cache)


async def test_cached_answers_are_evaluated_without_the_pool(dns_server: DnsServer) -> None:
    dns_server.add("pass.test", "TXT", '"v=spf1 include:inc.test -all"')
    dns_server.add("inc.test", "TXT", '"v=spf1 ip4:127.0.0.0/8 -all"')
    dns_server.add("helo.test", "TXT", '"v=spf1 ip4:192.0.2.1 -all"')
    _, spf = checker(dns_server)
    first = [await spf.check("127.0.0.2", "a@pass.test", "helo.test"),
             await spf.check_helo("127.0.0.2", "helo.test"),
             await spf.check("127.0.0.2", "a@nxdomain.test", "helo.test")]
    assert [r.result for r in first] == ["pass", "fail", "none"]
    asked = len(dns_server.queries)
    # the pool is gone: only an evaluation on the event loop can still answer
    spf.close()
    again = [await spf.check("127.0.0.2", "a@pass.test", "helo.test"),
             await spf.check_helo("127.0.0.2", "helo.test"),
             await spf.check("127.0.0.2", "a@nxdomain.test", "helo.test")]
    assert again == first
    assert len(dns_server.queries) == asked                       # all from the cache
    # a name never looked up needs the network: with the pool gone that is a temperror
    # (the evaluation did not block the loop trying it there)
    dns_server.add("new.test", "TXT", '"v=spf1 ip4:127.0.0.2 -all"')
    missed = await spf.check("127.0.0.2", "a@new.test", "helo.test")
    assert missed.result == "temperror" and ("new.test", "TXT") not in dns_server.queries


async def test_a_miss_goes_to_the_pool_and_the_loop_stays_free(dns_server: DnsServer) -> None:
    dns_server.silent.add("slow.test")
    dns_server.add("fast.test", "TXT", '"v=spf1 ip4:127.0.0.2 -all"')
    _, spf = checker(dns_server)
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
    assert ticks >= 20   # the loop ran on while the slow lookup waited in a thread
    spf.close()
