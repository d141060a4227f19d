"""Vacation replies (RFC 3834) through the real worker, nats-server and spool: the reply is
queued from <> to the envelope sender with the right headers, once per sender per interval,
never to automatic, list, bulk or unaddressed mail, and never at the cost of the delivery."""

from __future__ import annotations

import email
import re
import time
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError
from prometheus_client import REGISTRY

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED
from mailyard.api.mail.v1.envelope_pb2 import ORIGIN_AUTOREPLY
from mailyard.core import bus

from .conftest import Env

JOE = "joe@example.org"
ANN = "ann@remote.test"
AWAY = "Back on Monday.\nJoe\n"


def _msg(*headers: str, to: str = JOE, subject: str = "Lunch?") -> bytes:
    lines = [f"From: Ann <{ANN}>", f"To: {to}", f"Subject: {subject}",
             "Message-ID: <m1@remote.test>", *headers]
    return ("\r\n".join(lines) + "\r\n\r\nhello\r\n").encode()


def _auto(**fields: Any) -> pb.Autoresponse:
    return pb.Autoresponse(**{"enabled": True, "body": AWAY, **fields})


async def _joe(env: Env, **fields: Any) -> None:
    await env.domain("example.org")
    await env.mailbox(JOE, gecos="Joe Bloggs", autoresponse=_auto(**fields))


async def _deliver(env: Env, sender: str, data: bytes, rcpt: str = JOE) -> None:
    await env.job(sender, [rcpt], data)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED, rr.reply


def _parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _metric(result: str) -> float:
    return REGISTRY.get_sample_value("mailyard_local_autoreplies_total",
                                     {"result": result}) or 0.0


async def test_reply_is_queued_from_null_sender_with_rfc3834_headers(env: Env) -> None:
    await _joe(env, subject="Away:\u00a0até segunda")  # the NBSP stays one
    await env.start()
    sent = _metric("sent")
    data = _msg("References: <m0@remote.test>")
    await _deliver(env, ANN, data)
    assert len(env.messages(JOE)) == 1  # the original is delivered as ever

    envelope, raw = await env.todo()
    assert (envelope.sender, list(envelope.recipients)) == ("", [ANN])
    assert envelope.origin == ORIGIN_AUTOREPLY and not envelope.smtputf8
    assert raw.isascii() and b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    reply = _parsed(raw)
    assert reply["From"] == f"Joe Bloggs <{JOE}>" and reply["To"] == ANN
    assert reply["Subject"] == "Away:\u00a0até segunda"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["In-Reply-To"] == "<m1@remote.test>"
    assert reply["References"] == "<m0@remote.test> <m1@remote.test>"
    assert reply["Message-ID"].endswith("@mx.example.org>") and reply["Date"]
    assert reply.get_content_type() == "text/plain"
    assert reply.get_content_charset() == "utf-8"
    assert reply.get_content().replace("\r\n", "\n") == AWAY
    assert _metric("sent") == sent + 1


async def test_once_per_sender_per_interval_in_a_bounded_bucket(env: Env) -> None:
    await _joe(env, body="Ausente até segunda-feira. 🌴\n")
    await env.start(autoreply_interval=3600)
    repeat = _metric("repeat")
    await _deliver(env, ANN, _msg(subject="Re: plans"))
    _, raw = await env.todo()
    reply = _parsed(raw)
    assert raw.isascii() and reply["Content-Transfer-Encoding"] == "quoted-printable"
    assert reply["Subject"] == "Re: plans"  # no "Re: Re:"
    assert reply.get_content().replace("\r\n", "\n") == "Ausente até segunda-feira. 🌴\n"
    await _deliver(env, ANN, _msg())
    await _deliver(env, ANN.upper(), _msg())
    assert await env.todo_count() == 0 and _metric("repeat") == repeat + 2
    await _deliver(env, "bob@remote.test", _msg())
    envelope, _ = await env.todo()
    assert list(envelope.recipients) == ["bob@remote.test"]

    info = await env.js.stream_info(f"KV_{bus.KV_AUTOREPLIES}")
    assert info.config.max_age == 3600 and info.state.messages == 2  # digests, not addresses
    kv = await env.js.key_value(bus.KV_AUTOREPLIES)
    assert all("@" not in key for key in await kv.keys())


@pytest.mark.parametrize(("sender", "headers", "to"), [
    ("", (), JOE),
    ("MAILER-DAEMON@remote.test", (), JOE),
    ("owner-news@remote.test", (), JOE),
    ("news-request@remote.test", (), JOE),
    (ANN, ("Auto-Submitted: auto-generated",), JOE),
    (ANN, ("Auto-Submitted: auto-replied; owner-email=x@remote.test",), JOE),
    (ANN, ("Precedence: bulk",), JOE),
    (ANN, ("Precedence: list",), JOE),
    (ANN, ("Precedence: JUNK",), JOE),
    (ANN, ("List-Id: News <news.remote.test>",), JOE),
    (ANN, ("List-Unsubscribe: <mailto:leave@remote.test>",), JOE),
    (ANN, ("X-Spam: Yes",), JOE),
    (ANN, (), "undisclosed-recipients:;"),  # Bcc
    (ANN, (), "joe@example.org.evil.test"),
    (JOE, (), JOE),
])
async def test_rfc3834_exclusions_get_no_reply(env: Env, sender: str, headers: tuple[str, ...],
                                               to: str) -> None:
    await _joe(env)
    await env.start()
    excluded = _metric("excluded")
    await _deliver(env, sender, _msg(*headers, to=to))
    assert len(env.messages(JOE)) == 1
    assert await env.todo_count() == 0
    assert _metric("excluded") == excluded + 1


async def test_auto_submitted_no_and_cc_and_alias_are_answered(env: Env) -> None:
    await _joe(env)
    await env.alias("info@example.org", JOE)
    await env.start()
    await _deliver(env, ANN, _msg("Auto-Submitted: no", "Cc: Joe <JOE@Example.ORG>",
                                  to="someone@remote.test"))
    assert (await env.todo())[0].recipients == [ANN]
    await _deliver(env, "bob@remote.test", _msg(to="Info <info@example.org>"),
                   rcpt="info@example.org")
    envelope, raw = await env.todo()
    assert envelope.recipients == ["bob@remote.test"] and _parsed(raw)["From"].endswith(
        f"<{JOE}>")


async def test_off_before_start_and_after_end_get_no_reply(env: Env) -> None:
    await env.domain("example.org")
    now = int(time.time())
    later, earlier = pb.Autoresponse(), pb.Autoresponse()
    later.start.FromSeconds(now + 3600)
    earlier.end.FromSeconds(now - 1)
    await env.mailbox("a@example.org", autoresponse=_auto(enabled=False))
    await env.mailbox("b@example.org", autoresponse=_auto(start=later.start))
    await env.mailbox("c@example.org", autoresponse=_auto(end=earlier.end))
    await env.start()
    for rcpt in ("a@example.org", "b@example.org", "c@example.org"):
        await _deliver(env, ANN, _msg(to=rcpt), rcpt=rcpt)
    assert await env.todo_count() == 0


async def test_no_header_injection_through_subjects_or_ids(env: Env) -> None:
    await env.domain("example.org")
    # written past the directory's checks (an older record, a hand-made KV value)
    await env.mailbox(JOE, gecos="Joe\r\nBcc: gecos@evil.test",
                      autoresponse=_auto(subject="", body="x\r\nBcc: body@evil.test\r\n"))
    await env.start()
    hostile = _msg("References: <a@b>\r\n\tBcc: refs@evil.test",
                   subject="=?utf-8?q?hi=0D=0ABcc=3A_subject=40evil.test?=")
    hostile = hostile.replace(b"Message-ID: <m1@remote.test>",
                              b"Message-ID: <m1@remote.test> Bcc: id@evil.test")
    await _deliver(env, ANN, hostile)
    _, raw = await env.todo()
    reply = _parsed(raw)
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"(?im)^[ \t]*bcc[ \t]*:", header)
    assert sorted(reply.keys()) == sorted(["From", "To", "Subject", "Date", "Message-ID",
                                           "In-Reply-To", "References", "Auto-Submitted",
                                           "Content-Type", "Content-Transfer-Encoding",
                                           "MIME-Version"])
    assert reply["Subject"] == "Re: hi Bcc: subject@evil.test"
    assert reply["In-Reply-To"] == "<m1@remote.test>"
    assert reply["References"] == "<a@b> <m1@remote.test>"


async def test_failing_reply_leaves_the_delivery_alone(env: Env) -> None:
    await _joe(env)
    # JetStream out of room for the bucket: the claim cannot be written
    await env.js.create_key_value(KeyValueConfig(bucket=bus.KV_AUTOREPLIES, max_bytes=1))
    await env.start()
    failed = _metric("failed")
    await _deliver(env, ANN, _msg())
    assert len(env.messages(JOE)) == 1
    assert await env.todo_count() == 0 and _metric("failed") == failed + 1
    # the bucket, made elsewhere without a TTL, was given the interval as its TTL
    info = await env.js.stream_info(f"KV_{bus.KV_AUTOREPLIES}")
    assert info.config.max_age == 7 * 86400 and info.config.max_bytes == 1


async def test_a_mailbox_without_autoresponse_is_not_read_for_one(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox(JOE)
    await env.start()
    await _deliver(env, ANN, _msg())
    assert await env.todo_count() == 0
    with pytest.raises(BucketNotFoundError):
        await env.js.key_value(bus.KV_AUTOREPLIES)


async def test_a_reply_to_mail_forwarded_with_srs_goes_to_the_srs_address(env: Env) -> None:
    """Ann's mail reached Joe through a forwarder with SRS: the envelope sender is the
    forwarder's SRS0 address, which reverses to Ann there; the reply goes to it (RFC 3834:
    the envelope sender) and out through the queue like any other."""
    await _joe(env)
    await env.start()
    srs_sender = "SRS0=HhHh=TT=remote.test=ann@forwarder.test"
    await _deliver(env, srs_sender, _msg())
    envelope, _ = await env.todo()
    assert (envelope.origin, envelope.sender, list(envelope.recipients)) == (
        ORIGIN_AUTOREPLY, "", [srs_sender])


async def test_once_per_author_through_a_forwarder_with_srs(env: Env) -> None:
    """A forwarder's SRS address for Ann changes daily (a new hash and day stamp): the
    once-per-sender memory was keyed by it, so Ann got a reply every day instead of once per
    interval. It is keyed by the author SRS carries; the reply still goes to the day's SRS
    address (the forwarder routes it back), and another author is answered."""
    await _joe(env)
    await env.start()
    repeat = _metric("repeat")
    monday = "SRS0=HhHh=TT=remote.test=ann@forwarder.test"
    await _deliver(env, monday, _msg())
    envelope, _ = await env.todo()
    assert list(envelope.recipients) == [monday]
    for later in ("SRS0=GgGg=TU=remote.test=ann@forwarder.test",  # Tuesday's
                  "srs0+KkKk=TV=Remote.Test=Ann@forwarder.test",
                  "SRS1=JjJj=forwarder.test==LlLl=TW=remote.test=ann@second.test"):
        await _deliver(env, later, _msg())
        assert await env.todo_count() == 0, later
    assert _metric("repeat") == repeat + 3
    bob = "SRS0=GgGg=TU=remote.test=bob@forwarder.test"
    await _deliver(env, bob, _msg())
    envelope, _ = await env.todo()
    assert list(envelope.recipients) == [bob]


async def test_once_per_author_whose_domain_signs_with_batv(env: Env) -> None:
    """Ann's domain signs its envelope senders with BATV (prvs=K DDD SSSSSS=ann@: a new
    tag every day, also through a forwarder with SRS): keyed by the signed address, Ann got
    a reply daily. It is keyed by Ann; the reply goes to the signed address (her domain
    takes bounces only at one)."""
    await _joe(env)
    await env.start()
    repeat = _metric("repeat")
    monday = "prvs=0123a1b2c3=ann@remote.test"
    await _deliver(env, monday, _msg())
    envelope, _ = await env.todo()
    assert list(envelope.recipients) == [monday]
    for later in ("prvs=0124d4e5f6=ann@remote.test", "PRVS=ann=0125aabbcc@remote.test",
                  "SRS0=HhHh=TT=remote.test=prvs=0126ddeeff=ann@forwarder.test"):
        await _deliver(env, later, _msg())
        assert await env.todo_count() == 0, later
    assert _metric("repeat") == repeat + 3


@pytest.mark.parametrize("sender", [
    "prvs=0123a1b2c3=owner-news@lists.remote.test",
    "PRVS=MAILER-DAEMON=0123a1b2c3@remote.test",
    "btv1==0f45a4d6a8f==mailer-daemon@remote.test",
    "SRS0=HhHh=TT=lists.remote.test=prvs=0123a1b2c3=owner-news@forwarder.test",
])
async def test_an_automatic_sender_signed_with_batv_gets_no_reply(env: Env, sender: str
                                                                  ) -> None:
    """A domain that signs its envelope senders with BATV puts the tag before the local
    part (prvs=TAG=owner-news@), so the automatic-sender rules never saw owner- or
    MAILER-DAEMON and its list bounces and DSNs got vacation replies; the rules now read
    the local part behind the tag (and behind SRS around it)."""
    await _joe(env)
    await env.start()
    excluded = _metric("excluded")
    await _deliver(env, sender, _msg())
    assert await env.todo_count() == 0
    assert _metric("excluded") == excluded + 1


@pytest.mark.parametrize("sender", [
    "SRS0=HhHh=TT=example.org=joe@forwarder.test",
    "SRS1=GgGg=forwarder.test==HhHh=TT=Example.Org=Joe@second.test",
])
async def test_the_mailboxs_own_mail_back_through_a_forwarder_gets_no_reply(
        env: Env, sender: str) -> None:
    """Joe's own mail, back to him through a forwarder with SRS (an address of his that
    forwards here): the mailbox-itself rule compared the SRS address, so Joe was sent his
    own vacation reply through the forwarder. The rule now compares the author."""
    await _joe(env)
    await env.start()
    excluded = _metric("excluded")
    await _deliver(env, sender, _msg())
    assert await env.todo_count() == 0
    assert _metric("excluded") == excluded + 1


async def test_our_own_lists_copies_get_no_reply(env: Env) -> None:
    """Joe is a member of our list: its copy (List-Id, Precedence: list, from the owner)
    is delivered and not answered, whoever posted."""
    await _joe(env)
    await env.mailing_list("news@example.org", "owner@example.org", JOE)
    await env.start()
    excluded = _metric("excluded")
    # To: Joe, so only the list fields keep the copy from a reply
    await _deliver(env, ANN, _msg(), rcpt="news@example.org")
    envelope, data = await env.todo()
    await _deliver(env, envelope.sender, data, rcpt=JOE)
    assert len(env.messages(JOE)) == 1
    assert await env.todo_count() == 0 and _metric("excluded") == excluded + 1


@pytest.mark.parametrize("sender", [
    "SRS0=HhHh=TT=lists.remote.test=owner-news@forwarder.test",
    "SRS0=HhHh=TT=remote.test=MAILER-DAEMON@forwarder.test",
    "SRS1=GgGg=forwarder.test==HhHh=TT=lists.remote.test=owner-news@second.test",
    "srs0+HhHh=TT=lists.remote.test=Owner-News@forwarder.test",
])
async def test_an_automatic_sender_forwarded_with_srs_gets_no_reply(env: Env, sender: str
                                                                   ) -> None:
    """owner-news@ or MAILER-DAEMON@ forwarded to us through a forwarder with SRS: the
    envelope sender's local part begins SRS0=/SRS1= and ends with the author's, so the
    automatic-sender rules never saw owner-, and such a list's bounce address got a
    vacation reply; the rules now read the local part SRS carries."""
    await _joe(env)
    await env.start()
    excluded = _metric("excluded")
    await _deliver(env, sender, _msg())
    assert await env.todo_count() == 0
    assert _metric("excluded") == excluded + 1
