"""One owner for mail files: with MAIL_UID / MAIL_GID, local-delivery running as root
gives every folder, message and maildirsize it writes to the mail user (Dovecot serves
them as that user), with the same 0700 / 0600 modes."""

from __future__ import annotations

import os
import stat

import pytest

from mailyard.core.errors import SettingsError
from mailyard.local_delivery.settings import Settings

from .conftest import Env

MAIL_UID = MAIL_GID = 8  # Debian's "mail"; any non-root id works for the check
BODY = b"Subject: owner\r\n\r\nbody\r\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
async def test_files_and_folders_belong_to_the_mail_user(env: Env) -> None:
    await env.domain("example.org")
    await env.mailbox("alice@example.org", quota_bytes=10_000_000)
    await env.start(mail_uid=MAIL_UID, mail_gid=MAIL_GID)
    await env.job("s@sender.test", ["alice@example.org"], BODY)
    await env.result()

    path = env.maildir_path("alice@example.org")
    for folder in (path.parent.parent, path.parent, path, path / "new", path / "cur",
                   path / "tmp"):
        info = folder.stat()
        assert (info.st_uid, info.st_gid) == (MAIL_UID, MAIL_GID), folder
        assert stat.S_IMODE(info.st_mode) == 0o700, folder
    [name] = os.listdir(path / "new")
    for file in (path / "new" / name, path / "maildirsize"):
        info = file.stat()
        assert (info.st_uid, info.st_gid) == (MAIL_UID, MAIL_GID), file
        assert stat.S_IMODE(info.st_mode) == 0o600, file


def test_half_an_owner_or_root_is_refused() -> None:
    with pytest.raises(SettingsError, match="MAIL_UID and MAIL_GID go together"):
        Settings.load(mail_uid=MAIL_UID, http_port=0)
    with pytest.raises(SettingsError, match="MAIL_UID"):
        Settings.load(mail_uid=0, mail_gid=0, http_port=0)
