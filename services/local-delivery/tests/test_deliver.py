"""Maildir delivery, headers, loops and per-recipient outcomes, through the real bus."""

from __future__ import annotations

import mailbox
import os
import stat

from prometheus_client import REGISTRY

from mailyard.api.mail.v1.delivery_pb2 import (
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
)
from mailyard.local_delivery.deliver import LOOPING

from .conftest import Env

# Bytes a parser might "fix": bare CR, NUL, 8-bit, trailing spaces, a dot line, no final EOL.
BODY = (b"Received: from client by mx.example.org\r\nSubject: hi\r\n"
        b"From: s@sender.test\r\n\r\nline one  \r\n.\r\nbare\rcr\x00nul \xe4\xf6\r\nend")


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_delivers_byte_exact_with_headers_and_permissions(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.start()
    delivered = _metric("mailyard_local_deliveries_total", result="delivered")
    written = _metric("mailyard_local_delivered_bytes_total")

    job = await env.job("s@sender.test", ["alice@example.org"], BODY)
    result = await env.result()

    assert result.job_id == job.job_id and result.queue_id == job.queue_id
    [rr] = result.results
    assert rr.recipient == "alice@example.org" and rr.outcome == OUTCOME_DELIVERED
    expected = (b"Return-Path: <s@sender.test>\r\nDelivered-To: alice@example.org\r\n" + BODY)
    assert env.messages("alice@example.org") == [expected]

    path = env.maildir_path("alice@example.org")
    for folder in (path.parent.parent, path.parent, path, path / "new", path / "cur",
                   path / "tmp"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    [name] = os.listdir(path / "new")
    assert stat.S_IMODE((path / "new" / name).stat().st_mode) == 0o600
    assert name.endswith(f",S={len(expected)}")
    assert os.listdir(path / "tmp") == []
    assert _metric("mailyard_local_deliveries_total", result="delivered") == delivered + 1
    assert _metric("mailyard_local_delivered_bytes_total") == written + len(expected)


async def test_lf_message_gets_lf_headers_and_null_sender(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("bob@example.org", maildir="example.org/custom/Maildir")
    await env.start()
    body = b"Subject: bounce\n\nhello\n"
    await env.job("", ["Bob@Example.ORG"], body)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED
    box = mailbox.Maildir(env.mail_dir / "example.org/custom/Maildir", create=False)
    assert [box.get_bytes(k) for k in box.iterkeys()] == [
        b"Return-Path: <>\nDelivered-To: bob@example.org\n" + body]


async def test_loop_fails_only_the_looping_recipient(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.mailbox("carol@example.org")
    await env.start()
    body = b"Delivered-To: ALICE@example.org\r\nSubject: again\r\n\r\nbody\r\n"
    await env.job("s@sender.test", ["alice@example.org", "carol@example.org"], body)
    res = {r.recipient: r for r in (await env.result()).results}
    assert res["alice@example.org"].outcome == OUTCOME_FAILED
    assert res["alice@example.org"].reply == LOOPING
    assert LOOPING == "This message is looping: it already has my Delivered-To line. (#5.4.6)"
    assert res["alice@example.org"].enhanced_code == "5.4.6"
    assert res["carol@example.org"].outcome == OUTCOME_DELIVERED
    assert env.messages("alice@example.org") == []
    assert env.messages("carol@example.org") == [
        b"Return-Path: <s@sender.test>\r\nDelivered-To: carol@example.org\r\n" + body]


async def test_a_delivered_to_line_in_another_unicode_form_is_a_loop(env: Env) -> None:
    """Delivered-To written in the other normal form of a local part or with the domain's
    UTF-8 form (another MTA writes the address as it got it) was not ours, and a forward
    loop through such a server went on until the hop count ended it. Lines are now read as
    the directory keys addresses (NFC local part, A-label domain)."""
    await env.domain("example.org")
    await env.domain("xn--bcher-kva.test")
    await env.mailbox("jos\u00e9@example.org")
    await env.mailbox("alice@xn--bcher-kva.test")
    await env.start()
    for line, recipient in (("JOSE\u0301@example.org", "jos\u00e9@example.org"),
                            ("alice@B\u00dcCHER.test", "alice@xn--bcher-kva.test")):
        body = f"Delivered-To: {line}\r\nSubject: again\r\n\r\nbody\r\n".encode()
        await env.job("s@sender.test", [recipient], body)
        [rr] = (await env.result()).results
        assert (rr.outcome, rr.reply) == (OUTCOME_FAILED, LOOPING), line


async def test_delivered_to_in_body_is_not_a_loop(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.start()
    body = b"Subject: x\r\n\r\nDelivered-To: alice@example.org\r\n"
    await env.job("s@sender.test", ["alice@example.org"], body)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED


async def test_too_many_hops(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.start()
    body = b"Received: from x\r\n" * 101 + b"\r\nbody\r\n"
    await env.job("s@sender.test", ["alice@example.org"], body)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_FAILED and rr.enhanced_code == "5.4.6"


async def test_unknown_user_bounces(env: Env) -> None:
    await env.domain("example.org")
    await env.start()
    await env.job("s@sender.test", ["nobody@example.org"], b"Subject: x\r\n\r\nx\r\n")
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_FAILED
    assert rr.reply == "Sorry, no mailbox here by that name. (#5.1.1)"


async def test_missing_or_corrupt_spool_file_defers_and_delivers_nothing(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.start()
    stored = await env.commit("s@sender.test", ["alice@example.org"], b"Subject: x\r\n\r\nx")
    path = env.spool.root / stored.spool_path
    raw = path.read_bytes()
    path.write_bytes(raw[:-1] + b"y")  # bytes no longer match the checksum
    await env.job("s@sender.test", ["alice@example.org"], b"", stored=stored)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DEFERRED and rr.enhanced_code == "4.3.0"

    path.unlink()
    await env.job("s@sender.test", ["alice@example.org"], b"", stored=stored)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DEFERRED
    assert env.messages("alice@example.org") == []


async def test_a_message_past_inline_read_max_is_read_in_a_thread_the_same(env: Env) -> None:
    """Spool files up to inline_read_max are read on the event loop; a bigger one (here:
    every one) through the spool's threads, with the same message delivered."""
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.start(inline_read_max=0)
    await env.job("s@sender.test", ["alice@example.org"], BODY)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED
    assert env.messages("alice@example.org") == [
        b"Return-Path: <s@sender.test>\r\nDelivered-To: alice@example.org\r\n" + BODY]
