"""Lifetime expiry, partial failure, double bounce, dropped double bounce."""

from __future__ import annotations

import asyncio
import email
import email.policy
import urllib.request
from typing import Any

from mailyard.api.directory.v1 import directory_pb2
from mailyard.api.mail.v1 import delivery_pb2 as dpb
from mailyard.api.mail.v1.envelope_pb2 import ORIGIN_BOUNCE, ORIGIN_DOUBLE_BOUNCE, Envelope
from mailyard.core import bus
from mailyard.core.directory import record_key
from mailyard.core.inject import inject
from mailyard.core.spool import Spool
from mailyard.testing import ServiceProcess, free_port

from .conftest import (
    DEFERRED,
    DELIVERED,
    FAILED,
    Worker,
    add_local_domain,
    gone,
    read_spool,
    send,
    set_control,
    wait_for,
)

REFUSED = "550 5.1.1 sorry, no mailbox here by that name"


def _dsn_parts(data: bytes) -> tuple[Any, str]:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    status = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    assert len(status) == 1
    return msg, data.decode()


async def test_deferred_until_lifetime_then_bounce(js: Any, spool: Spool, workers: Any,
                                                  start_queue: Any) -> None:
    await set_control(js, "queuelifetime", "1")
    q = start_queue()
    env = await send(spool, js, "alice@sender.test", ["r@remote.test"])
    reply = "Sorry, I wasn't able to establish an SMTP connection. (#4.4.1)"
    attempts = 0
    while True:
        job = await workers["remote"].job()
        if job.queue_id != env.queue_id:
            break
        attempts += 1
        await workers["remote"].report(job, DEFERRED, reply)
    assert attempts >= 1
    assert job.sender == "" and list(job.recipients) == ["alice@sender.test"]
    benv, data = await read_spool(spool, job.queue_id)
    assert benv.origin == ORIGIN_BOUNCE
    _, text = _dsn_parts(data)
    assert "Final-Recipient: rfc822; r@remote.test" in text
    assert "Status: 5.4.7" in text and reply in text
    await wait_for(lambda: gone(q, env.queue_id), what="original removed")


async def test_one_of_three_refused(js: Any, spool: Spool, workers: Any,
                                    start_queue: Any) -> None:
    q = start_queue()
    rcpts = ["a@remote.test", "b@remote.test", "c@remote.test"]
    env = await send(spool, js, "alice@sender.test", rcpts)
    job = await workers["remote"].job()
    assert sorted(job.recipients) == rcpts  # one transaction for the domain
    await workers["remote"].report(job, {"a@remote.test": (DELIVERED, "250 ok"),
                                         "b@remote.test": (FAILED, REFUSED),
                                         "c@remote.test": (DELIVERED, "250 ok")})
    bjob = await workers["remote"].job()
    assert list(bjob.recipients) == ["alice@sender.test"] and bjob.sender == ""
    _, text = _dsn_parts((await read_spool(spool, bjob.queue_id))[1])
    assert "Final-Recipient: rfc822; b@remote.test" in text and REFUSED in text
    assert "a@remote.test" not in text and "c@remote.test" not in text
    await wait_for(lambda: gone(q, env.queue_id), what="original removed")
    await workers["remote"].report(bjob, DELIVERED)
    await wait_for(lambda: gone(q, bjob.queue_id), what="bounce delivered")
    assert (await q.stat()).messages == 0


async def test_failed_bounce_goes_to_postmaster_then_dropped(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    await add_local_domain(js, "mx.test")  # where the postmaster lives
    q = start_queue(BOUNCE_FORMAT="qsbmf")
    env = await send(spool, js, "alice@sender.test", ["r@remote.test"])
    job = await workers["remote"].job()
    await workers["remote"].report(job, FAILED, REFUSED)
    bounce = await workers["remote"].job()
    assert list(bounce.recipients) == ["alice@sender.test"]
    text = (await read_spool(spool, bounce.queue_id))[1].decode()
    assert "Hi. This is the qmail-send program at mx.test." in text
    assert "<r@remote.test>:" in text and "--- Below this line is a copy" in text
    await workers["remote"].report(bounce, FAILED, "550 5.1.1 sender does not exist")

    double = await workers["local"].job()
    assert double.channel == dpb.CHANNEL_LOCAL
    assert list(double.recipients) == ["postmaster@mx.test"] and double.sender == ""
    denv, data = await read_spool(spool, double.queue_id)
    assert denv.origin == ORIGIN_DOUBLE_BOUNCE
    assert b"the bounce bounced" in data and b"<alice@sender.test>:" in data
    await workers["local"].report(double, FAILED, "mailbox full (#5.2.2)")

    for qid in (env.queue_id, bounce.queue_id, double.queue_id):
        await wait_for(lambda qid=qid: gone(q, qid), what=f"{qid} removed")
    assert (await q.stat()).messages == 0
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/metrics") as resp:
        metrics = resp.read().decode()
    assert 'mailyard_queue_bounces_total{kind="dropped"} 1.0' in metrics
    assert 'mailyard_queue_bounces_total{kind="double_bounce"} 1.0' in metrics
    assert 'mailyard_queue_bounces_total{kind="bounce"} 1.0' in metrics


async def _marked(spool: Spool, js: Any) -> Envelope:
    return await inject(spool, js, Envelope(sender="forged@victim.test",
                                            recipients=["r@remote.test"],
                                            sender_unverified=True),
                        b"Subject: spam\r\n\r\nbuy\r\n")


def _bounce_counts(q: Any) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/metrics") as resp:
        return resp.read().decode()


async def test_no_bounce_to_a_sender_nothing_verified(js: Any, spool: Spool, workers: Any,
                                                     start_queue: Any) -> None:
    """A message smtp-ingress marked sender_unverified (no SPF pass, no aligned DKIM) that
    fails later: its bounce would go to whoever the spammer named (a forward the next host
    refused, a backup MX's primary refusing spam). It is recorded, not sent; the same
    failure of a verified sender's message bounces."""
    q = start_queue()
    marked = await _marked(spool, js)
    job = await workers["remote"].job()
    assert job.queue_id == marked.queue_id
    await workers["remote"].report(job, FAILED, REFUSED)
    await wait_for(lambda: gone(q, marked.queue_id), what="marked message done")
    plain = await send(spool, js, "alice@sender.test", ["r@remote.test"])
    job = await workers["remote"].job()  # the next job is the plain message, no bounce
    assert job.queue_id == plain.queue_id
    await workers["remote"].report(job, FAILED, REFUSED)
    bounce = await workers["remote"].job()
    assert list(bounce.recipients) == ["alice@sender.test"] and bounce.sender == ""
    metrics = _bounce_counts(q)
    assert 'mailyard_queue_bounces_total{kind="unverified_sender"} 1.0' in metrics
    assert 'mailyard_queue_bounces_total{kind="bounce"} 1.0' in metrics


async def test_no_delay_warning_to_a_sender_nothing_verified(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    q = start_queue(DELAY_WARNINGS="true", DELAY_WARNING_AFTER="0.01", RETRY_C_REMOTE="600")
    for env in (await _marked(spool, js),
                await send(spool, js, "alice@sender.test", ["r@remote.test"])):
        job = await workers["remote"].job()
        assert job.queue_id == env.queue_id
        await asyncio.sleep(0.05)  # older than DELAY_WARNING_AFTER
        await workers["remote"].report(job, DEFERRED, "451 4.7.1 greylisted, try later")
    warning = await workers["remote"].job()  # the marked one's would have come first
    assert list(warning.recipients) == ["alice@sender.test"]
    assert 'mailyard_queue_bounces_total{kind="delay_warning"} 1.0' in _bounce_counts(q)


async def test_null_sender_failure_is_double_bounce(js: Any, spool: Spool, workers: Any,
                                                   start_queue: Any) -> None:
    await set_control(js, "postmaster", "pm@admin.test\n")
    q = start_queue()
    env = await send(spool, js, "", ["r@remote.test"])
    job = await workers["remote"].job()
    await workers["remote"].report(job, FAILED, REFUSED)
    double = await workers["remote"].job()
    assert list(double.recipients) == ["pm@admin.test"]
    await wait_for(lambda: gone(q, env.queue_id), what="original removed")


async def test_delay_warning_when_enabled(js: Any, spool: Spool, workers: Any,
                                          start_queue: Any) -> None:
    q = start_queue(DELAY_WARNINGS="true", DELAY_WARNING_AFTER="0.01", RETRY_C_REMOTE="600")
    env = await send(spool, js, "alice@sender.test", ["r@remote.test"])
    job = await workers["remote"].job()
    await asyncio.sleep(0.05)  # older than DELAY_WARNING_AFTER for sure, however fast the path
    await workers["remote"].report(job, DEFERRED, "451 4.7.1 greylisted, try later")
    warning = await workers["remote"].job()
    assert list(warning.recipients) == ["alice@sender.test"] and warning.sender == ""
    text = (await read_spool(spool, warning.queue_id))[1].decode()
    assert "Action: delayed" in text and "Status: 4.7.1" in text and "greylisted" in text
    detail = await q.explain(env.queue_id)  # the original stays queued
    assert detail.recipients[0].attempts == 1


async def _double_bounce_of_null_sender(js: Any, spool: Spool, workers: Any, q: Any) -> Any:
    env = await send(spool, js, "", ["r@remote.test"])
    job = await workers["remote"].job()
    await workers["remote"].report(job, FAILED, REFUSED)
    await wait_for(lambda: gone(q, env.queue_id), what="original removed")
    return env


async def test_double_bounce_for_localhost_goes_to_the_postmaster_mailbox(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """The reported problem: with me=localhost a double bounce was queued as remote mail for
    postmaster@localhost and sat deferred. Now the local postmaster mailbox takes it."""
    q = start_queue(ME="localhost")
    await _double_bounce_of_null_sender(js, spool, workers, q)
    new = spool.root / "postmaster" / "Maildir" / "new"
    files = await wait_for(lambda: _listing(new), what="postmaster mailbox written")
    text = files[0].read_bytes().decode()
    assert "To: postmaster@localhost" in text and REFUSED in text
    assert await workers["remote"].none_within(0.5)  # nothing was queued for an MX
    assert (await q.stat()).messages == 0


async def test_me_and_postmaster_follow_the_control_files(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    q = start_queue(ME="localhost")
    await set_control(js, "me", "mail.example.net\n")
    await set_control(js, "postmaster", "hostmaster@admin.test\n")
    await wait_for(lambda: _control_seen(q), what="control files applied")
    await _double_bounce_of_null_sender(js, spool, workers, q)
    double = await workers["remote"].job()
    assert list(double.recipients) == ["hostmaster@admin.test"]
    env, data = await read_spool(spool, double.queue_id)
    assert env.helo == "mail.example.net"
    text = data.decode()
    assert "From: MAILER-DAEMON@mail.example.net" in text
    assert "@mail.example.net>" in text  # Message-ID
    assert "Reporting-MTA: dns; mail.example.net" in text


async def test_postmaster_at_unhosted_me_goes_to_the_postmaster_mailbox(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """postmaster@<me> while `me` is no hosted domain: its MX is ourselves, never deliverable."""
    await set_control(js, "me", "mail.example.net\n")
    q = start_queue()
    await _double_bounce_of_null_sender(js, spool, workers, q)
    new = spool.root / "postmaster" / "Maildir" / "new"
    files = await wait_for(lambda: _listing(new), what="postmaster mailbox written")
    assert b"To: postmaster@mail.example.net" in files[0].read_bytes()


async def _listing(folder: Any) -> list[Any]:
    return sorted(folder.iterdir()) if folder.is_dir() else []


async def _control_seen(q: Any) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/metrics") as resp:
        metrics = resp.read().decode()
    return ('mailyard_control_file_info{file="me"' in metrics
            and 'mailyard_control_file_info{file="postmaster"' in metrics)


async def test_bounce_jetstream_refused_is_injected_again_within_seconds(
        js: Any, spool: Spool, workers: Any, start_queue: Any) -> None:
    """Under load a bounce's todo publish can miss its ack deadline: the bounce is withdrawn
    and used to wait for the next reconcile run (5 minutes; an hour in these tests). Here
    JetStream refuses it outright (a todo larger than the stream takes), then takes it again."""
    q = start_queue()
    env = await send(spool, js, "alice@sender.test", ["r@remote.test"])
    job = await workers["remote"].job()
    todo = next(s for s in bus.MAIL_STREAMS if s.name == bus.TODO_STREAM)
    config = (await js.stream_info(bus.TODO_STREAM)).config
    config.max_msg_size = 16  # every todo notice is larger: the publish fails at once
    await js.update_stream(config)
    try:
        await workers["remote"].report(job, FAILED, REFUSED)
        await wait_for(lambda: _logged(q, "bounce not injected yet"), what="refused bounce")
    finally:
        await bus.ensure_stream(js, todo)  # back to the stream's own config
    bounce = await workers["remote"].job()
    assert list(bounce.recipients) == ["alice@sender.test"] and bounce.sender == ""
    await wait_for(lambda: gone(q, env.queue_id), what="original removed")


async def _logged(q: Any, text: str) -> bool:
    return text in q.proc.logs()


async def test_a_forwarded_double_bounce_that_fails_is_dropped(
        js: Any, spool: Spool, start_queue: Any, tmp_path: Any) -> None:
    """The postmaster forwards elsewhere (an alias) and that address refuses: the forwarded
    copy keeps the null sender (qmail-local does too) but is queued as a forward, so its
    failure made another double bounce to the postmaster, forwarded and refused again, for
    ever. qmail drops it: the copy keeps the double bounce's sender #@[]. Here the copy
    keeps the double bounce's header. Real local-delivery makes the forward."""
    await add_local_domain(js, "mx.test")
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("alias", "postmaster@mx.test"), directory_pb2.Alias(
        address="postmaster@mx.test", targets=["boss@remote.test"]).SerializeToString())
    port = free_port()
    local = ServiceProcess("mailyard.local_delivery", {
        "MAILYARD_LOCAL_NATS_URL": js._nc.connected_url.geturl(),
        "MAILYARD_LOCAL_SPOOL_DIR": str(spool.root),
        "MAILYARD_LOCAL_MAIL_DIR": str(tmp_path / "mail"),
        "MAILYARD_LOCAL_HTTP_PORT": str(port), "MAILYARD_LOCAL_ME": "mx.test"},
        tmp_path / "logs", port).start()
    try:
        q = start_queue()
        remote = await Worker(js, "remote").start()
        env = await send(spool, js, "", ["r@remote.test"])
        await remote.report(await remote.job(), FAILED, REFUSED)
        forwarded = await remote.job()  # the double bounce, forwarded by the alias
        assert list(forwarded.recipients) == ["boss@remote.test"] and forwarded.sender == ""
        assert b"double bounce" in (await read_spool(spool, forwarded.queue_id))[1]
        await remote.report(forwarded, FAILED, "550 5.1.1 boss left the company")
        await wait_for(lambda: _counted(q, 'kind="dropped"} 1.0'), what="dropped")
        for qid in (env.queue_id, forwarded.queue_id):
            await wait_for(lambda qid=qid: gone(q, qid), what=f"{qid} removed")
        assert await remote.none_within(1.0)  # no second double bounce came round
        assert (await q.stat()).messages == 0
    finally:
        local.stop()


async def _counted(q: Any, sample: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{q.http_port}/metrics") as resp:
        return sample in resp.read().decode()
