"""Done means (issue 16): mail a user of ours sends leaves signed and verifies at the
receiving side (the loopback sink), with dkimpy and with rspamd against the records a
loopback DNS server publishes; forged mail from a DMARC p=reject domain is refused. The
whole platform runs as processes, its DNS pointed at that server."""

from __future__ import annotations

import os
import smtplib
from collections.abc import Iterator
from pathlib import Path

import dkim
import httpx
import pytest

from mailyard.cli.platform import Platform, free_ports
from mailyard.core.dkimkeys import KeyDir
from mailyard.testing import DnsServer, SmtpSink
from mailyard.testing.rspamd import Rspamd
from tests.e2e.conftest import E2E_ME, Mailyard


@pytest.fixture(scope="module")
def dns_zone() -> Iterator[DnsServer]:
    server = DnsServer().start()
    server.add("victim.test", "TXT", '"v=spf1 -all"')
    server.add("_dmarc.victim.test", "TXT", '"v=DMARC1; p=reject"')
    yield server
    server.stop()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory,
             dns_zone: DnsServer) -> Iterator[Mailyard]:
    data: Path = tmp_path_factory.mktemp("mailyard")
    keys = KeyDir(data / "dkim")
    keys.create("example.com", "rsa2026", "rsa")
    keys.create("example.com", "ed2026", "ed25519")
    dns_zone.publish_dkim(keys)
    sink = SmtpSink().start()
    running = Platform(data, ports=free_ports(), me=E2E_ME, dovecot=False, env={
        "smtp-ingress": {"DNS_SERVERS": f"127.0.0.1:{dns_zone.port}",
                         "AUTH_DNS_TIMEOUT": "1"}})
    try:
        running.start()
    except BaseException:
        sink.stop()
        raise
    mailyard = Mailyard(running, sink)
    mailyard.cli("route", "set", "remote.test", f"127.0.0.1:{sink.port}")
    mailyard.cli("control", "set", "rcpthosts", "example.org")
    # 127.0.0.1 is ours (may relay, gets signed); 127.0.0.2 is the outside world
    mailyard.cli("rules", "import", "-", stdin='127.0.0.1:allow,RELAYCLIENT=""\n:allow\n')
    yield mailyard
    running.stop()
    sink.stop()


def test_our_mail_verifies_at_the_receiving_side(platform: Mailyard, dns_zone: DnsServer,
                                                tmp_path: Path) -> None:
    body = (b"From: Alice <alice@example.com>\r\nTo: bob@remote.test\r\n"
            b"Subject: quarterly figures\r\nDate: Thu, 03 Dec 2026 18:00:00 +0000\r\n"
            b"Message-ID: <e2e-1@example.com>\r\n\r\nHello Bob,\r\n\r\nthe figures.\r\n")
    with platform.smtp() as client:          # 127.0.0.1: a relay client, one of ours
        client.sendmail("alice@example.com", ["bob@remote.test"], body)
    [received] = platform.sink.wait_for(1, timeout=60)
    message = received.data.replace(b"\n", b"\r\n") if b"\r\n" not in received.data \
        else received.data
    assert message.count(b"DKIM-Signature:") == 2
    txt = dns_zone.txt
    verifier = dkim.DKIM(message)
    assert verifier.verify(idx=0, dnsfunc=txt) and verifier.verify(idx=1, dnsfunc=txt)

    if not Rspamd.available():
        if os.environ.get("CI") == "true":
            pytest.fail("rspamd is not installed (.ci/run installs Debian's rspamd)")
        pytest.skip("rspamd is not installed: second verifier not run")
    rspamd = Rspamd(tmp_path / "rspamd", dns_zone.port).start()
    try:
        answer = httpx.post(rspamd.url + "/checkv2", content=message, timeout=60,
                            headers={"IP": "192.0.2.1", "From": "alice@example.com"}).json()
    finally:
        rspamd.cleanup()
    assert sorted(answer["symbols"]["R_DKIM_ALLOW"]["options"]) == \
        ["example.com:s=ed2026", "example.com:s=rsa2026"]


def test_forged_mail_from_a_dmarc_reject_domain_is_refused(platform: Mailyard) -> None:
    forged = (b"From: The Bank <security@victim.test>\r\nTo: bob@example.org\r\n"
              b"Subject: verify your account\r\n\r\nclick here\r\n")
    # from outside: no relay rule
    with platform.smtp(source="127.0.0.2") as client, \
            pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("security@victim.test", ["bob@example.org"], forged)
    assert refused.value.smtp_code == 550
    assert refused.value.smtp_error.startswith(b"5.7.1 sorry, victim.test asks receivers")
