"""maildirsize quotas (Dovecot / Courier format) and a full volume."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mailyard.api.mail.v1.delivery_pb2 import (
    OUTCOME_DEFERRED,
    OUTCOME_DELIVERED,
    OUTCOME_FAILED,
)
from mailyard.local_delivery import maildir, quota

from .conftest import Env

BODY = b"Subject: q\r\n\r\n" + b"x" * 400 + b"\r\n"
SENDER = "s@sender.test"


def _refusals() -> float:
    return REGISTRY.get_sample_value("mailyard_local_quota_refusals_total") or 0.0


async def test_over_quota_bounces_and_spares_other_recipients(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("small@example.org", quota_bytes=800)
    await env.mailbox("big@example.org")
    await env.start()
    before = _refusals()
    await env.job(SENDER, ["small@example.org", "big@example.org"], BODY)
    assert {r.outcome for r in (await env.result()).results} == {OUTCOME_DELIVERED}
    path = env.maildir_path("small@example.org")
    size = len(env.messages("small@example.org")[0])
    assert quota.read(path, quota.Quota(800)) == (size, 1)
    assert (path / "maildirsize").read_text().splitlines()[0] == "800S"
    assert (path / "maildirsize").stat().st_mode & 0o777 == 0o600

    await env.job(SENDER, ["small@example.org", "big@example.org"], BODY)
    res = {r.recipient: r for r in (await env.result()).results}
    assert res["small@example.org"].outcome == OUTCOME_FAILED
    assert res["small@example.org"].enhanced_code == "5.2.2"
    assert "over quota" in res["small@example.org"].reply
    assert res["big@example.org"].outcome == OUTCOME_DELIVERED
    assert len(env.messages("small@example.org")) == 1
    assert len(env.messages("big@example.org")) == 2
    assert _refusals() == before + 1


async def test_over_quota_defers_when_configured(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("small@example.org", quota_messages=1)
    await env.start(over_quota="defer")
    await env.job(SENDER, ["small@example.org"], BODY)
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    await env.job(SENDER, ["small@example.org"], BODY)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_DEFERRED, "4.2.2")


async def test_a_message_larger_than_the_whole_quota_bounces_even_when_deferring(
        env: Env) -> None:
    """No expunge can make room for it: deferring would retry it for queuelifetime (7 days)
    before the sender hears. Dovecot's quota-status tells it apart the same way (toolarge)."""
    await env.domain("example.org")
    await env.mailbox("small@example.org", quota_bytes=800)
    await env.start(over_quota="defer")
    await env.job(SENDER, ["small@example.org"], BODY * 2)  # ~900 bytes into an empty box
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_FAILED, "5.2.2")
    assert "over quota" in rr.reply
    await env.job(SENDER, ["small@example.org"], BODY)  # fits: delivered
    assert (await env.result()).results[0].outcome == OUTCOME_DELIVERED
    await env.job(SENDER, ["small@example.org"], BODY)  # would fit an emptier box: deferred
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_DEFERRED, "4.2.2")


def _maildir(tmp_path: Path) -> Path:
    path = tmp_path / "Maildir"
    maildir.ensure(tmp_path, path)
    return path


def test_maildirsize_written_by_dovecot_is_honoured(tmp_path: Path) -> None:
    path = _maildir(tmp_path)
    (path / "maildirsize").write_text("5000S,10C\n1200 3\n-200 -1\n3000 1\n")
    q = quota.Quota(5000, 10)
    assert quota.read(path, q) == (4000, 3)
    assert not quota.over(path, q, 1000)
    quota.add(path, 700)
    assert (path / "maildirsize").read_text().endswith("3000 1\n700 1\n")


def test_over_quota_by_appended_lines_is_recounted(tmp_path: Path) -> None:
    """A delivery racing a rebuild can count its message twice (in the count, then in its
    appended line): Courier and Dovecot trust "over quota" only from a file that is one
    fresh summary line, and so do we, instead of bouncing until the file goes stale."""
    path = _maildir(tmp_path)
    (path / "cur" / "1.M1P1.host,S=500:2,S").write_bytes(b"a" * 500)
    (path / "maildirsize").write_text("1000S\n500 1\n500 1\n")  # the same message twice
    q = quota.Quota(1000)
    assert not quota.over(path, q, 400)
    assert (path / "maildirsize").read_text() == "1000S\n500 1\n"
    assert quota.over(path, q, 501)  # one fresh summary line: trusted


def test_the_cached_answer_leaves_every_count_to_check(tmp_path: Path) -> None:
    """cached() answers from maildirsize alone (local-delivery asks it on its event loop)
    and says None wherever check() would count the mailbox again (done off the loop)."""
    path = _maildir(tmp_path)
    (path / "cur" / "1.M1P1.host,S=500:2,S").write_bytes(b"a" * 500)
    q = quota.Quota(1000)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert quota.cached(fd, q, 100) is None  # no maildirsize yet
        assert quota.check(fd, q, 100) == (False, (500, 1))  # counted, and written
        assert quota.cached(fd, q, 100) == (False, (500, 1))
        assert quota.cached(fd, q, 600) == (True, (500, 1))  # one fresh summary: trusted
        quota.add(fd, 100)
        assert quota.cached(fd, q, 100) == (False, (600, 2))
        assert quota.cached(fd, q, 500) is None  # over by appended lines: counted again
        assert quota.cached(fd, quota.Quota(2000), 100) is None  # another quota
    finally:
        os.close(fd)


def test_maildirsize_rebuilt_on_new_quota_and_counts_subfolders(tmp_path: Path) -> None:
    path = _maildir(tmp_path)
    (path / "maildirsize").write_text("100S\n99999 9\n")
    (path / "cur" / "1.M1P1.host,S=300:2,S").write_bytes(b"a" * 300)
    maildir.ensure(tmp_path, path / ".Sent")
    (path / ".Sent" / "new" / "2.M2P2.host").write_bytes(b"b" * 50)  # no S=: stat()
    assert quota.usage(path, quota.Quota(1000)) == (350, 2)
    assert (path / "maildirsize").read_text() == "1000S\n350 2\n"
    assert os.listdir(path / "tmp") == []


def test_negative_usage_is_a_damaged_file_and_recounted(tmp_path: Path) -> None:
    """A maildirsize summing below zero would switch the quota off until it grew past 5120
    bytes; Dovecot takes it as corrupted and counts again, and so do we."""
    path = _maildir(tmp_path)
    (path / "cur" / "1.M1P1.host,S=900:2,S").write_bytes(b"a" * 900)
    (path / "maildirsize").write_text("1000S,10C\n900 1\n-100000 -5\n")
    q = quota.Quota(1000, 10)
    assert quota.read(path, q) is None
    assert quota.over(path, q, 200)
    assert (path / "maildirsize").read_text() == "1000S,10C\n900 1\n"


def test_stale_over_quota_file_is_recounted(tmp_path: Path) -> None:
    path = _maildir(tmp_path)
    (path / "maildirsize").write_text("1000S\n900 1\n")  # user deleted mail via a raw client
    assert quota.over(path, quota.Quota(1000), 200)
    old = os.stat(path / "maildirsize").st_mtime - quota.STALE_SECONDS - 60
    os.utime(path / "maildirsize", (old, old))
    assert not quota.over(path, quota.Quota(1000), 200)


@pytest.fixture
def full_volume() -> Iterator[None]:
    """The documented write hook: the volume fills up half-way through the message."""
    def write(fd: int, data: memoryview) -> int:
        if len(data) > 100:
            os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    original = maildir.write
    maildir.write = write
    yield
    maildir.write = original


async def test_full_volume_defers_and_leaves_nothing_half_written(env: Env,
                                                                  full_volume: None) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org")
    await env.start()
    await env.job(SENDER, ["alice@example.org"], BODY)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.enhanced_code) == (OUTCOME_DEFERRED, "4.3.0")
    assert "No space left on device" in rr.reply
    path = env.maildir_path("alice@example.org")
    assert os.listdir(path / "new") == [] and os.listdir(path / "tmp") == []
    assert env.messages("alice@example.org") == []
