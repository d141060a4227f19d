"""Quota warnings (vpopmail's vdelivermail): written straight into Maildir/new when a
delivery leaves the mailbox at or above the warning level, at most once per interval."""

from __future__ import annotations

import asyncio
import email
import email.policy
import email.utils
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DELIVERED, OUTCOME_FAILED
from mailyard.local_delivery import maildir, quota, quotawarn
from mailyard.local_delivery.worker import serve

from .conftest import Env

SENDER = "s@sender.test"
BODY = b"Subject: q\r\n\r\n" + b"x" * 2200 + b"\r\n"  # ~2300 bytes in the mailbox
BOX = "small@example.org"


def _sent() -> float:
    return REGISTRY.get_sample_value("mailyard_local_quota_warnings_total",
                                     {"result": "sent"}) or 0.0


def _parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _warnings(env: Env, address: str = BOX) -> list[EmailMessage]:
    found = [_parsed(m) for m in env.messages(address)]
    return [m for m in found if m["Auto-Submitted"] == "auto-generated"]


def _accounted(path: Path, limits: quota.Quota) -> None:
    """maildirsize says what the folders hold: the warning's own size counted in it."""
    assert quota.read(path, limits) == quota.count(path)


async def _deliver(env: Env, address: str = BOX) -> int:
    await env.job(SENDER, [address], BODY)
    [rr] = (await env.result()).results
    return int(rr.outcome)


async def test_a_delivery_crossing_the_level_warns_once(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox(BOX, quota_bytes=5000)
    await env.start()
    before = _sent()
    assert await _deliver(env) == OUTCOME_DELIVERED  # ~46 %: nothing
    assert _warnings(env) == []
    assert await _deliver(env) == OUTCOME_DELIVERED  # ~92 %: the warning
    [warning] = _warnings(env)
    assert warning["From"].addresses[0].addr_spec == "postmaster@example.org"
    assert warning["To"].addresses[0].addr_spec == BOX
    assert warning["Subject"] and warning["Date"] and warning["Message-ID"]
    assert "full" in warning.get_content()
    assert _sent() == before + 1
    path = env.maildir_path(BOX)
    assert (path / "quotawarn").is_file()
    # straight into new/, counted in maildirsize like any message (Maildir++)
    assert len(list((path / "new").iterdir())) == 3
    _accounted(path, quota.Quota(5000))

    # over quota now: bounced, and no second warning within the interval
    assert await _deliver(env) == OUTCOME_FAILED
    assert len(_warnings(env)) == 1
    assert _sent() == before + 1

    # a day later (the stamp's time is what replicas and hosts compare): once more
    stamp = path / "quotawarn"
    old = time.time() - 25 * 3600
    os.utime(stamp, (old, old))
    assert await _deliver(env) == OUTCOME_FAILED
    assert await _deliver(env) == OUTCOME_FAILED
    assert len(_warnings(env)) == 2
    assert _sent() == before + 2
    _accounted(path, quota.Quota(5000))


async def test_a_full_mailbox_that_bounces_gets_at_most_one_warning(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox(BOX, quota_messages=1)
    await env.start()
    assert await _deliver(env) == OUTCOME_DELIVERED  # 1 of 1: the warning comes too
    for _ in range(3):
        assert await _deliver(env) == OUTCOME_FAILED
    assert len(_warnings(env)) == 1
    assert len(env.messages(BOX)) == 2


async def test_the_text_comes_from_the_control_files(env: Env) -> None:
    await env.domain("example.org")
    await env.domain("example.net")
    await env.mailbox(BOX, quota_messages=1)
    await env.mailbox("n@example.net", quota_messages=1)
    await env.mailbox("o@example.org", quota_messages=1)
    await env.control("quotawarn.msg", "From: Help Desk <help@example.org>\n"
                                       "Subject: Your mailbox is nearly full\n"
                                       "To: Valued Customer:;\n\nPlease clean up.\n")
    await env.control("quotawarn.msg.example.net", "Bitte aufr\u00e4umen.\n")
    await env.start()
    assert await _deliver(env) == OUTCOME_DELIVERED
    assert await _deliver(env, "n@example.net") == OUTCOME_DELIVERED
    [warning] = _warnings(env)
    assert warning["Subject"] == "Your mailbox is nearly full"
    assert warning["From"].addresses[0].addr_spec == "help@example.org"
    # vpopmail's texts name no one (it could not fill the address in): we do
    assert warning["To"].addresses[0].addr_spec == BOX
    assert warning.get_content().strip() == "Please clean up."
    [net] = _warnings(env, "n@example.net")
    assert net.get_content().strip() == "Bitte aufr\u00e4umen."
    assert net["From"].addresses[0].addr_spec == "postmaster@example.net"


async def test_no_warning_without_a_quota_or_when_off(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox(BOX, quota_messages=1)
    await env.mailbox("free@example.org")
    await env.start(quota_warn_percent=0)
    assert await _deliver(env) == OUTCOME_DELIVERED
    assert await _deliver(env, "free@example.org") == OUTCOME_DELIVERED
    assert _warnings(env) == [] and _warnings(env, "free@example.org") == []
    assert not (env.maildir_path(BOX) / "quotawarn").exists()
    assert not (env.maildir_path("free@example.org") / "quotawarn").exists()


async def test_two_replicas_warn_once_per_interval(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox(BOX, quota_messages=100)
    await env.start(quota_warn_percent=1)  # every delivery is above the level
    stop = asyncio.Event()
    other = asyncio.create_task(serve(env.settings(instance="other", quota_warn_percent=1), stop))
    try:
        await asyncio.sleep(0.5)
        for _ in range(12):
            await env.job(SENDER, [BOX], BODY)
        workers = set()
        for _ in range(12):
            res = await env.result()
            assert res.results[0].outcome == OUTCOME_DELIVERED
            workers.add(res.worker)
    finally:
        stop.set()
        await other
    assert workers == {"test", "other"}  # both wrote into the mailbox
    assert len(_warnings(env)) == 1
    _accounted(env.maildir_path(BOX), quota.Quota(0, 100))


def _claim_once(root: Path, path: Path) -> bool:
    with maildir.opened(root, path) as box:
        return quotawarn.claim(box, 86400, None)


@pytest.mark.parametrize("pool", [ThreadPoolExecutor, ProcessPoolExecutor])
def test_a_stale_stamp_is_claimed_by_one_of_many(tmp_path: Path, pool: type[Executor]) -> None:
    """What the threads of one replica, and replicas (or hosts) sharing the maildir, do at
    once, many times over: one claim each time."""
    path = tmp_path / "Maildir"
    maildir.ensure(tmp_path, path)
    stamp = path / quotawarn.STAMP
    with pool(8) as workers:
        for round_ in range(100):
            if round_ % 2:
                old = time.time() - 2 * 86400
                os.utime(stamp, (old, old))
            else:
                stamp.unlink(missing_ok=True)
            claims = [workers.submit(_claim_once, tmp_path, path) for _ in range(8)]
            assert sum(c.result() for c in claims) == 1
            assert time.time() - stamp.stat().st_mtime < 60


def test_a_text_with_content_type_but_no_mime_version_gets_one() -> None:
    """vpopmail's sample texts carry Content-Type; one without MIME-Version is, by RFC 2045,
    not MIME, and readers may show its charset=utf-8 body as US-ASCII."""
    text = ("Subject: voll\nContent-Type: text/plain; charset=utf-8\n"
            "Content-Transfer-Encoding: 8bit\n\nIhr Postfach ist fast voll. Gr\u00fc\u00dfe\n")
    msg = _parsed(quotawarn.compose(text, BOX, "example.org"))
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_content() == "Ihr Postfach ist fast voll. Gr\u00fc\u00dfe\n"
    assert len(msg.get_all("Content-Type") or []) == 1


async def test_a_symbolic_link_as_the_stamp_is_never_followed_and_is_said(
        env: Env, tmp_path: Path) -> None:
    """The mail user can put a link where `quotawarn` goes (to have root touch a file
    elsewhere, or to silence the warnings): it is left alone, the delivery stands, and the
    warning that was due is counted as failed and logged, not dropped without a word."""
    precious = tmp_path / "precious"
    precious.write_bytes(b"keep\n")
    old = time.time() - 5 * 86400
    os.utime(precious, (old, old))
    await env.domain("example.org")
    await env.mailbox(BOX, quota_messages=1)
    path = env.maildir_path(BOX)
    env.mail_dir.mkdir()
    maildir.ensure(env.mail_dir, path)
    (path / quotawarn.STAMP).symlink_to(precious)
    failed = REGISTRY.get_sample_value("mailyard_local_quota_warnings_total",
                                       {"result": "failed"}) or 0.0
    await env.start()
    assert await _deliver(env) == OUTCOME_DELIVERED
    assert _warnings(env) == []
    assert precious.read_bytes() == b"keep\n" and precious.stat().st_mtime == old
    assert (path / quotawarn.STAMP).is_symlink()
    assert REGISTRY.get_sample_value("mailyard_local_quota_warnings_total",
                                     {"result": "failed"}) == failed + 1


def test_a_fresh_stamp_is_answered_without_the_lock(tmp_path: Path) -> None:
    """Above the level every delivery asks; while the stamp is fresh the answer is one stat,
    not the process lock all delivery threads share (held elsewhere here)."""
    path = tmp_path / "Maildir"
    maildir.ensure(tmp_path, path)
    (path / quotawarn.STAMP).touch()
    with ThreadPoolExecutor(1) as pool, quotawarn._IN_PROCESS:  # the lock goes first
        assert pool.submit(_claim_once, tmp_path, path).result(timeout=5) is False


def test_a_text_in_its_own_charset_is_written_in_that_charset() -> None:
    """vpopmail hosts kept .quotawarn.msg in Latin-1 with charset=iso-8859-1 (the import
    reads it as text): written as UTF-8 under that header, every reader showed "gefÃ¼llt"."""
    text = ("Subject: Postfach\nMIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=iso-8859-1\n"
            "Content-Transfer-Encoding: 8bit\n\nIhr Postfach ist zu 90% gef\u00fcllt.\n")
    raw = quotawarn.compose(text, BOX, "example.org")
    assert b"gef\xfcllt" in raw
    assert _parsed(raw).get_content() == "Ihr Postfach ist zu 90% gef\u00fcllt.\n"
    # a charset the text cannot be written in (or no codec knows): UTF-8, and said so
    raw = quotawarn.compose(text.replace("gef\u00fcllt", "\u2013 voll"), BOX, "example.org")
    msg = _parsed(raw)
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content() == "Ihr Postfach ist zu 90% \u2013 voll.\n"


def test_the_date_names_its_zone() -> None:
    """The Date said "-0000", which RFC 5322 (3.3) reads as "local time unknown": mail
    readers showed the warning's time as zone-less, Python's own parser gives a naive
    datetime. It says +0000 now, the zone of the time it gives (UTC)."""
    now = 1_800_000_000.0
    date = _parsed(quotawarn.compose("Subject: full\n\nfull\n", BOX, "example.org", now))["Date"]
    assert date == "Fri, 15 Jan 2027 08:00:00 +0000"
    when = email.utils.parsedate_to_datetime(date)
    assert when.tzinfo is not None and when.timestamp() == now
