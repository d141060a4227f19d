"""Bounces and the retry schedule facing hostile or absurd input: what the control files
say, what a remote server answers, what the message and its envelope hold."""

from __future__ import annotations

import email
import email.policy
import time
from typing import Any

from mailyard.api.mail.v1.envelope_pb2 import Envelope
from mailyard.api.queue.v1 import queue_pb2 as qpb
from mailyard.core.inject import inject
from mailyard.core.spool import Spool

from .conftest import DEFERRED, FAILED, read_spool, send, set_control, wait_for


async def test_a_queuelifetime_past_a_float_means_never(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """The directory takes any positive integer; float() of 10**400 raised OverflowError in
    every deferral, the results task ended and with it the process (a restart met the same
    result again)."""
    await set_control(js, "queuelifetime", "9" * 400)
    q = start_queue()
    env = await send(spool, js, "alice@sender.test", ["r@remote.test"])
    job = await workers["remote"].job()
    await workers["remote"].report(job, DEFERRED, "451 4.7.1 greylisted, try later")

    async def deferred() -> bool:
        rcpt = (await q.explain(env.queue_id)).recipients[0]
        return rcpt.state == qpb.RECIPIENT_STATE_DEFERRED and rcpt.attempts == 1

    await wait_for(deferred, what="the deferral recorded")
    assert q.proc.proc.poll() is None


async def test_a_hostile_remote_reply_is_one_bounded_line_in_the_dsn(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """A remote's reply is its own text: CR/LF, control characters and any length. Line
    breaks were folded into spaces, but NUL, BEL and ESC went into the DSN and 100 KB of
    reply made a 100 KB Diagnostic-Code line (and the same in the text part, per recipient:
    1,000 such recipients were a 200 MB bounce)."""
    start_queue()
    await send(spool, js, "alice@sender.test", ["r@remote.test"])
    job = await workers["remote"].job()
    reply = ("550 5.1.1 no\r\nX-Injected: yes\r\n\r\n--=_mailyard_0\r\n"
             "Content-Type: text/html\r\n\r\n\x00\x07\x1b[31m\x7f\x85" + "y" * 100_000)
    await workers["remote"].report(job, FAILED, reply)
    bjob = await workers["remote"].job()
    data = (await read_spool(spool, bjob.queue_id))[1]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["X-Injected"] is None
    assert msg.get_content_type() == "multipart/report"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = next(p for p in msg.walk() if p.get_content_type() == "message/delivery-status")
    per_recipient = status.get_payload()[1]
    assert per_recipient["Final-Recipient"] == "rfc822; r@remote.test"
    assert per_recipient["X-Injected"] is None
    diagnostic = per_recipient["Diagnostic-Code"]
    assert diagnostic.startswith("smtp; 550 5.1.1 no X-Injected: yes --=_mailyard_0")
    assert not any(c in data for c in b"\x00\x07\x1b\x7f")
    assert "\x85" not in data.decode()
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    assert len(data) < 5000


async def test_a_bounce_is_flagged_for_what_its_address_and_bytes_need(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """A bounce to a sender whose address is not ASCII (SMTPUTF8) went out without the
    SMTPUTF8 flag: remote-delivery cannot name such a recipient without it (553 5.1.3 address
    not usable in SMTP), so the sender never heard and the postmaster got a double bounce.
    8-bit returned headers went without BODY=8BITMIME."""
    start_queue()
    utf8 = await inject(spool, js, Envelope(sender="jösé@sender.test", recipients=[
        "r@remote.test"], smtputf8=True, body_8bit=True), "Subject: ü\r\n\r\nhi\r\n".encode())
    plain = await send(spool, js, "alice@sender.test", ["r@remote.test"],
                       b"Subject: caf\xc3\xa9\r\n\r\nhi\r\n")
    for _ in range(2):
        job = await workers["remote"].job()
        await workers["remote"].report(job, FAILED, "550 5.1.1 no")
    bounces = {}
    for _ in range(2):
        bjob = await workers["remote"].job()
        bounces[bjob.recipients[0]] = bjob
    to_utf8 = bounces[utf8.sender]
    assert to_utf8.smtputf8 and to_utf8.body_8bit
    to_plain = bounces[plain.sender]
    assert not to_plain.smtputf8 and to_plain.body_8bit
    data = (await read_spool(spool, to_plain.queue_id))[1]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["To"] == "alice@sender.test"


async def test_an_arrival_time_in_the_future_or_absurd_is_now(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """received_at comes from the injecting host's clock. One a day ahead of the queue's put
    the first retry a day off (birth + c^2) and the expiry a day later; one past the year
    9999 failed every job it went into ('job not published, retried shortly' for ever)."""
    q = start_queue()
    ahead = Envelope(sender="alice@sender.test", recipients=["r@remote.test"])
    ahead.received_at.FromSeconds(int(time.time()) + 86400)
    ahead = await inject(spool, js, ahead, b"Subject: x\r\n\r\nhi\r\n")
    job = await workers["remote"].job()
    await workers["remote"].report(job, DEFERRED, "451 4.7.1 greylisted, try later")
    absurd = Envelope(sender="alice@sender.test", recipients=["s@remote.test"])
    absurd.received_at.seconds = 2 ** 40
    absurd = await inject(spool, js, absurd, b"Subject: x\r\n\r\nhi\r\n")
    job = await workers["remote"].job()
    assert job.queue_id in (ahead.queue_id, absurd.queue_id)
    if job.queue_id == ahead.queue_id:  # retried already: due again soon, not in a day
        job = await workers["remote"].job()
    assert job.queue_id == absurd.queue_id
    assert job.received_at.seconds <= time.time()
    detail = await q.explain(ahead.queue_id)
    assert detail.summary.received_at.seconds <= time.time()
