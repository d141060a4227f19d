"""A maildir is writable by its user (a shell account, Dovecot): local-delivery, which may run
as root, never follows a symbolic link put in it, and a FIFO put as maildirsize does not hold
a delivery. The message is deferred (kept in the queue), and delivered once the link is gone."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mailyard.api.mail.v1.delivery_pb2 import OUTCOME_DEFERRED, OUTCOME_DELIVERED
from mailyard.local_delivery import maildir, quota
from mailyard.local_delivery.deliver import SYMLINK

from .conftest import Env

BODY = b"Subject: s\r\n\r\nbody\r\n"
SENDER = "s@sender.test"
USER = "alice@example.org"
PRECIOUS = b"root:x:0:0:root:/root:/bin/sh\n"


def _outside(tmp: Path) -> tuple[Path, Path]:
    """A folder and a file outside the mail root, standing for /etc and /etc/passwd."""
    folder = tmp / "outside"
    for sub in ("", *maildir.SUBDIRS):
        (folder / sub).mkdir(exist_ok=True)
    (folder / "passwd").write_bytes(PRECIOUS)
    return folder, folder / "passwd"


def _untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.rglob("*")) == ["cur", "new", "passwd", "tmp"]
    assert (folder / "passwd").read_bytes() == PRECIOUS


@pytest.mark.parametrize("link", ["new", "tmp", "cur", "maildirsize", ".", "..", "../.."])
async def test_a_symbolic_link_in_the_maildir_is_not_followed(
        env: Env, link: str, caplog: pytest.LogCaptureFixture) -> None:
    """new/, tmp/ or cur/ pointing at a folder outside, maildirsize at a file outside, or the
    maildir itself, the user's folder or the domain's folder replaced by a link."""
    await env.domain("example.org")
    await env.mailbox(USER, quota_bytes=10_000_000)
    await env.start()
    path = env.maildir_path(USER)
    maildir.ensure(env.mail_dir, path)
    (path / "maildirsize").write_text("10000000S\n0 0\n")
    folder, passwd = _outside(env.tmp)
    victim = Path(os.path.normpath(path / link))
    kept = victim.with_name(victim.name + ".kept")
    victim.rename(kept)
    victim.symlink_to(passwd if link == "maildirsize" else folder)

    stored = await env.commit(SENDER, [USER], BODY)
    await env.job(SENDER, [USER], BODY, stored=stored)
    [rr] = (await env.result()).results
    assert (rr.outcome, rr.reply, rr.enhanced_code) == (OUTCOME_DEFERRED, SYMLINK, "4.3.0")
    assert f"symbolic link in the maildir, not followed: {path}" in caplog.text
    _untouched(folder)

    victim.unlink()  # the postmaster removes the link; the queue tries again
    kept.rename(victim)
    await env.job(SENDER, [USER], BODY, stored=stored)
    [rr] = (await env.result()).results
    assert rr.outcome == OUTCOME_DELIVERED
    assert env.messages(USER) == [
        b"Return-Path: <s@sender.test>\r\nDelivered-To: alice@example.org\r\n" + BODY]
    _untouched(folder)


async def test_a_fifo_as_maildirsize_does_not_hold_the_delivery(env: Env) -> None:
    """Opening a FIFO waits for a writer: every delivery thread could be held that way."""
    await env.domain("example.org")
    await env.mailbox(USER, quota_bytes=10_000_000)
    await env.start()
    path = env.maildir_path(USER)
    maildir.ensure(env.mail_dir, path)
    os.mkfifo(path / "maildirsize")
    await env.job(SENDER, [USER], BODY)
    try:
        [rr] = (await env.result()).results
    except Exception:
        os.close(os.open(path / "maildirsize", os.O_WRONLY))  # let the held thread go
        raise
    assert rr.outcome == OUTCOME_DELIVERED
    [message] = env.messages(USER)
    # counted again and written in its place as a file
    assert (path / "maildirsize").read_text() == f"10000000S\n0 0\n{len(message)} 1\n"


def test_a_hard_link_as_maildirsize_is_not_appended_to(tmp_path: Path) -> None:
    """A hard link to a file outside (where protected_hardlinks is off, or made between the
    quota check and the append) is not written to (Postfix's local refuses a mailbox file
    with more than one link)."""
    path = tmp_path / "Maildir"
    maildir.ensure(tmp_path, path)
    folder, passwd = _outside(tmp_path)
    os.link(passwd, path / "maildirsize")
    quota.add(path, 100)
    _untouched(folder)
    limits = quota.Quota(10_000)
    assert quota.read(path, limits) is None  # counted again, and replaced
    assert not quota.over(path, limits, 100)
    assert (path / "maildirsize").read_text() == "10000S\n0 0\n"
    _untouched(folder)


@pytest.mark.parametrize("link", ["new", "Maildir"])
def test_a_link_to_nowhere_is_refused_not_made_into_a_folder(tmp_path: Path,
                                                              link: str) -> None:
    """A folder is opened before it is made: a symbolic link pointing nowhere is neither
    followed (its target made) nor taken for a missing folder."""
    path = tmp_path / "example.org" / "alice" / "Maildir"
    maildir.ensure(tmp_path, path)
    victim = path / link if link != "Maildir" else path
    target = tmp_path / "nowhere"
    for sub in maildir.SUBDIRS if link == "Maildir" else ():
        (path / sub).rmdir()
    victim.rmdir()
    victim.symlink_to(target)
    with pytest.raises(OSError) as caught:
        maildir.ensure(tmp_path, path)
    assert caught.value.errno == errno.ELOOP
    assert not target.exists() and victim.is_symlink()
