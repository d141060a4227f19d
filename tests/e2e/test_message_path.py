"""One message's whole path: SMTP in, spool + JetStream, queue, Maildir or remote SMTP."""

from __future__ import annotations

import mailbox
import smtplib
import time
import urllib.request

import pytest

from tests.e2e.conftest import E2E_ME, Mailyard

BODY = (b"From: sender@client.test\r\nTo: postmaster@example.test\r\n"
        b"Subject: first message\r\n\r\n"
        b"Hello.\r\n.leading dot survives\r\n\xc3\xa9 8-bit line\r\n")


@pytest.fixture(scope="module", autouse=True)
def directory(mailyard: Mailyard) -> None:
    mailyard.cli("domain", "add", "example.test")
    mailyard.cli("user", "add", "postmaster@example.test", "--password-stdin",
                 stdin="correct horse battery\n")
    mailyard.cli("route", "set", "remote.test", f"127.0.0.1:{mailyard.sink.port}")


def test_local_mailbox_gets_the_body_byte_exact(mailyard: Mailyard) -> None:
    with mailyard.smtp() as client:
        code, reply = client.docmd("MAIL FROM:<sender@client.test>")
        assert code == 250
        client.rcpt("postmaster@example.test")
        code, reply = client.data(BODY)
    assert code == 250 and reply.startswith(b"ok ")
    queue_id = reply.split()[1].decode()
    [stored] = mailyard.wait_maildir("postmaster@example.test", 1)
    assert stored.endswith(BODY)  # only trace headers are prepended
    headers = stored[: -len(BODY)]
    assert b"Delivered-To: postmaster@example.test" in headers
    assert b"Return-Path: <sender@client.test>" in headers
    assert queue_id.encode() in headers  # the Received: line names the queue id
    mailyard.queue_empty()


def test_remote_domain_reaches_the_sink_through_a_static_route(mailyard: Mailyard) -> None:
    before = len(mailyard.sink.messages)
    body = BODY.replace(b"postmaster@example.test", b"someone@remote.test")
    with mailyard.smtp() as client:
        client.sendmail("sender@client.test", ["someone@remote.test"], body)
    got = mailyard.sink.wait_for(before + 1)
    assert len(got) == before + 1
    received = got[-1]
    assert received.rcpt_tos == ["someone@remote.test"]
    assert received.mail_from == "sender@client.test"
    assert received.data.endswith(body)
    out = mailyard.queue_empty()
    assert "not yet preprocessed: 0" in out


def test_non_relay_client_gets_qmails_rcpthosts_reply(mailyard: Mailyard) -> None:
    # 127.0.0.1 may relay, every other address may only send to our domains
    rules = '127.0.0.1:allow,RELAYCLIENT=""\n:allow\n'
    mailyard.cli("rules", "import", "-", stdin=rules)
    try:
        with mailyard.smtp(source="127.0.0.2") as client:
            client.docmd("MAIL FROM:<spammer@client.test>")
            code, reply = client.docmd("RCPT TO:<victim@remote.test>")
            assert (code, reply) == (
                553, b"5.7.1 sorry, that domain isn't in my list of allowed rcpthosts")
            code, _ = client.docmd("RCPT TO:<postmaster@example.test>")
            assert code == 250  # our own domains are still open to everyone
    finally:
        mailyard.cli("rules", "import", "-", stdin='127.:allow,RELAYCLIENT=""\n:allow\n')


def test_kill_9_of_the_delivery_worker_loses_nothing(mailyard: Mailyard) -> None:
    mailyard.platform.kill("local-delivery")
    with mailyard.smtp() as client:
        client.sendmail("sender@client.test", ["postmaster@example.test"], BODY)
    mailyard.wait_cli("messages in queue: 1", "queue", "stat")  # accepted, waits for a worker
    already = mailyard.count("postmaster@example.test")
    mailyard.platform.restart("local-delivery")
    mailyard.wait_maildir("postmaster@example.test", already + 1)
    mailyard.queue_empty()


def test_kill_9_of_the_queue_mid_stream_loses_nothing(mailyard: Mailyard) -> None:
    # the mail already there, by name: Maildir names do not sort in delivery order (the
    # microseconds are not zero-padded), so "the last 20 by name" could miss a new one
    # (none when this test is the module's first to write there: the Maildir is made by
    # the first delivery)
    try:
        before = set(mailyard.maildir("postmaster@example.test").keys())
    except mailbox.NoSuchMailboxError:
        before = set()
    with mailyard.smtp() as client:
        for i in range(20):
            client.sendmail("sender@client.test", ["postmaster@example.test"],
                            BODY + f"message {i}\r\n".encode())
            if i == 5:
                mailyard.platform.kill("queue")
    mailyard.platform.restart("queue")
    # every one of them, by its text: a kill -9 may deliver one twice (at least once), so
    # a count can be reached while another is still on its way
    sent = {f"message {i}".encode() for i in range(20)}
    box = mailyard.maildir("postmaster@example.test")
    deadline = time.monotonic() + 60
    while not sent <= (bodies := {box.get_bytes(key).rsplit(b"\r\n", 2)[-2]
                                  for key in set(box.keys()) - before}):
        assert time.monotonic() < deadline, f"not delivered: {sorted(sent - bodies)}"
        time.sleep(0.2)
    mailyard.queue_empty()


def test_smtp_session_survives_a_rejected_command(mailyard: Mailyard) -> None:
    with mailyard.smtp() as client:
        assert client.ehlo_resp is not None
        assert client.ehlo_resp.decode().splitlines()[0] == E2E_ME  # control/me via --me
        code, _ = client.docmd("MAIL FROM:<bad address>")
        assert code >= 500
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("sender@client.test", ["nobody@example.test"], BODY)


def _accepted(mailyard: Mailyard, http_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mailyard_smtp_messages_accepted_total{"))


def test_ingress_replicas_share_the_smtp_port(mailyard: Mailyard) -> None:
    replicas = [run.spec for run in mailyard.platform.running.values()
                if run.spec.group == "smtp-ingress"]
    assert len(replicas) == 2
    before = {spec.name: _accepted(mailyard, spec.http_port) for spec in replicas}
    sent = 0
    for i in range(24):  # one connection each: the kernel spreads them over both
        with mailyard.smtp() as client:
            body = BODY.replace(b"postmaster@example.test", b"someone@remote.test")
            client.sendmail("sender@client.test", ["someone@remote.test"],
                            body + f"replica test {i}\r\n".encode())
            sent += 1
    gained = {spec.name: _accepted(mailyard, spec.http_port) - before[spec.name]
              for spec in replicas}
    assert sum(gained.values()) == sent
    assert all(n > 0 for n in gained.values()), gained  # 2**-23 chance of a false failure
    mailyard.queue_empty()


def _postmaster_box(mailyard: Mailyard) -> list[bytes]:
    new = mailyard.platform.spool_dir / "postmaster" / "Maildir" / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def test_the_postmaster_of_this_host_gets_mail_here(mailyard: Mailyard) -> None:
    """qmail's control/locals (me and localhost) with ~alias's .qmail-postmaster, -root and
    -mailer-daemon: mail to those names of this host, when `me` is no hosted domain, lands
    in the local postmaster mailbox, where double bounces go. It was queued as remote mail
    to a host name no MX serves, deferred for a week, then bounced: a bare <postmaster>
    (RFC 5321 4.5.1: accepted from anyone) never reached anybody."""
    before = len(_postmaster_box(mailyard))
    rcpts = ["postmaster", f"root@{E2E_ME}", "MAILER-DAEMON@localhost"]
    with mailyard.smtp() as client:
        for rcpt in rcpts:
            client.sendmail("sender@client.test", [rcpt], BODY + rcpt.encode() + b"\r\n")
    mailyard.queue_empty()
    got = _postmaster_box(mailyard)[before:]
    # the messages themselves, each with its recipient's line: not double bounces of them
    assert sorted(m.rsplit(b"\r\n", 2)[-2] for m in got) == sorted(r.encode() for r in rcpts)
    assert all(m.startswith(b"Return-Path: <sender@client.test>\r\n") for m in got)


def test_other_names_of_this_host_bounce_at_once(mailyard: Mailyard) -> None:
    """Any other name of this host has no mailbox: qmail-local's 5.1.1, a bounce now, not a
    week of deferrals."""
    box = "postmaster@example.test"
    before = mailyard.count(box)
    with mailyard.smtp() as client:
        client.sendmail(box, [f"nobody@{E2E_ME}"], BODY)
    mailyard.wait_maildir(box, before + 1)
    mailyard.queue_empty()
    [bounce] = [m for m in mailyard.wait_maildir(box, before + 1)
                if f"nobody@{E2E_ME}".encode() in m]
    assert b"Status: 5.1.1" in bounce and b"no mailbox here by that name" in bounce
