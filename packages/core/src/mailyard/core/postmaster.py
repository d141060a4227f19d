"""The local postmaster mailbox, qmail's ~alias: where a double bounce goes when the
postmaster address cannot be delivered (postmaster@localhost, or postmaster@<me> while `me`
is no hosted domain; the queue writes it), and mail to this host's own postmaster, root and
mailer-daemon (local-delivery writes it; see Identity.is_local_name). Queued as remote mail
they sat deferred for a week and were then dropped.

It is a Maildir on the spool volume (the queue and local-delivery mount it): <spool>/
postmaster/Maildir, read with any mail reader (`mutt -f`) or listed by the runbook's commands.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

_seq = 0


def maildir(spool_root: Path) -> Path:
    return spool_root / "postmaster" / "Maildir"


def _deliver(root: Path, data: bytes, queue_id: str) -> Path:
    global _seq
    _seq += 1
    for sub in ("tmp", "new", "cur"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns()}.{os.getpid()}_{_seq}_{queue_id}.{socket.gethostname()}"
    tmp, new = root / "tmp" / name, root / "new" / name
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, new)
    dir_fd = os.open(root / "new", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return new


async def deliver(spool_root: Path, data: bytes, queue_id: str) -> Path:
    """Write one message to the postmaster Maildir (durably) and return its path."""
    return await asyncio.to_thread(_deliver, maildir(spool_root), data, queue_id)
