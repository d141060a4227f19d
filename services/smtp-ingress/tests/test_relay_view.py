"""Issue 14 item 1, relay decisions under contention: smtp-ingress decides from its own live
view of tcp.smtp and the leases (relay-auth's code, mailyard.core.relaypolicy), so a relay
client never waits for relay-auth. Against the real relay-auth as a child process: paused
with SIGSTOP, it is invisible to known clients (before: 451 4.3.0 for every one of them); a
lease and a rule change apply to the next connection; while the view cannot decide, an
unknown client still fails closed."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingress_helpers import Client, MakeIngress, put_control, seed_directory, wait_for
from prometheus_client import REGISTRY

from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as ra_grpc
from mailyard.core.control import version_of
from mailyard.core.natsserver import NatsServer
from mailyard.smtp_ingress import replies as R
from mailyard.testing import ServiceProcess, grpc_service

RULES = '127.0.0.1:allow,RELAYCLIENT=""\n127.0.0.2:allow\n'


@pytest.fixture
async def relay_proc(nats_server: NatsServer, tmp_path: Path
                     ) -> AsyncIterator[tuple[ServiceProcess, str, Any]]:
    """Tests ask for it before make_ingress, so it is set up first and stopped last: stopped
    while an ingress still holds its relay stream open, relay-auth waited out its whole 5 s
    grace for that stream in every such teardown."""
    proc, address = grpc_service("mailyard.relay_auth", "RELAYAUTH", nats_server.url,
                                 tmp_path / "logs")
    proc.start()
    channel = grpc.aio.insecure_channel(address)
    yield proc, address, ra_grpc.RelayAuthStub(channel)
    await channel.close()
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGCONT)
    proc.stop()


@contextmanager
def paused(proc: ServiceProcess) -> Iterator[None]:
    assert proc.proc is not None
    os.kill(proc.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)


async def relay_attempt(port: int, source: str = "127.0.0.1") -> str:
    """Connect from `source`, return the reply to a RCPT for a domain that is not ours."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    client = Client(reader, writer)
    try:
        greeting = await client.reply(30)
        if not greeting.startswith("220"):
            return greeting
        assert (await client.cmd("EHLO client.test")).startswith("250")
        assert await client.cmd("MAIL FROM:<a@b.test>") == R.MAIL_OK
        return await client.cmd("RCPT TO:<x@elsewhere.test>")
    finally:
        await client.close()


def local_decisions() -> float:
    return REGISTRY.get_sample_value("mailyard_smtp_relay_decisions_total",
                                     {"source": "local"}) or 0.0


async def test_paused_relay_auth_is_invisible_to_known_clients(
        relay_proc: Any, make_ingress: MakeIngress, js: Any) -> None:
    proc, address, stub = relay_proc
    await put_control(js, "tcp.smtp", RULES)
    ingress = await make_ingress(relay_auth_addr=address, max_per_ip=100)
    await wait_for(lambda: ingress.relay_view.ready
                   and ingress.relay_view.active.rules.version == version_of(RULES))
    await seed_directory(js, "example.org", ["ann@example.org"])
    await stub.GrantLease(ra.GrantLeaseRequest(ip="127.0.0.2", user="ann@example.org"))
    await wait_for(lambda: ingress.relay_view.decide("127.0.0.2").allow_relay)
    before = local_decisions()
    with paused(proc):
        replies = await asyncio.gather(
            *(relay_attempt(ingress.ports["smtp"]) for _ in range(40)),
            *(relay_attempt(ingress.ports["smtp"], "127.0.0.2") for _ in range(10)))
    assert replies == [R.RCPT_OK] * 50
    assert local_decisions() - before == 50


async def test_rule_change_and_lease_apply_to_the_next_connection(
        relay_proc: Any, make_ingress: MakeIngress, js: Any) -> None:
    _, address, stub = relay_proc
    await put_control(js, "tcp.smtp", RULES)
    ingress = await make_ingress(relay_auth_addr=address)
    view = ingress.relay_view
    await wait_for(lambda: view.ready and view.active.rules.version == version_of(RULES))
    port = ingress.ports["smtp"]
    assert await relay_attempt(port, "127.0.0.2") == R.RCPTHOSTS
    # a lease granted through relay-auth: the next connection relays once the watch has it
    await seed_directory(js, "example.org", ["ann@example.org"])
    await stub.GrantLease(ra.GrantLeaseRequest(ip="127.0.0.2", user="ann@example.org"))
    await wait_for(lambda: view.decide("127.0.0.2").lease_user == "ann@example.org")
    assert await relay_attempt(port, "127.0.0.2") == R.RCPT_OK
    await stub.RevokeLease(ra.RevokeLeaseRequest(ip="127.0.0.2"))
    await wait_for(lambda: not view.decide("127.0.0.2").allow_relay)
    assert await relay_attempt(port, "127.0.0.2") == R.RCPTHOSTS
    # a rule change: 127.0.0.1 denied from the next connection on
    changed = "127.0.0.1:deny\n127.0.0.2:allow\n"
    await stub.ImportRules(ra.ImportRulesRequest(text=changed))
    await wait_for(lambda: view.active.rules.version == version_of(changed))
    assert await relay_attempt(port) == R.CLIENT_DENIED


async def test_view_not_ready_fails_closed_then_learns(
        relay_proc: Any, make_ingress: MakeIngress, js: Any) -> None:
    proc, address, _ = relay_proc
    # No tcp.smtp imported: the view may decide only once relay-auth has confirmed that its
    # default rules are ours (the ingress asks in the background from its start). With
    # relay-auth paused from before the start, nothing is known: fail closed.
    with paused(proc):
        ingress = await make_ingress(relay_auth_addr=address, relay_auth_timeout=0.5)
        view = ingress.relay_view
        await wait_for(lambda: view.leases.ready and view.control.ready)
        assert not view.ready and view.decide("127.0.0.1") is None
        assert await relay_attempt(ingress.ports["smtp"]) == R.RELAY_UNAVAILABLE
    await wait_for(lambda: view.ready, timeout=30)  # relay-auth answered the background ask
    with paused(proc):
        assert await relay_attempt(ingress.ports["smtp"]) == R.RCPT_OK


async def test_the_view_decides_exactly_as_relay_auth(
        relay_proc: Any, make_ingress: MakeIngress, js: Any) -> None:
    _, address, stub = relay_proc
    rules = ('127.:allow,RELAYCLIENT=""\n192.0.2.:allow,RELAYCLIENT=""\n198.51.100.:deny\n'
             '203.0.113.:allow,RBLSMTPD=""\n203.0.114.:allow,RBLSMTPD="-you are listed"\n'
             '10.9.:deny\n:allow\n')
    await stub.ImportRules(ra.ImportRulesRequest(text=rules))
    await seed_directory(js, "example.org", ["alice@example.org", "bob@example.org"])
    await stub.GrantLease(ra.GrantLeaseRequest(ip="10.1.2.3", user="alice@example.org"))
    await stub.GrantLease(ra.GrantLeaseRequest(ip="10.9.0.1", user="bob@example.org"))
    ingress = await make_ingress(relay_auth_addr=address)
    view = ingress.relay_view
    await wait_for(lambda: view.ready and view.active.rules.version == version_of(rules)
                   and view.decide("10.9.0.1") is not None
                   and view.decide("10.1.2.3").lease_user != "")
    for ip in ("127.0.0.1", "192.0.2.9", "198.51.100.1", "203.0.113.1", "203.0.114.1",
               "10.1.2.3", "10.9.0.1", "192.0.3.1", "2001:db8::1", "::ffff:192.0.2.7"):
        assert view.decide(ip) == await stub.CheckClient(ra.CheckClientRequest(ip=ip)), ip
