"""rblsmtpd semantics against a real (tiny) DNS server on loopback."""

from __future__ import annotations

from typing import Any

from ingress_helpers import MakeIngress, put_control, seed_directory, session, wait_for
from prometheus_client import REGISTRY

from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress
from mailyard.testing import DnsServer


async def _listed(make_ingress: MakeIngress, js: Any, dns_server: DnsServer,
                  **kw: Any) -> Ingress:
    await put_control(js, "dnsbl", "quiet.test\nbl.test\n")
    await seed_directory(js, "example.org", ["alice@example.org"])
    dns_server.add("1.0.0.127.bl.test", "A", "127.0.0.2")
    dns_server.add("1.0.0.127.bl.test", "TXT", '"Listed, see https://bl.test/127.0.0.1"')
    # long enough that a loaded machine's late answer is still an answer (a listing
    # missed would let the client through); only quiet.test's silence waits it out
    ingress = await make_ingress(dns_servers=f"127.0.0.1:{dns_server.port}", dnsbl_timeout=2.0,
                                 **kw)
    await wait_for(lambda: ingress.directory.accepts("alice@example.org")
                   and ingress.control.lines("dnsbl") != [])
    return ingress


async def test_listed_client_gets_the_txt_text(make_ingress: MakeIngress, js: Any,
                                               dns_server: DnsServer) -> None:
    ingress = await _listed(make_ingress, js, dns_server)
    before = REGISTRY.get_sample_value("mailyard_smtp_dnsbl_hits_total", {"zone": "bl.test"})
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<alice@example.org>") == \
        R.dnsbl("Listed, see https://bl.test/127.0.0.1", permanent=False)
    after = REGISTRY.get_sample_value("mailyard_smtp_dnsbl_hits_total", {"zone": "bl.test"})
    assert after == (before or 0) + 1


async def test_permanent_mode_and_timeouts(make_ingress: MakeIngress, js: Any,
                                           dns_server: DnsServer) -> None:
    dns_server.silent.add("1.0.0.127.quiet.test")
    ingress = await _listed(make_ingress, js, dns_server, dnsbl_permanent=True)
    timeouts = REGISTRY.get_sample_value("mailyard_smtp_dnsbl_timeouts_total") or 0
    client = await session(ingress.ports["smtp"])
    await client.cmd("MAIL FROM:<a@b.test>")
    assert await client.cmd("RCPT TO:<alice@example.org>") == \
        R.dnsbl("Listed, see https://bl.test/127.0.0.1", permanent=True)
    assert (REGISTRY.get_sample_value("mailyard_smtp_dnsbl_timeouts_total") or 0) > timeouts
    # Only the timing-out list configured: the client is let through.
    await put_control(js, "dnsbl", "quiet.test\n")
    await wait_for(lambda: ingress.control.lines("dnsbl") == ["quiet.test"])
    client = await session(ingress.ports["smtp"])
    await client.cmd("MAIL FROM:<a@b.test>")
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.RCPT_OK


async def test_exempt_by_rule(make_ingress: MakeIngress, js: Any, dns_server: DnsServer,
                              relay_auth: str) -> None:
    await put_control(js, "tcp.smtp", '127.0.0.1:allow,RBLSMTPD=""\n')
    ingress = await _listed(make_ingress, js, dns_server, relay_auth_addr=relay_auth,
                            relay_auth_timeout=2.0)
    client = await session(ingress.ports["smtp"])
    await client.cmd("MAIL FROM:<a@b.test>")
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.RCPT_OK
    await put_control(js, "tcp.smtp", '127.0.0.1:allow,RBLSMTPD="-go away"\n')
    for _ in range(200):
        client = await session(ingress.ports["smtp"])
        await client.cmd("MAIL FROM:<a@b.test>")
        reply = await client.cmd("RCPT TO:<alice@example.org>")
        if reply != R.RCPT_OK:
            break
    assert reply == R.dnsbl("go away", permanent=True)


async def test_answers_are_cached_for_their_ttl(make_ingress: MakeIngress, js: Any,
                                                dns_server: DnsServer) -> None:
    """A client that comes back costs no new PTR or DNSBL query while the answers live."""
    dns_server.add("1.0.0.127.in-addr.arpa", "PTR", "client.example.")
    ingress = await _listed(make_ingress, js, dns_server, reverse_dns=True)
    for _ in range(3):
        client = await session(ingress.ports["smtp"])
        await client.cmd("MAIL FROM:<a@b.test>")
        await client.cmd("RCPT TO:<alice@example.org>")
        await client.close()
    ptr = [q for q in dns_server.queries if q == ("1.0.0.127.in-addr.arpa", "PTR")]
    listed = [q for q in dns_server.queries if q == ("1.0.0.127.bl.test", "A")]
    assert len(ptr) == 1 and len(listed) == 1, dns_server.queries


async def test_a_reverse_lookup_without_answer_is_not_repeated_at_once(
        make_ingress: MakeIngress, js: Any, dns_server: DnsServer) -> None:
    dns_server.silent.add("1.0.0.127.in-addr.arpa")
    ingress = await make_ingress(dns_servers=f"127.0.0.1:{dns_server.port}", dnsbl_timeout=0.3,
                                 reverse_dns=True)
    first = await session(ingress.ports["smtp"])  # EHLO starts the lookup
    await wait_for(lambda: "127.0.0.1" in ingress.dnsbl._ptr_failed)  # it timed out
    for _ in range(2):
        client = await session(ingress.ports["smtp"])
        assert await client.cmd("NOOP") == R.OK  # the lookup (if any) has been started
        await client.close()
    await first.close()
    assert dns_server.queries.count(("1.0.0.127.in-addr.arpa", "PTR")) == 1
