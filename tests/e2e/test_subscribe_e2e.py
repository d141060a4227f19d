"""Joining and leaving a list by mail end to end, as on an ezmlm host: `mailyard list
subscription news@ confirm`, a request over SMTP from a remote subscriber, the confirmation
request out through the queue and remote-delivery to the subscriber's server (the loopback
sink), the reply over SMTP, the welcome, the next post, then leaving the same way. Every
service is the real one `mailyard up` runs, local-delivery with its listmail token."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

import pytest

from tests.e2e.conftest import Mailyard

LIST = "news@example.test"
ANN = "ann@remote.test"
OWNER = "joe@example.test"
RETURN = "news+return@example.test"


@pytest.fixture(scope="module", autouse=True)
def directory(mailyard: Mailyard) -> None:
    mailyard.cli("domain", "add", "example.test")
    mailyard.cli("user", "add", OWNER, "--password-stdin", stdin="correct horse battery\n")
    mailyard.cli("route", "set", "remote.test", f"127.0.0.1:{mailyard.sink.port}")
    mailyard.cli("list", "add", LIST, "--owner", OWNER, OWNER)
    assert "subscription=confirm" in mailyard.cli("list", "subscription", LIST, "confirm")


def _send(mailyard: Mailyard, sender: str, to: str, subject: str = "") -> None:
    body = f"From: {sender or 'robot@remote.test'}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n\r\n"
    with mailyard.smtp() as client:
        client.sendmail(sender, [to], body.encode())


def _next(mailyard: Mailyard, before: int) -> EmailMessage:
    got = mailyard.sink.wait_for(before + 1)
    assert len(got) == before + 1, "nothing reached the subscriber's server"
    message = email.message_from_bytes(got[-1].data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_join_confirm_receive_and_leave_by_mail(mailyard: Mailyard) -> None:
    before = len(mailyard.sink.messages)
    _send(mailyard, ANN, "news+subscribe@example.test", "subscribe")
    request = _next(mailyard, before)
    assert mailyard.sink.messages[-1].mail_from == RETURN  # ezmlm's, not <>
    assert mailyard.sink.messages[-1].rcpt_tos == [ANN]
    confirm = str(request["Reply-To"])
    assert confirm.startswith("news+sc.") and confirm.endswith("-ann=remote.test@example.test")
    assert ANN not in mailyard.cli("list", "show", LIST)

    _send(mailyard, ANN, confirm, "Re: confirm subscribe")
    welcome = _next(mailyard, before + 1)
    assert "welcome" in str(welcome["Subject"])
    assert ANN in mailyard.cli("list", "show", LIST).split()

    _send(mailyard, OWNER, LIST, "news of the day")
    copy = _next(mailyard, before + 2)
    assert copy["List-Unsubscribe"] == "<mailto:news+unsubscribe@example.test>"

    _send(mailyard, ANN, "news+unsubscribe@example.test", "unsubscribe")
    leave = str(_next(mailyard, before + 3)["Reply-To"])
    assert leave.startswith("news+uc.")
    _send(mailyard, ANN, leave)
    assert "goodbye" in str(_next(mailyard, before + 4)["Subject"])
    assert ANN not in mailyard.cli("list", "show", LIST).split()
    mailyard.queue_empty()


def test_the_null_sender_gets_no_answer_and_a_forged_cookie_no_bounce(
        mailyard: Mailyard) -> None:
    """A forged cookie changes nothing and bounces to nobody (its sender may be forged):
    the address it names gets a new request, as ezmlm-manage's sub-bad does."""
    before = len(mailyard.sink.messages)
    _send(mailyard, "", "news+subscribe@example.test")
    forged = "news+sc.6751a2b3." + "0" * 20 + "-zed=remote.test@example.test"
    _send(mailyard, "forger@else.test", forged)
    again = _next(mailyard, before)  # the only message out: a new request to zed
    assert mailyard.sink.messages[-1].rcpt_tos == ["zed@remote.test"]
    assert "invalid or has expired" in again.as_string()
    assert str(again["Reply-To"]).startswith("news+sc.")
    mailyard.queue_empty()
    assert len(mailyard.sink.messages) == before + 1
    assert "zed@remote.test" not in mailyard.cli("list", "show", LIST).split()


def test_a_bounce_of_a_request_comes_back_to_the_list_and_is_dropped(
        mailyard: Mailyard) -> None:
    """A request to an address its server refuses went from <>, so its bounce was a double
    bounce to our postmaster, and a BATV-checking receiver refused it. It goes from
    news+return@ now: the bounce comes back there over the queue, and is dropped (logged),
    as is a bounce sent to that address over SMTP (refused 550 5.7.1 before); neither is
    posted to the list's members, answered or bounced."""
    mailyard.sink.refuse["gone@remote.test"] = "550 5.1.1 no such user"
    before, posts = len(mailyard.sink.messages), mailyard.count(OWNER)
    _send(mailyard, ANN, "news+subscribe-gone=remote.test@example.test", "subscribe")
    mailyard.wait_cli("dropped: mail to the return address", "log", "--address", RETURN)
    _send(mailyard, "", RETURN, "failure notice")
    mailyard.queue_empty()
    assert len(mailyard.sink.messages) == before
    assert mailyard.count(OWNER) == posts
    log = mailyard.cli("log", "--address", RETURN)
    assert log.count("dropped: mail to the return address") == 2, log
