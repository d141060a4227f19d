"""DKIM signing at egress: the mail the platform writes itself (bounces, double bounces,
vacation replies) leaves signed with the keys of its From: domain, verified here with dkimpy
against the records the loopback DNS server serves; mail our users or others wrote (SMTP,
forwards, lists) leaves as it was stored. The jobs go through the worker's spool read
(the origin is the spooled envelope's) to a real SMTP sink on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dkim
from prometheus_client import REGISTRY
from remote_rig import Rig, Smtp

from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED
from mailyard.api.mail.v1.envelope_pb2 import (
    ORIGIN_AUTOREPLY,
    ORIGIN_BOUNCE,
    ORIGIN_DOUBLE_BOUNCE,
    ORIGIN_FORWARD,
    ORIGIN_LIST,
    ORIGIN_SMTP,
    ORIGIN_UNSPECIFIED,
)
from mailyard.core.dkimkeys import KeyDir
from mailyard.remote_delivery.deliver import Deliverer
from mailyard.remote_delivery.worker import Worker
from mailyard.testing import DnsServer

DATE = b"Date: Sat, 05 Dec 2026 12:00:00 +0000\r\n"
# A bounce as the queue writes it (From: MAILER-DAEMON@<me>, me = mx.ours.test: signed with
# the key of ours.test, its nearest parent with one), with a line starting with a dot: the
# signature is over the message before dot-stuffing, as the receiver sees it.
BOUNCE = (b"From: MAILER-DAEMON@mx.ours.test\r\nTo: a@far.test\r\nSubject: failure notice\r\n"
          + DATE + b"Message-ID: <b1@mx.ours.test>\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n"
          b"\r\n--b\r\n\r\nHi. This is the qmail-send program at mx.ours.test.\r\n"
          b".a line of the original that starts with a dot\r\n--b--\r\n")
# A vacation reply, with a bare LF in its body: what goes out (CRLF) is what is signed.
AUTOREPLY = (b"From: Joe <joe@example.com>\r\nTo: a@far.test\r\nSubject: Re: hi\r\n" + DATE
             + b"Auto-Submitted: auto-replied\r\n\r\nAway until Monday.\nBack soon.\r\n")


def _count(result: str) -> float:
    return REGISTRY.get_sample_value("mailyard_remote_dkim_sign_total",
                                     {"result": result}) or 0.0


async def _signing_worker(rig: Rig, dns_server: DnsServer, tmp_path: Path) -> Worker:
    """A worker whose remote-delivery reads a key folder: example.com signs with RSA and
    Ed25519 at once, ours.test with Ed25519."""
    folder = KeyDir(tmp_path / "dkim")
    folder.create("example.com", "rsa1", "rsa")
    folder.create("example.com", "ed1", "ed25519")
    folder.create("ours.test", "s1", "ed25519")
    dns_server.publish_dkim(folder)
    settings = rig.settings.model_copy(update={"dkim_dir": str(folder.path)})
    deliverer = Deliverer(settings, rig.control, rig.deliverer.lookup, rig.pool)
    return Worker(settings, rig.js, rig.control, rig.spool, deliverer)


async def _send(rig: Rig, worker: Worker, data: bytes, origin: int, sender: str = "") -> None:
    job = await rig.message(data, ["a@far.test"], sender=sender, origin=origin)
    results = await worker.run(job)
    assert [r.outcome for r in results] == [OUTCOME_DELIVERED], results


async def test_bounces_and_vacation_replies_leave_signed_others_as_they_were(
        rig: Rig, dns_server: DnsServer, smtp_servers: list[Any], tmp_path: Path) -> None:
    sink = Smtp().start()
    smtp_servers.append(sink)
    await rig.routes(f"far.test:127.0.0.1:{sink.port}")
    worker = await _signing_worker(rig, dns_server, tmp_path)
    signed_before, no_key_before = _count("signed"), _count("no_key")

    await _send(rig, worker, BOUNCE, ORIGIN_BOUNCE)
    await _send(rig, worker, BOUNCE.replace(b"b1@", b"b2@"), ORIGIN_DOUBLE_BOUNCE)
    await _send(rig, worker, AUTOREPLY, ORIGIN_AUTOREPLY)
    lookup = dns_server.txt
    for got, domain, count in zip(sink.messages, (b"ours.test", b"ours.test", b"example.com"),
                                  (1, 1, 2), strict=True):
        message = got.data
        assert message.startswith(b"DKIM-Signature: ")
        assert message.count(b"DKIM-Signature:") == count, message
        assert b"d=" + domain + b";" in message and b"c=relaxed/relaxed" in message
        verifier = dkim.DKIM(message)
        assert all(verifier.verify(idx=i, dnsfunc=lookup) for i in range(count)), message
        # From is oversigned, as at ingress: a second From: breaks the signature
        forged = message.replace(b"To: a@far.test", b"From: eve@evil.test\r\nTo: a@far.test")
        assert not dkim.verify(forged, dnsfunc=lookup)
    assert b".a line of the original" in sink.messages[0].data  # unstuffed by the sink
    assert b"Away until Monday.\r\nBack soon." in sink.messages[2].data
    assert _count("signed") - signed_before == 3

    # a vacation reply from a domain without a key: unsigned, counted
    other = AUTOREPLY.replace(b"joe@example.com", b"carol@other.test")
    await _send(rig, worker, other, ORIGIN_AUTOREPLY)
    assert sink.messages[-1].data == other.replace(b"\nBack", b"\r\nBack")
    assert _count("no_key") - no_key_before == 1

    # what our users or others wrote, From: a domain with keys: never signed here (SMTP
    # mail was signed at ingress if it could be; a forward's or list mail's From: is
    # whoever wrote it, and our signature would vouch for a forgery)
    for n, origin in enumerate((ORIGIN_SMTP, ORIGIN_FORWARD, ORIGIN_LIST, ORIGIN_UNSPECIFIED)):
        data = AUTOREPLY.replace(b"\n\r\nAway", b"\nX-N: %d\r\n\r\nAway" % n)
        await _send(rig, worker, data, origin, sender="joe@example.com")
        assert sink.messages[-1].data == data.replace(b"\nBack", b"\r\nBack"), origin
    assert _count("signed") - signed_before == 3


async def test_a_bounce_with_a_line_over_998_octets_leaves_unsigned_and_is_counted(
        rig: Rig, dns_server: DnsServer, smtp_servers: list[Any], tmp_path: Path) -> None:
    """Folding it on the way out (as Postfix does) would break any signature over it: it
    goes unsigned, folded, and counted, and is still delivered (a bounce is not lost for
    want of a signature)."""
    sink = Smtp().start()
    smtp_servers.append(sink)
    await rig.routes(f"far.test:127.0.0.1:{sink.port}")
    worker = await _signing_worker(rig, dns_server, tmp_path)
    before = _count("long_line")
    long_bounce = BOUNCE.replace(b"--b--", b"x" * 1200 + b"\r\n--b--")
    await _send(rig, worker, long_bounce, ORIGIN_BOUNCE)
    got = sink.messages[-1].data
    assert b"DKIM-Signature" not in got
    assert max(map(len, got.split(b"\r\n"))) <= 998
    assert _count("long_line") - before == 1
    # the next bounce, short again, is signed
    await _send(rig, worker, BOUNCE, ORIGIN_BOUNCE)
    assert dkim.verify(sink.messages[-1].data, dnsfunc=dns_server.txt)


async def test_a_vacation_reply_is_not_signed_with_a_parent_domains_keys(
        rig: Rig, dns_server: DnsServer, smtp_servers: list[Any], tmp_path: Path) -> None:
    """A vacation reply's From: is a mailbox, so its domain is a hosted domain: a customer
    of its own, even as a subdomain of another (dept.example.com under example.com). As
    smtp-ingress does not sign that mailbox's own mail with its parent's keys
    (dkim_rights), nor does its reply go out with them: it would lend example.com's name to
    another customer's text. A bounce, the platform's own (From: MAILER-DAEMON@<me>), is
    signed with the key of me's parent, as before."""
    sink = Smtp().start()
    smtp_servers.append(sink)
    await rig.routes(f"far.test:127.0.0.1:{sink.port}")
    worker = await _signing_worker(rig, dns_server, tmp_path)
    signed_before, refused_before = _count("signed"), _count("not_entitled")
    reply = AUTOREPLY.replace(b"joe@example.com", b"amy@dept.example.com")
    await _send(rig, worker, reply, ORIGIN_AUTOREPLY)
    assert b"DKIM-Signature" not in sink.messages[-1].data
    assert _count("not_entitled") - refused_before == 1
    await _send(rig, worker, BOUNCE, ORIGIN_BOUNCE)   # mx.ours.test: ours.test's key
    assert dkim.verify(sink.messages[-1].data, dnsfunc=dns_server.txt)
    assert _count("signed") - signed_before == 1
