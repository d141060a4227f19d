"""A vacation message end to end: set with `mailyard vacation set`, a message in over SMTP
from a remote sender, the reply out through the queue and remote-delivery to the sender's
server (the loopback sink) from <>, once; in the history as an autoreply."""

from __future__ import annotations

import email
import time
from email import policy

import pytest

from tests.e2e.conftest import Mailyard

JOE = "joe@example.test"
ANN = "ann@remote.test"


@pytest.fixture(scope="module", autouse=True)
def directory(mailyard: Mailyard) -> None:
    mailyard.cli("domain", "add", "example.test")
    mailyard.cli("user", "add", JOE, "--password-stdin", "--gecos", "Joe Bloggs",
                 stdin="correct horse battery\n")
    mailyard.cli("route", "set", "remote.test", f"127.0.0.1:{mailyard.sink.port}")
    mailyard.cli("vacation", "set", JOE, "--subject", "Away until Monday",
                 "--body", "Back on Monday.\n")


def _send(mailyard: Mailyard, subject: str) -> None:
    body = (f"From: Ann <{ANN}>\r\nTo: Joe <{JOE}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@remote.test>\r\n\r\nhello\r\n")
    with mailyard.smtp() as client:
        client.sendmail(ANN, [JOE], body.encode())


def test_the_reply_reaches_the_sender_once(mailyard: Mailyard) -> None:
    before = len(mailyard.sink.messages)
    _send(mailyard, "lunch")
    mailyard.wait_maildir(JOE, 1)
    got = mailyard.sink.wait_for(before + 1)
    assert len(got) == before + 1, "no vacation reply reached the sender's server"
    reply = got[-1]
    assert reply.mail_from in ("", "<>") and reply.rcpt_tos == [ANN]
    msg = email.message_from_bytes(reply.data, policy=policy.default)
    assert msg["From"] == f"Joe Bloggs <{JOE}>" and msg["To"] == ANN
    assert msg["Subject"] == "Away until Monday"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<lunch@remote.test>"
    mailyard.queue_empty()
    mailyard.wait_cli("autoreply", "log", "--address", ANN)

    _send(mailyard, "dinner")  # within the week: delivered, not answered
    mailyard.wait_maildir(JOE, 2)
    mailyard.queue_empty()
    time.sleep(1)
    assert len(mailyard.sink.messages) == before + 1
