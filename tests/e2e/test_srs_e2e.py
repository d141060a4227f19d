"""SRS end to end: a forward of outside mail to another domain leaves (remote-delivery to
the loopback sink) from an SRS0 address of the forwarding domain; the next hop's bounce to
that address comes back in over SMTP from a client that may not relay, and is relayed to
the original sender; a made-up SRS address is refused at RCPT."""

from __future__ import annotations

import pytest

from mailyard.core import srs
from tests.e2e.conftest import Mailyard

JOE = "joe@example.test"       # forwards to BOB and ANN
ANN = "ann@example.test"       # a local copy: keeps the sender
BOB = "bob@remote.test"
ALICE = "alice@paypal.test"    # writes to JOE
CARL = "carl@example.test"     # forwards to GONE, which the next hop refuses
GONE = "gone@remote.test"


@pytest.fixture(scope="module", autouse=True)
def directory(mailyard: Mailyard) -> None:
    mailyard.cli("domain", "add", "example.test")
    mailyard.cli("user", "add", JOE, "--password-stdin", stdin="correct horse battery\n")
    mailyard.cli("user", "add", ANN, "--password-stdin", stdin="correct horse battery\n")
    mailyard.cli("forward", "set", JOE, BOB, ANN)
    for domain in ("remote.test", "paypal.test"):
        mailyard.cli("route", "set", domain, f"127.0.0.1:{mailyard.sink.port}")
    # 127.0.0.1 may relay; 127.0.0.2 is the outside world (the next hop's MX)
    mailyard.cli("rules", "import", "-", stdin='127.0.0.1:allow,RELAYCLIENT=""\n:allow\n')


def test_forward_goes_out_with_srs_and_its_bounce_reaches_the_sender(mailyard: Mailyard
                                                                       ) -> None:
    before = len(mailyard.sink.messages)
    body = (f"From: {ALICE}\r\nTo: {JOE}\r\nSubject: invoice\r\n"
            f"Message-ID: <invoice@paypal.test>\r\n\r\nhello\r\n").encode()
    with mailyard.smtp() as client:
        client.sendmail(ALICE, [JOE], body)
    forwarded = mailyard.sink.wait_for(before + 1)[-1]
    assert forwarded.rcpt_tos == [BOB]
    sender = forwarded.mail_from
    assert sender.startswith("SRS0=") and sender.endswith("=paypal.test=alice@example.test"), \
        sender
    mailyard.wait_cli(sender, "log", "--address", BOB)
    local_copy = mailyard.wait_maildir(ANN, 1)[0]
    assert local_copy.startswith(f"Return-Path: <{ALICE}>".encode()), local_copy[:80]

    # the next hop's bounce, from a client that may not relay (127.0.0.2)
    with mailyard.smtp("127.0.0.2") as client:
        client.mail("<>")
        assert client.rcpt(ALICE)[0] == 553  # no relay for it but through the SRS address
    bounce = (f"From: MAILER-DAEMON@remote.test\r\nTo: {sender}\r\nSubject: failure\r\n"
              f"\r\nno such user\r\n").encode()
    with mailyard.smtp("127.0.0.2") as client:
        client.sendmail("", [sender], bounce)
    returned = mailyard.sink.wait_for(before + 2)[-1]
    assert returned.rcpt_tos == [ALICE] and returned.mail_from in ("", "<>")
    assert b"no such user" in returned.data
    # hash compared without case, as libsrs2 does
    with mailyard.smtp("127.0.0.2") as client:
        client.mail("<>")
        assert client.rcpt(sender.lower())[0] == 250
        client.rset()

    # made up, or another domain's address behind our SRS prefix: never relayed
    local = sender.rpartition("@")[0]
    digest = local.split("=")[1]
    other = "AAAA" if digest.upper() != "AAAA" else "BBBB"
    with mailyard.smtp("127.0.0.2") as client:
        client.mail("<>")
        for forged in (sender.replace(digest, other, 1),
                       sender.replace("=paypal.test=", "=victim.test=", 1),
                       "SRS0=xx@example.test", "SRS1=abcd=x.test==@example.test"):
            code, text = client.rcpt(forged)
            assert code == 550 and b"SRS address is invalid or expired" in text, (forged, text)
    mailyard.queue_empty()
    assert len(mailyard.sink.messages) == before + 2


def test_local_senders_and_null_sender_are_forwarded_as_they_are(mailyard: Mailyard) -> None:
    before = len(mailyard.sink.messages)
    with mailyard.smtp() as client:
        client.sendmail("", [JOE], b"Subject: a bounce\r\n\r\nx\r\n")
    got = mailyard.sink.wait_for(before + 1)[-1]
    assert got.mail_from in ("", "<>") and got.rcpt_tos == [BOB]
    before = len(mailyard.sink.messages)
    with mailyard.smtp() as client:  # a sender of our own domains: SPF passes as it is
        client.sendmail(ANN, [JOE], b"Subject: ours\r\n\r\nx\r\n")
    got = mailyard.sink.wait_for(before + 1)[-1]
    assert got.mail_from == ANN and got.rcpt_tos == [BOB]


def test_srs_off_forwards_with_the_original_sender(mailyard: Mailyard) -> None:
    mailyard.cli("control", "set", "srs", "off")
    try:
        before = len(mailyard.sink.messages)
        with mailyard.smtp() as client:
            client.sendmail(ALICE, [JOE], b"Subject: off\r\n\r\nx\r\n")
        got = mailyard.sink.wait_for(before + 1)[-1]
        assert got.mail_from == ALICE and got.rcpt_tos == [BOB]
    finally:
        mailyard.cli("control", "del", "srs")


def test_a_bad_srs_control_is_refused(mailyard: Mailyard) -> None:
    out = mailyard.cli("control", "set", "srs", "maybe", check=False)
    assert "must be one of on, off" in out and "Traceback" not in out


def test_no_smtp_error_for_srs_at_a_domain_not_ours(mailyard: Mailyard) -> None:
    with mailyard.smtp("127.0.0.2") as client:
        client.mail("<>")
        code, _ = client.rcpt("SRS0=abcd=AB=paypal.test=alice@elsewhere.test")
        assert code == 553  # not ours: rcpthosts, as any other address there


def test_our_own_bounce_of_a_forwarded_copy_reaches_the_original_sender(mailyard: Mailyard
                                                                        ) -> None:
    # the next hop refuses the forwarded copy at RCPT: the queue's bounce goes to the copy's
    # sender, our SRS address, and must be reversed on its way, as one from outside is
    mailyard.cli("user", "add", CARL, "--password-stdin", stdin="correct horse battery\n")
    mailyard.cli("forward", "set", CARL, GONE)
    mailyard.sink.refuse[GONE] = "550 5.1.1 no such user"
    before = len(mailyard.sink.messages)
    with mailyard.smtp() as client:
        client.sendmail(ALICE, [CARL], b"Subject: to carl\r\n\r\nhello carl\r\n")
    bounce = mailyard.sink.wait_for(before + 1, timeout=40)
    assert len(bounce) == before + 1, "the bounce of the forwarded copy never left"
    assert bounce[-1].rcpt_tos == [ALICE] and bounce[-1].mail_from in ("", "<>")
    assert b"no such user" in bounce[-1].data
    mailyard.queue_empty()


def test_a_list_whose_owner_is_elsewhere_sends_from_srs_and_its_bounces_reach_the_owner(
        mailyard: Mailyard) -> None:
    # copies from owner@gmail sent by our IP failed SPF at the members' hosts; from an SRS
    # address of the list's domain, a member's bounce comes back and reaches the owner
    # alone, neither the members nor the author
    owner, member = "owner@paypal.test", "member@remote.test"
    mailyard.cli("list", "add", "news@example.test", "--owner", owner, member)
    before = len(mailyard.sink.messages)
    with mailyard.smtp() as client:
        client.sendmail(ALICE, ["news@example.test"],
                        f"From: {ALICE}\r\nSubject: news\r\n\r\nhello list\r\n".encode())
    copy = mailyard.sink.wait_for(before + 1)[-1]
    assert copy.rcpt_tos == [member]
    sender = copy.mail_from
    assert sender.startswith("SRS0=") and sender.endswith("=paypal.test=owner@example.test"), \
        sender
    with mailyard.smtp("127.0.0.2") as client:
        client.sendmail("", [sender], f"From: MAILER-DAEMON@remote.test\r\nTo: {sender}\r\n"
                        f"Subject: failure\r\n\r\nmailbox full\r\n".encode())
    returned = mailyard.sink.wait_for(before + 2)[-1]
    assert returned.rcpt_tos == [owner] and returned.mail_from in ("", "<>")
    mailyard.queue_empty()
    assert len(mailyard.sink.messages) == before + 2


def test_an_srs1_chain_reverses_to_the_first_forwarder_end_to_end(mailyard: Mailyard) -> None:
    # Alice's mail came through another forwarder with SRS (fwd.test): JOE's forward goes
    # out as SRS1 keeping that forwarder's SRS0 part, and the next hop's bounce to it is
    # relayed to the SRS0 address at fwd.test, whose own secret reverses it to Alice
    mailyard.cli("route", "set", "fwd.test", f"127.0.0.1:{mailyard.sink.port}")
    first = srs.forward(ALICE, "fwd.test", [b"fwd.test's own secret"])
    before = len(mailyard.sink.messages)
    with mailyard.smtp() as client:
        client.sendmail(first, [JOE], b"Subject: via fwd\r\n\r\nhello\r\n")
    forwarded = next(m for m in mailyard.sink.wait_for(before + 1)[before:]
                     if m.rcpt_tos == [BOB])
    chained = forwarded.mail_from
    assert chained.startswith("SRS1=") and chained.endswith("@example.test"), chained
    before = len(mailyard.sink.messages)
    with mailyard.smtp("127.0.0.2") as client:
        client.sendmail("", [chained], b"Subject: failure\r\n\r\nno such user\r\n")
    returned = mailyard.sink.wait_for(before + 1)[-1]
    assert returned.rcpt_tos == [first] and returned.mail_from in ("", "<>")
    assert srs.reverse(returned.rcpt_tos[0], [b"fwd.test's own secret"]) == ALICE
    mailyard.queue_empty()


def test_our_own_bounce_reaches_the_sender_with_an_srsdomain_we_do_not_host(
        mailyard: Mailyard) -> None:
    # control srsdomain names a domain only our SRS addresses live at (its MX is us, no
    # hosted domain): the queue's own bounce of a forwarded copy to SRS0@srs.example.test
    # went out by DNS, to a name that loops back to us or has no host, and was lost
    mailyard.cli("user", "add", "dora@example.test", "--password-stdin",
                 stdin="correct horse battery\n")
    mailyard.cli("forward", "set", "dora@example.test", "nobody@remote.test")
    mailyard.sink.refuse["nobody@remote.test"] = "550 5.1.1 no such user"
    mailyard.cli("control", "set", "srsdomain", "srs.example.test")
    try:
        before = len(mailyard.sink.messages)
        with mailyard.smtp() as client:
            client.sendmail(ALICE, ["dora@example.test"], b"Subject: to dora\r\n\r\nhi\r\n")
        bounce = mailyard.sink.wait_for(before + 1, timeout=40)
        assert len(bounce) == before + 1, "the bounce of the forwarded copy never left"
        assert bounce[-1].rcpt_tos == [ALICE] and bounce[-1].mail_from in ("", "<>")
        assert b"no such user" in bounce[-1].data
        mailyard.queue_empty()
    finally:
        mailyard.cli("control", "del", "srsdomain")
