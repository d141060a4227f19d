"""DKIM signing at the end of DATA: mail our relay clients send from a domain with a key
is signed (RSA and Ed25519 at once), verifies with dkimpy against the record served by a
loopback DNS server, and a message with a line over 998 octets is refused, not signed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dkim
import pytest
from ingress_helpers import MakeIngress, put_control, session, wait_for

from mailyard.core.dkim_sign import from_domain, has_long_line
from mailyard.core.dkimkeys import KeyDir
from mailyard.core.spool import Spool
from mailyard.smtp_ingress.metrics import DKIM_SIGNED
from mailyard.smtp_ingress.policy import data_dkim
from mailyard.testing import DnsServer


def spooled(ingress: Any) -> list[bytes]:
    spool = Spool(ingress.settings.spool_dir)
    return [spool.read_sync(path)[1] for path in spool.iter_committed()]


async def test_relay_client_mail_is_signed_and_verifies(
        make_ingress: MakeIngress, js: Any, relay_auth: str, tmp_path: Path,
        dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    scans: list[int] = []  # the long-line scan runs only where the decoder saw one

    def counted(message: bytes) -> bool:
        scans.append(len(message))
        return has_long_line(message)

    monkeypatch.setattr(data_dkim, "has_long_line", counted)
    folder = KeyDir(tmp_path / "dkim")
    folder.create("example.com", "rsa1", "rsa")
    folder.create("example.com", "ed1", "ed25519")
    folder.create("example.com", "next", "rsa")       # published, not signing yet
    dns_server.publish_dkim(folder)
    await put_control(js, "tcp.smtp", '127.0.0.1:allow,RELAYCLIENT=""\n')
    ingress = await make_ingress(relay_auth_addr=relay_auth, relay_auth_timeout=2.0,
                                 dkim_dir=str(folder.path))
    signed_before = DKIM_SIGNED.labels("signed")._value.get()
    client = await session(ingress.ports["smtp"])
    for subdomain in ("", "news."):   # a subdomain signs with its parent's key
        assert await client.cmd("MAIL FROM:<alice@example.com>") == "250 2.1.0 ok"
        assert await client.cmd("RCPT TO:<bob@remote.test>") == "250 2.1.5 ok"
        assert await client.cmd("DATA") == "354 go ahead"
        reply = await client.cmd(
            f"From: Alice <alice@{subdomain}example.com>\r\nTo: bob@remote.test\r\n"
            "Subject: signed\r\nDate: Thu, 03 Dec 2026 18:00:00 +0000\r\n"
            "Message-ID: <1@example.com>\r\n\r\nHello  \r\n\r\n.")
        assert reply.startswith("250 ok ")
    await wait_for(lambda: len(spooled(ingress)) == 2)
    lookup = dns_server.txt
    for message in spooled(ingress):
        # our Received: line on top is outside the signature, as any later hop's would be
        assert message.startswith(b"Received: ")
        assert message.count(b"DKIM-Signature:") == 2
        assert b"a=rsa-sha256" in message and b"a=ed25519-sha256" in message
        assert b"s=next" not in message
        assert b"c=relaxed/relaxed" in message
        assert dkim.verify(message, dnsfunc=lookup)                  # topmost signature
        verifier = dkim.DKIM(message)
        assert all(verifier.verify(idx=i, dnsfunc=lookup) for i in range(2))
        # From is signed one more time than it occurs: a second From: breaks the signature
        forged = message.replace(b"Subject: signed", b"From: eve@evil.test\r\nSubject: signed")
        assert not dkim.verify(forged, dnsfunc=lookup)
    assert DKIM_SIGNED.labels("signed")._value.get() - signed_before == 2
    assert scans == []

    # a line over 998 octets would be folded on the way out: refused, nothing spooled
    assert await client.cmd("MAIL FROM:<alice@example.com>") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<bob@remote.test>") == "250 2.1.5 ok"
    assert await client.cmd("DATA") == "354 go ahead"
    reply = await client.cmd("From: alice@example.com\r\n\r\n" + "x" * 999 + "\r\n.")
    assert reply.startswith("554 5.6.0 ")
    assert len(scans) == 1
    # mail from a domain without a key passes unsigned
    assert await client.cmd("MAIL FROM:<carol@other.test>") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<bob@remote.test>") == "250 2.1.5 ok"
    assert await client.cmd("DATA") == "354 go ahead"
    reply = await client.cmd("From: carol@other.test\r\n\r\n" + "x" * 999 + "\r\n.")
    assert reply.startswith("250 ok ")
    await wait_for(lambda: len(spooled(ingress)) == 3)
    assert sum(b"DKIM-Signature" in m for m in spooled(ingress)) == 2
    await client.close()


async def test_outside_clients_are_never_signed(make_ingress: MakeIngress, tmp_path: Path,
                                                js: Any) -> None:
    """No relay-auth answer (relay_auth_addr points nowhere): not ours, never signed, even
    with our domain in From:."""
    folder = KeyDir(tmp_path / "dkim")
    folder.create("example.org", "s1", "ed25519")
    await put_control(js, "rcpthosts", "example.org\n")
    ingress = await make_ingress(dkim_dir=str(folder.path))
    await wait_for(lambda: ingress.in_rcpthosts("example.org"))
    client = await session(ingress.ports["smtp"])
    assert await client.cmd("MAIL FROM:<x@example.org>") == "250 2.1.0 ok"
    assert await client.cmd("RCPT TO:<y@example.org>") == "250 2.1.5 ok"
    assert await client.cmd("DATA") == "354 go ahead"
    assert (await client.cmd("From: x@example.org\r\n\r\nhi\r\n.")).startswith("250 ok")
    await wait_for(lambda: len(spooled(ingress)) == 1)
    assert b"DKIM-Signature" not in spooled(ingress)[0]
    await client.close()


def test_from_domain_and_long_lines() -> None:
    assert from_domain(b"From: A <a@Example.COM>\r\nTo: b\r\n\r\nx") == "example.com"
    assert from_domain(b"From: a@x.test, b@y.test\r\n\r\n") == ""       # two authors
    assert from_domain(b"From: a@x.test\r\nFrom: b@y.test\r\n\r\n") == ""
    assert from_domain(b"Subject: none\r\n\r\n") == ""
    assert from_domain(b"From: \"=?utf-8?q?A?=\" <a@x.test>\r\n\r\n") == "x.test"
    assert not has_long_line(b"a" * 998 + b"\r\nb\r\n")
    assert has_long_line(b"a\r\n" + b"b" * 999 + b"\r\n")
    assert has_long_line(b"a\r\n" + b"b" * 999)


def test_a_from_domain_in_utf8_is_its_a_label() -> None:
    """SMTPUTF8 mail's From: domain in UTF-8 was U+FFFD where its octets stood (compat32
    from bytes): no key of ours signed it (keys are A-labels) and DMARC looked up nothing."""
    for head in ("From: Zo\u00eb <z@B\u00dcCHER.test>", "From: z@b\u00fccher.test."):
        assert from_domain(f"{head}\r\n\r\nx".encode()) == "xn--bcher-kva.test", head
    assert from_domain(b"From: z@b\xfccher.test\r\n\r\n") == ""  # Latin-1: no name
