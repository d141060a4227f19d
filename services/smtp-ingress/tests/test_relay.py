"""The relay decision and AUTH against the real relay-auth service."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import signal
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingress_helpers import (
    Client,
    MakeIngress,
    committed,
    plain,
    put_control,
    seed_directory,
    seed_user,
    session,
    wait_for,
)

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.api.relayauth.v1.relayauth_pb2_grpc import RelayAuthStub
from mailyard.core.grpcserver import GrpcServer
from mailyard.core.natsserver import NatsServer
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.relay import RelayAuthClient
from mailyard.smtp_ingress.server import Ingress
from mailyard.testing import ServiceProcess, grpc_service


async def _ingress(make_ingress: MakeIngress, js: Any, relay_auth: str, rules: str,
                   **kw: Any) -> Ingress:
    await put_control(js, "tcp.smtp", rules)
    await put_control(js, "rcpthosts", "relayed.test\n.sub.test\n")
    await seed_directory(js, "example.org", ["alice@example.org"])
    await seed_user(js, "alice@example.org", "secret")
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0, **kw)
    await wait_for(lambda: ingress.directory.accepts("alice@example.org")
                   and ingress.in_rcpthosts("relayed.test"))
    return ingress


async def test_rcpthosts_and_routing_tricks(make_ingress: MakeIngress, js: Any,
                                            relay_auth: str) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n")
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPTHOSTS
    assert await client.cmd("RCPT TO:<x@relayed.test>") == R.RCPT_OK
    assert await client.cmd("RCPT TO:<x@a.sub.test>") == R.RCPT_OK
    for trick in ("<@relayed.test:x@elsewhere.test>",   # source route
                  "<x%elsewhere.test@relayed.test>",     # % hack
                  "<elsewhere.test!x@relayed.test>",     # bang path
                  '<"x@elsewhere.test"@relayed.test>',   # quoted local part
                  "<x@[10.0.0.1]>", "<x>"):
        assert await client.cmd(f"RCPT TO:{trick}") == R.RCPTHOSTS, trick
    assert await client.cmd("RCPT TO:<x%elsewhere.test@example.org>") == \
        R.UNKNOWN_USER


async def test_rcpthosts_takes_an_idn_in_either_form(make_ingress: MakeIngress, js: Any,
                                                      relay_auth: str) -> None:
    """rcpthosts was compared as typed with the RCPT domain as sent: a backup MX for
    bücher.test listed as "bücher.test" refused its mail in A-label form (every client
    without SMTPUTF8) with 553, and one listed as "xn--bcher-kva.test" refused the UTF-8
    form an SMTPUTF8 client sends. Both forms are now one domain, as in the directory."""
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n")
    await put_control(js, "rcpthosts", "b\u00fccher.test\n.xn--caf-dma.test\n")
    await wait_for(lambda: "b\u00fccher" in ingress.control.text("rcpthosts"))
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test> SMTPUTF8") == R.MAIL_OK
    for domain in ("b\u00fccher.test", "xn--bcher-kva.test", "B\u00dcCHER.test",
                   "a.caf\u00e9.test", "a.xn--caf-dma.test"):
        assert await client.cmd(f"RCPT TO:<x@{domain}>") == R.RCPT_OK, domain
    assert await client.cmd("RCPT TO:<x@bucher.test>") == R.RCPTHOSTS


async def test_relay_client_and_denied_client(make_ingress: MakeIngress, js: Any,
                                              relay_auth: str) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth, '127.0.0.1:allow,RELAYCLIENT=""\n')
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPT_OK
    await put_control(js, "tcp.smtp", "127.0.0.1:deny\n")
    for _ in range(200):  # relay-auth picks the rule up hot; the next connection obeys
        denied = await Client.connect(ingress.ports["smtp"])
        reply = await denied.reply()
        await denied.close()
        if reply.startswith("553"):
            break
    assert reply == R.CLIENT_DENIED


async def test_connection_burst_waits_for_relay_auth_slots(make_ingress: MakeIngress, js: Any,
                                                           relay_auth: str) -> None:
    """100 clients at once, 2 relay-auth calls at a time: every one still gets its own
    decision (no fail-closed 451 for a relay client), the rest wait for a slot."""
    ingress = await _ingress(make_ingress, js, relay_auth, '127.0.0.1:allow,RELAYCLIENT=""\n',
                             relay_auth_in_flight=2, max_per_ip=200)

    async def relay_once() -> str:
        client = await session(ingress.ports["smtp"])
        try:
            await client.cmd("MAIL FROM:<a@b.test>")
            return await client.cmd("RCPT TO:<x@elsewhere.test>")
        finally:
            await client.close()

    replies = await asyncio.gather(*(relay_once() for _ in range(100)))
    assert replies == [R.RCPT_OK] * 100


async def test_relay_clients_are_exempt_from_the_per_ip_limit(
        make_ingress: MakeIngress, js: Any, relay_auth: str) -> None:
    """As Postfix exempts $mynetworks: a relay client may hold more sessions than the per-IP
    limit (smtp-source -s 50 reconnects the moment it has sent QUIT); anyone else may not."""
    ingress = await _ingress(make_ingress, js, relay_auth,
                             '127.0.0.1:allow,RELAYCLIENT=""\n127.0.0.2:allow\n', max_per_ip=2)
    relay = [await session(ingress.ports["smtp"]) for _ in range(4)]
    assert [await c.cmd("NOOP") for c in relay] == [R.OK] * 4
    others = []
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", ingress.ports["smtp"],
                                                       local_addr=("127.0.0.2", 0))
        others.append(Client(reader, writer))
    greetings = [await c.reply() for c in others]
    assert greetings[:2] == [R.greeting(ingress.me())] * 2
    assert greetings[2] == R.TOO_MANY_CONNECTIONS
    for c in relay + others:
        await c.close()


async def test_auth_plain_login_cram_and_failures(make_ingress: MakeIngress, js: Any,
                                                  relay_auth: str,
                                                  client_tls: ssl.SSLContext) -> None:
    ingress = await _ingress(make_ingress, js, relay_auth, "127.0.0.1:allow\n",
                             auth_cram_md5=True)
    port = ingress.ports["submission"]

    async def tls_session() -> Client:
        client = await session(port)
        await client.starttls(client_tls)
        assert (await client.cmd("EHLO client.test")).startswith("250")
        return client

    client = await tls_session()
    assert await client.cmd(f"AUTH PLAIN {plain('alice@example.org', 'secret')}") == \
        R.AUTH_OK
    assert await client.cmd("MAIL FROM:<alice@example.org>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RCPT_OK  # relay by AUTH
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send("Subject: authed\r\n\r\nhi\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    from mailyard.core.spool import Spool

    envelope, data = Spool(ingress.settings.spool_dir).read_sync(committed(ingress)[0])
    assert envelope.auth_user == "alice@example.org"
    assert b"(authenticated user alice@example.org)" in data and b"with ESMTPSA" in data

    client = await tls_session()
    b64 = lambda t: base64.b64encode(t.encode()).decode()  # noqa: E731
    assert await client.cmd("AUTH LOGIN") == R.auth_challenge("VXNlcm5hbWU6")
    assert await client.cmd(b64("alice@example.org")) == R.auth_challenge("UGFzc3dvcmQ6")
    assert await client.cmd(b64("secret")) == R.AUTH_OK

    client = await tls_session()
    challenge = base64.b64decode((await client.cmd("AUTH CRAM-MD5"))[4:])
    digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest()
    assert await client.cmd(b64(f"alice@example.org {digest}")) == \
        R.AUTH_OK

    client = await tls_session()
    assert await client.cmd("AUTH PLAIN") == R.auth_challenge("")
    assert await client.cmd("*") == R.AUTH_ABORTED
    assert await client.cmd("AUTH PLAIN !!notbase64") == R.AUTH_FAILED
    assert await client.cmd(f"AUTH PLAIN {plain('alice@example.org', 'wrong')}") == \
        R.AUTH_FAILED
    await client.send(f"AUTH PLAIN {plain('alice@example.org', 'wrong')}\r\n")
    assert await client.reply() == R.AUTH_FAILED
    assert await client.reply() == R.AUTH_TOO_MANY_FAILURES
    assert await client.eof()


async def test_relay_auth_down_local_mail_still_accepted(local: Ingress) -> None:
    """Nothing listens on RELAY_AUTH_ADDR: never relay, but local mail flows."""
    client = await session(local.ports["smtp"])
    assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@elsewhere.test>") == \
        R.RELAY_UNAVAILABLE
    assert await client.cmd("RCPT TO:<alice@example.org>") == R.RCPT_OK


async def test_auth_with_relay_auth_down_is_temporary(make_ingress: MakeIngress,
                                                      client_tls: ssl.SSLContext) -> None:
    ingress = await make_ingress()
    client = await session(ingress.ports["submission"])
    await client.starttls(client_tls)
    await client.cmd("EHLO client.test")
    assert await client.cmd(f"AUTH PLAIN {plain('a@example.org', 'x')}") == \
        R.AUTH_UNAVAILABLE


# -- check_client over the CheckClients stream (the ingress's RelayAuthClient, real relay-auth)

@pytest.fixture
def relay_proc(nats_server: NatsServer, tmp_path: Path) -> Iterator[tuple[ServiceProcess, str]]:
    """The real relay-auth as a child process the test may freeze, kill and start again."""
    proc, address = grpc_service("mailyard.relay_auth", "RELAYAUTH", nats_server.url,
                                 tmp_path / "logs")
    proc.start()
    yield proc, address
    if proc.proc and proc.proc.poll() is None:
        proc.proc.send_signal(signal.SIGCONT)
    proc.stop()


@pytest.fixture
async def unary(relay_proc: tuple[ServiceProcess, str]) -> AsyncIterator[Any]:
    """A plain unary stub on its own channel (the reference answers, rules, leases)."""
    channel = grpc.aio.insecure_channel(relay_proc[1])
    yield RelayAuthStub(channel)
    await channel.close()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., RelayAuthClient]]:
    made: list[RelayAuthClient] = []

    def make(address: str, timeout: float = 5.0, **kw: Any) -> RelayAuthClient:
        made.append(RelayAuthClient(address, timeout, **kw))
        return made[-1]

    yield make
    for client in made:
        await client.close()


RULES = ('127.:allow,RELAYCLIENT=""\n192.0.2.:allow,RELAYCLIENT=""\n198.51.100.:deny\n'
         '203.0.113.:allow,RBLSMTPD=""\n203.0.114.:allow,RBLSMTPD="-you are listed"\n'
         '10.9.:deny\n:allow\n')


async def _unary_check(stub: Any, ip: str) -> ra.CheckClientResponse:
    return await stub.CheckClient(ra.CheckClientRequest(ip=ip))


async def test_stream_answers_match_unary(relay_proc: tuple[ServiceProcess, str], unary: Any,
                                          make_client: Callable[..., RelayAuthClient],
                                          js: Any) -> None:
    await unary.ImportRules(ra.ImportRulesRequest(text=RULES))
    await seed_directory(js, "example.org", ["alice@example.org", "bob@example.org"])
    await unary.GrantLease(ra.GrantLeaseRequest(ip="10.1.2.3", user="alice@example.org"))
    await unary.GrantLease(ra.GrantLeaseRequest(ip="10.9.0.1", user="bob@example.org"))
    client = make_client(relay_proc[1])
    cases = {"127.0.0.1": "relay", "192.0.2.9": "relay", "198.51.100.1": "deny",
             "203.0.113.1": "allow", "203.0.114.1": "allow", "10.1.2.3": "lease",
             "10.9.0.1": "deny",  # a deny beats a lease
             "192.0.3.1": "allow", "2001:db8::1": "allow", "::ffff:192.0.2.7": "relay"}
    for ip, decision in cases.items():
        streamed = await client.check_client(ip)
        assert streamed is not None, ip
        assert streamed == await _unary_check(unary, ip), ip
        got = ("deny" if not streamed.allow_connect else
               "lease" if streamed.decided_by == ra.DECIDER_LEASE else
               "relay" if streamed.allow_relay else "allow")
        assert got == decision, ip
    lease = await client.check_client("10.1.2.3")
    assert lease is not None and lease.lease_user == "alice@example.org"
    assert lease.env["RELAYCLIENT"] == "" and lease.dnsbl_exempt
    # a bad address fails that one check (fail closed), not the stream
    assert await client.check_client("not-an-ip") is None
    assert (await client.check_client("192.0.2.9")) == await _unary_check(unary, "192.0.2.9")
    assert client.streams_opened == 1 and client.unary_checks == 0
    assert client.stream_checks == len(cases) + 2


async def test_many_concurrent_checks_share_one_stream(
        relay_proc: tuple[ServiceProcess, str], unary: Any,
        make_client: Callable[..., RelayAuthClient], js: Any) -> None:
    await unary.ImportRules(ra.ImportRulesRequest(text=RULES))
    await seed_directory(js, "x.test", [f"user{i}@x.test" for i in range(100)])
    for i in range(100):
        await unary.GrantLease(ra.GrantLeaseRequest(ip=f"10.2.0.{i}", user=f"user{i}@x.test"))
    client = make_client(relay_proc[1], max_in_flight=1000)
    ips = [f"10.2.0.{i}" for i in range(200)] * 3  # 100 leased, 100 not, each three times
    answers = await asyncio.gather(*(client.check_client(ip) for ip in ips))
    for ip, answer in zip(ips, answers, strict=True):
        assert answer is not None, ip
        i = int(ip.rsplit(".", 1)[1])
        assert answer.lease_user == (f"user{i}@x.test" if i < 100 else ""), ip
        assert answer.allow_relay == (i < 100), ip
    assert client.streams_opened == 1 and client.stream_checks == len(ips)
    assert client.unary_checks == 0


async def test_relay_auth_killed_pending_checks_fail_then_stream_reopens(
        relay_proc: tuple[ServiceProcess, str],
        make_client: Callable[..., RelayAuthClient]) -> None:
    proc, address = relay_proc
    assert proc.proc is not None
    client = make_client(address, timeout=60.0)  # far beyond the wait below
    first = await client.check_client("127.0.0.1")
    assert first is not None and first.allow_relay
    proc.proc.send_signal(signal.SIGSTOP)  # frozen: the checks below stay unanswered
    pending = [asyncio.create_task(client.check_client(f"192.0.2.{i}")) for i in range(20)]
    stream = client._stream
    assert stream is not None
    for _ in range(500):
        if len(stream.waiting) == 20 and stream.outbox.empty():
            break
        await asyncio.sleep(0.01)
    assert len(stream.waiting) == 20 and not any(t.done() for t in pending)
    proc.kill()
    # the broken stream fails every waiting check at once, not at its 60 s deadline
    results = await asyncio.wait_for(asyncio.gather(*pending), 20)
    assert results == [None] * 20
    assert client.unary_checks == 0  # the stream had answered before: no unary retry
    assert await client.check_client("127.0.0.1") is None  # nobody listening: fail closed
    proc.start()
    for _ in range(200):
        again = await client.check_client("127.0.0.1")
        if again is not None:
            break
        await asyncio.sleep(0.05)
    assert again is not None and again.allow_relay
    assert client.streams_opened >= 2 and client._stream is not stream
    before = client.stream_checks
    assert await client.check_client("192.0.2.1") is not None
    assert client.stream_checks == before + 1  # the reopened stream answers


async def test_hot_rule_change_applies_to_next_check_on_same_stream(
        relay_proc: tuple[ServiceProcess, str], unary: Any, js: Any,
        make_client: Callable[..., RelayAuthClient]) -> None:
    client = make_client(relay_proc[1])
    allowed = await client.check_client("192.0.2.1")
    assert allowed is not None and allowed.allow_connect and not allowed.allow_relay
    stream = client._stream
    imported = await unary.ImportRules(ra.ImportRulesRequest(text="192.0.2.1:deny\n:allow\n"))
    denied = await client.check_client("192.0.2.1")  # the very next check
    assert denied is not None and not denied.allow_connect
    assert denied.rule_version == imported.version
    # a write to the control bucket by someone else arrives through the watch
    await put_control(js, "tcp.smtp", '192.0.2.1:allow,RELAYCLIENT=""\n:allow\n')
    for _ in range(200):
        relayed = await client.check_client("192.0.2.1")
        if relayed is not None and relayed.allow_relay:
            break
        await asyncio.sleep(0.025)
    assert relayed is not None and relayed.allow_relay
    assert client._stream is stream and client.streams_opened == 1
    assert client.unary_checks == 0


async def test_server_without_the_stream_falls_back_to_unary(
        make_client: Callable[..., RelayAuthClient]) -> None:
    """A gRPC server without CheckClients answers UNIMPLEMENTED: the check falls back to the
    unary call (here UNIMPLEMENTED too: None, fail closed), and the client stays on unary
    calls instead of opening a stream per check."""
    server = GrpcServer("127.0.0.1", 0, [])  # health and reflection only, no RelayAuth
    await server.start()
    try:
        client = make_client(f"127.0.0.1:{server.port}")
        assert await client.check_client("192.0.2.1") is None
        assert client.streams_opened == 1 and client.unary_checks == 1
        assert await client.check_client("192.0.2.2") is None
        assert client.streams_opened == 1 and client.unary_checks == 2
    finally:
        await server.stop(0)


async def test_bare_postmaster_is_accepted_for_me(make_ingress: MakeIngress, js: Any) -> None:
    """RFC 5321 4.5.1: RCPT TO:<postmaster> without a domain, any case, must be accepted,
    even from a client that may not relay; it goes to the postmaster of `me`."""
    from mailyard.core.spool import Spool

    ingress = await make_ingress()  # relay-auth down: nobody may relay
    client = await session(ingress.ports["smtp"])
    for spelling in ("POSTMASTER", "PostMaster", "postmaster"):
        assert await client.cmd("RSET") == R.FLUSHED
        assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
        assert await client.cmd("RCPT TO:<x@elsewhere.test>") == R.RELAY_UNAVAILABLE
        assert await client.cmd("RCPT TO:<postmaster2>") == R.RELAY_UNAVAILABLE
        assert await client.cmd(f"RCPT TO:<{spelling}>") == R.RCPT_OK
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send("Subject: hello postmaster\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok ")
    (path,) = committed(ingress)
    envelope, _ = Spool(ingress.settings.spool_dir).read_sync(path)
    assert list(envelope.recipients) == ["postmaster@mx.test"]
