"""DKIM signing across customers: every hosted domain is another customer, and the
platform's keys of a domain sign only mail of those who may speak for it. Real SMTP AUTH
with the real relay-auth, the directory in NATS KV, signatures checked with dkimpy against
the records served by the loopback DNS server."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from pathlib import Path
from typing import Any

import dkim
import grpc
import pytest
from ingress_helpers import (
    Client,
    MakeIngress,
    plain,
    put_control,
    seed_directory,
    seed_user,
    submission_login,
    wait_for,
)
from prometheus_client import REGISTRY

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.relayauth.v1 import relayauth_pb2 as ra
from mailyard.api.relayauth.v1.relayauth_pb2_grpc import RelayAuthStub
from mailyard.core import bus
from mailyard.core.directory import domain_key, record_key
from mailyard.core.dkimkeys import KeyDir
from mailyard.core.spool import Spool
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.server import Ingress
from mailyard.testing import DnsServer


def _not_entitled() -> float:
    return REGISTRY.get_sample_value("mailyard_smtp_dkim_sign_total",
                                     {"result": "not_entitled"}) or 0.0


async def _platform(js: Any, tmp_path: Path, dns_server: DnsServer) -> KeyDir:
    """a.test (joe) and b.test (ceo) are two customers, each with its keys; b.test gave joe
    an alias of his own (joe@b.test) and one shared with its ceo (team@b.test). dept.a.test
    (amy) is hosted too, without keys."""
    folder = KeyDir(tmp_path / "dkim")
    for domain in ("a.test", "b.test"):
        folder.create(domain, "s1", "ed25519")
    dns_server.publish_dkim(folder)
    await seed_directory(js, "a.test", [])
    await seed_directory(js, "b.test", [])
    await seed_user(js, "joe@a.test", "secret")
    await seed_user(js, "ceo@b.test", "boss")
    await seed_directory(js, "dept.a.test", [])
    await seed_user(js, "amy@dept.a.test", "pw")
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    for address, targets in (("joe@b.test", ["Joe@A.test"]),
                             ("team@b.test", ["joe@a.test", "ceo@b.test"])):
        await kv.put(record_key("alias", address),
                     dpb.Alias(address=address, targets=targets).SerializeToString())
    return folder


async def _ingress(make_ingress: MakeIngress, js: Any, relay_auth: str, folder: KeyDir,
                   rules: str = "127.0.0.1:allow\n") -> Ingress:
    await put_control(js, "tcp.smtp", rules)
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0,
                                 dkim_dir=str(folder.path))
    await wait_for(lambda: ingress.directory.alias("team@b.test") is not None)
    return ingress


def _spooled(ingress: Ingress) -> dict[str, bytes]:
    """Spooled messages by their Subject."""
    spool = Spool(ingress.settings.spool_dir)
    out = {}
    for path in spool.iter_committed():
        message = spool.read_sync(path)[1]
        found = re.search(rb"\r\nSubject: (\S+)\r\n", message)
        assert found is not None
        out[found.group(1).decode()] = message
    return out


async def _send(client: Client, subject: str, header: str, sender: str = "joe@a.test",
                params: str = "") -> None:
    assert await client.cmd(f"MAIL FROM:<{sender}>{params}") == R.MAIL_OK
    assert await client.cmd("RCPT TO:<x@remote.test>") == R.RCPT_OK
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send(f"{header}To: x@remote.test\r\nSubject: {subject}\r\n"
                      "Date: Sat, 05 Dec 2026 07:00:00 +0000\r\n\r\nhello\r\n.\r\n")
    assert (await client.reply()).startswith("250 ok "), subject


def _signers(message: bytes, dns_server: DnsServer) -> list[str]:
    """The d= of each signature on the message, all of which must verify."""
    domains = re.findall(rb"DKIM-Signature:[^:]*?\bd=([^;\s]+)", message)
    verifier = dkim.DKIM(message)
    assert all(verifier.verify(idx=i, dnsfunc=dns_server.txt) for i in range(len(domains)))
    return [d.decode() for d in domains]


async def test_an_auth_login_signs_only_for_domains_it_may_speak_for(
        make_ingress: MakeIngress, js: Any, relay_auth: str, tmp_path: Path,
        dns_server: DnsServer, client_tls: ssl.SSLContext) -> None:
    folder = await _platform(js, tmp_path, dns_server)
    ingress = await _ingress(make_ingress, js, relay_auth, folder)
    client = await submission_login(ingress, client_tls, "joe@a.test", "secret")
    before = _not_entitled()
    cases = {
        "own": ("From: Joe <joe@a.test>\r\n", ["a.test"]),
        "case": ("From: JOE@A.TEST.\r\n", ["a.test"]),
        "colleague": ("From: anna@a.test\r\n", ["a.test"]),     # the customer's own domain
        "subdomain": ("From: news@lists.a.test\r\n", ["a.test"]),  # relaxed alignment
        "alias": ("From: joe@B.test\r\n", ["b.test"]),       # b.test leads it to joe alone
        # another customer's addresses: its keys are not joe's to use
        "spoof": ("From: The CEO <ceo@b.test>\r\n", []),
        "spoof-case": ("From: CEO@B.TEST\r\n", []),
        "shared": ("From: team@b.test\r\n", []),              # the ceo's as much as joe's
        "sub-spoof": ("From: ceo@mail.b.test\r\n", []),
        "two": ("From: ceo@b.test, joe@a.test\r\nSender: joe@a.test\r\n", []),
        "none": ("", []),
    }
    for subject, (header, _) in cases.items():
        await _send(client, subject, header)
    await wait_for(lambda: len(_spooled(ingress)) == len(cases))
    spooled = _spooled(ingress)
    for subject, (_, signers) in cases.items():
        assert _signers(spooled[subject], dns_server) == signers, subject
    assert _not_entitled() - before == 4
    # b.test's own login signs b.test, and not a.test
    ceo = await submission_login(ingress, client_tls, "ceo@b.test", "boss")
    await _send(ceo, "ceo-own", "From: ceo@b.test\r\n", "ceo@b.test")
    await _send(ceo, "ceo-spoof", "From: joe@a.test\r\n", "ceo@b.test")
    await wait_for(lambda: len(_spooled(ingress)) == len(cases) + 2)
    spooled = _spooled(ingress)
    assert _signers(spooled["ceo-own"], dns_server) == ["b.test"]
    assert _signers(spooled["ceo-spoof"], dns_server) == []
    # a hosted domain without keys is not signed with its parent's: they are a.test's
    amy = await submission_login(ingress, client_tls, "amy@dept.a.test", "pw")
    await _send(amy, "amy", "From: amy@dept.a.test\r\n", "amy@dept.a.test")
    await wait_for(lambda: len(_spooled(ingress)) == len(cases) + 3)
    assert _signers(_spooled(ingress)["amy"], dns_server) == []
    assert _not_entitled() - before == 6
    for c in (client, ceo, amy):
        await c.close()


async def test_a_subdomain_s_own_keys_sign_for_its_domain_s_users(
        make_ingress: MakeIngress, js: Any, relay_auth: str, tmp_path: Path,
        dns_server: DnsServer, client_tls: ssl.SSLContext) -> None:
    """Keys made for news.a.test, a name a.test sends newsletters from (no hosted domain of
    its own), are a.test's: its users sign with them. dept.a.test, hosted with keys of its
    own, is a customer of its own (but for the alias it gave joe), and so is b.test's
    subdomain."""
    folder = await _platform(js, tmp_path, dns_server)
    for domain in ("news.a.test", "dept.a.test", "news.b.test"):
        folder.create(domain, "s1", "ed25519")
    dns_server.publish_dkim(folder)
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("alias", "joe@dept.a.test"), dpb.Alias(
        address="joe@dept.a.test", targets=["joe@a.test"]).SerializeToString())
    ingress = await _ingress(make_ingress, js, relay_auth, folder)
    await wait_for(lambda: ingress.directory.alias("joe@dept.a.test") is not None)
    joe = await submission_login(ingress, client_tls, "joe@a.test", "secret")
    amy = await submission_login(ingress, client_tls, "amy@dept.a.test", "pw")
    before = _not_entitled()
    cases = ((joe, "news", "From: letters@news.a.test\r\n", ["news.a.test"]),
             (joe, "deeper", "From: x@weekly.News.a.test\r\n", ["news.a.test"]),
             (joe, "dept", "From: amy@dept.a.test\r\n", []),
             (joe, "dept-alias", "From: joe@dept.a.test\r\n", ["dept.a.test"]),  # given him
             (joe, "other-news", "From: x@news.b.test\r\n", []),
             (amy, "amy", "From: amy@dept.a.test\r\n", ["dept.a.test"]),
             (amy, "amy-parent", "From: amy@news.a.test\r\n", []))
    for client, subject, header, _ in cases:
        await _send(client, subject, header)
    await wait_for(lambda: len(_spooled(ingress)) == len(cases))
    spooled = _spooled(ingress)
    for _, subject, _, signers in cases:
        assert _signers(spooled[subject], dns_server) == signers, subject
    assert _not_entitled() - before == 3
    for c in (joe, amy):
        await c.close()


async def test_an_alias_domain_signs_for_its_real_domain_s_users(
        make_ingress: MakeIngress, js: Any, relay_auth: str, tmp_path: Path,
        dns_server: DnsServer, client_tls: ssl.SSLContext) -> None:
    """alias-a.test is an alias domain of a.test (vpopmail's vaddaliasdomain): the same
    customer, so a.test's users sign with its keys (which it needs of its own: a.test's do
    not align with it for DMARC), whatever the From: local part, as they do for a.test.
    b.test's users do not."""
    folder = await _platform(js, tmp_path, dns_server)
    folder.create("alias-a.test", "s1", "ed25519")
    dns_server.publish_dkim(folder)
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key("alias-a.test"), dpb.Domain(
        name="alias-a.test", alias_of="a.test").SerializeToString())
    ingress = await _ingress(make_ingress, js, relay_auth, folder)
    await wait_for(lambda: ingress.directory.real_domain("alias-a.test") is not None)
    joe = await submission_login(ingress, client_tls, "joe@a.test", "secret")
    ceo = await submission_login(ingress, client_tls, "ceo@b.test", "boss")
    before = _not_entitled()
    cases = ((joe, "joe", "From: joe@alias-a.test\r\n", ["alias-a.test"]),
             (joe, "colleague", "From: anna@Alias-A.test\r\n", ["alias-a.test"]),
             (ceo, "ceo", "From: joe@alias-a.test\r\n", []))
    for client, subject, header, _ in cases:
        await _send(client, subject, header, "joe@a.test" if client is joe else "ceo@b.test")
    await wait_for(lambda: len(_spooled(ingress)) == len(cases))
    spooled = _spooled(ingress)
    for _, subject, _, signers in cases:
        assert _signers(spooled[subject], dns_server) == signers, subject
    assert _not_entitled() - before == 1
    for c in (joe, ceo):
        await c.close()


async def test_an_idna_from_domain_signs_with_its_a_label_keys(
        make_ingress: MakeIngress, js: Any, relay_auth: str, tmp_path: Path,
        dns_server: DnsServer, client_tls: ssl.SSLContext) -> None:
    """Keys and logins name an IDN domain by its A-label; a UTF-8 From: (SMTPUTF8) names it
    by its U-label, in any case: the same domain, signed for its own users only."""
    folder = await _platform(js, tmp_path, dns_server)
    folder.create("xn--bcher-kva.example", "s1", "ed25519")
    dns_server.publish_dkim(folder)
    await seed_directory(js, "xn--bcher-kva.example", [])
    await seed_user(js, "jörg@xn--bcher-kva.example", "pw")
    ingress = await _ingress(make_ingress, js, relay_auth, folder)
    jorg = await submission_login(ingress, client_tls, "Jörg@Bücher.example", "pw")
    joe = await submission_login(ingress, client_tls, "joe@a.test", "secret")
    before = _not_entitled()
    utf8 = " SMTPUTF8"
    cases = ((jorg, "u-label", "From: Jörg <jörg@bücher.example>\r\n", ["xn--bcher-kva.example"]),
             (jorg, "upper", "From: JÖRG@BÜCHER.EXAMPLE\r\n", ["xn--bcher-kva.example"]),
             (jorg, "a-label", "From: jörg@XN--BCHER-KVA.example\r\n",
              ["xn--bcher-kva.example"]),
             (joe, "spoof-u", "From: jörg@Bücher.example\r\n", []),
             (joe, "spoof-a", "From: jörg@xn--bcher-kva.example\r\n", []),
             # the same letters, another domain: no key of bücher's signs it
             (jorg, "lookalike", "From: jörg@bucher.example\r\n", []))
    for client, subject, header, _ in cases:
        await _send(client, subject, header, "jörg@bücher.example", utf8)
    await wait_for(lambda: len(_spooled(ingress)) == len(cases))
    spooled = _spooled(ingress)
    for _, subject, _, signers in cases:
        assert _signers(spooled[subject], dns_server) == signers, subject
    assert _not_entitled() - before == 2
    for c in (jorg, joe):
        await c.close()


async def _from(ingress: Ingress, address: str) -> Client:
    reader, writer = await asyncio.open_connection("127.0.0.1", ingress.ports["smtp"],
                                                   local_addr=(address, 0))
    client = Client(reader, writer)
    assert (await client.reply()).startswith("220 ")
    assert (await client.cmd("EHLO client.test")).startswith("250")
    return client


async def test_a_lease_signs_as_its_login_and_a_relay_rule_for_all(
        make_ingress: MakeIngress, js: Any, relay_auth: str, tmp_path: Path,
        dns_server: DnsServer, client_tls: ssl.SSLContext,
        caplog: pytest.LogCaptureFixture) -> None:
    """A POP-before-SMTP lease names who logged in from the address: its mail is signed as
    that login's would be. An open-smtp lease carried over from vpopmail names nobody:
    signed for no domain until the user logs in here. A tcp.smtp RELAYCLIENT rule is the
    postmaster's trust in a host (a web server, the webmail), for all it sends."""
    folder = await _platform(js, tmp_path, dns_server)
    ingress = await _ingress(make_ingress, js, relay_auth, folder,
                             '127.0.0.2:allow,RELAYCLIENT=""\n:allow\n')
    channel = grpc.aio.insecure_channel(relay_auth)
    stub = RelayAuthStub(channel)
    await stub.GrantLease(ra.GrantLeaseRequest(ip="127.0.0.3", user="Joe@A.test"))
    await stub.GrantLease(ra.GrantLeaseRequest(ip="127.0.0.4", user="open-smtp",
                                               imported=True))
    await channel.close()
    view = ingress.relay_view
    await wait_for(lambda: view.decide("127.0.0.3").lease_user != ""
                   and view.decide("127.0.0.4").lease_user != "")
    before = _not_entitled()
    lease, imported, rule = [await _from(ingress, ip)
                             for ip in ("127.0.0.3", "127.0.0.4", "127.0.0.2")]
    cases = ((lease, "lease-own", "From: joe@a.test\r\n", ["a.test"]),
             (lease, "lease-alias", "From: joe@b.test\r\n", ["b.test"]),
             (lease, "lease-spoof", "From: ceo@b.test\r\n", []),
             (imported, "imported", "From: joe@a.test\r\n", []),
             (rule, "rule-a", "From: joe@a.test\r\n", ["a.test"]),
             (rule, "rule-b", "From: ceo@b.test\r\n", ["b.test"]))
    with caplog.at_level(logging.WARNING, logger="mailyard.smtp_ingress"):
        for client, subject, header, _ in cases:
            await _send(client, subject, header)
    await wait_for(lambda: len(_spooled(ingress)) == len(cases))
    spooled = _spooled(ingress)
    for _, subject, _, signers in cases:
        assert _signers(spooled[subject], dns_server) == signers, subject
    assert _not_entitled() - before == 2
    # the log line names whom the lease is for (no AUTH in these sessions), once a message
    logged = [(getattr(r, "lease_user", None), getattr(r, "client_ip", None))
              for r in caplog.records if r.getMessage().startswith("not signed")]
    assert logged == [("Joe@A.test", "127.0.0.3"), ("open-smtp", "127.0.0.4")]
    # a login on the relay host (a webmail's users authenticate) signs as that login
    await rule.starttls(client_tls)
    assert (await rule.cmd("EHLO client.test")).startswith("250")
    assert await rule.cmd(f"AUTH PLAIN {plain('joe@a.test', 'secret')}") == R.AUTH_OK
    await _send(rule, "webmail-spoof", "From: ceo@b.test\r\n")
    await wait_for(lambda: len(_spooled(ingress)) == len(cases) + 1)
    assert _signers(_spooled(ingress)["webmail-spoof"], dns_server) == []
    for c in (lease, imported, rule):
        await c.close()
