"""smtp-ingress parks SPOOL_RESERVE empty files in free/ as it starts (Spool.reserve), and
its first messages are written into them; a spool it cannot top up only costs inodes."""

from __future__ import annotations

import os
from typing import Any

from ingress_helpers import MakeIngress, committed, seed_directory, session, wait_for

from mailyard.core.spool import RESERVE
from mailyard.smtp_ingress import replies as R
from mailyard.smtp_ingress.settings import Settings


def test_the_default_reserve_is_the_spools() -> None:
    assert Settings.model_fields["spool_reserve"].default == RESERVE > 0


async def test_start_tops_the_reserve_up_and_mail_takes_it(make_ingress: MakeIngress,
                                                           js: Any) -> None:
    ingress = await make_ingress(spool_reserve=40)
    free = ingress.settings.spool_dir / "free"
    inodes = {entry.inode() for entry in os.scandir(free)}
    assert len(inodes) == 40
    await seed_directory(js, "example.org", ["alice@example.org"])
    await wait_for(lambda: ingress.directory.accepts("alice@example.org"))
    client = await session(ingress.ports["smtp"])
    for line in ("MAIL FROM:<a@b.test>", "RCPT TO:<alice@example.org>"):
        assert (await client.cmd(line)).startswith("250"), line
    assert await client.cmd("DATA") == R.GO_AHEAD
    await client.send("Subject: reserved\r\n\r\nx\r\n.\r\n")
    assert (await client.reply()).startswith("250 ")
    await client.close()
    (path,) = committed(ingress)
    assert os.stat(ingress.settings.spool_dir / path).st_ino in inodes
    assert len(os.listdir(free)) == 39


async def test_an_unwritable_free_folder_does_not_stop_the_start(make_ingress: MakeIngress,
                                                                 tmp_path: Any) -> None:
    free = tmp_path / "spool" / "free"
    free.mkdir(parents=True)
    free.chmod(0o500)
    try:
        if os.access(free, os.W_OK):  # root ignores the mode: take the folder away instead
            free.chmod(0o700)
            free.rmdir()
            free.write_bytes(b"not a folder")
        ingress = await make_ingress(spool_reserve=40)
        assert ingress.ready()
    finally:
        if free.is_dir():
            free.chmod(0o700)
