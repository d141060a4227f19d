"""Maildir++ delivery (qmail-local's maildir_child, the way Dovecot and Courier read it).

A message becomes visible in one atomic step: it is written under tmp/, fsynced, then
hard-linked into new/ (link, not rename, so an existing name is never replaced) and new/ is
fsynced before we report success. A failure anywhere (a full volume included) removes the
tmp/ file and leaves new/ untouched, so a reader never sees half a message.

Folders are created 0700 and files 0600: mail is private to the mail user. When
local-delivery runs as root with MAIL_UID / MAIL_GID set (`mailyard up` as root), everything
it creates is handed to that user (fchown on the open file before it is linked into new/,
lchown on each folder it made), so Dovecot, running as the same user, can read and expunge.

Test hook: every byte goes through the module attribute `write` (os.write by default).
Tests replace it to inject ENOSPC / EIO exactly where a full or broken volume would fail;
nothing else in the service touches it.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
SUBDIRS = ("cur", "new", "tmp")

write: Callable[[int, memoryview], int] = os.write  # test hook, see the module docstring

_counter = itertools.count(1)
Owner = tuple[int, int] | None  # (uid, gid) to give created files and folders; None = ours


def _hostname() -> str:
    # Maildir names may not contain "/" or ":" (":" starts the flags); escape them as the
    # Maildir spec (and Dovecot) do.
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


_HOST = _hostname()


def unique_name(size: int) -> str:
    """`<secs>.M<usecs>P<pid>Q<n>R<random>.<host>,S=<size>`.

    Unique across replicas even when every container is pid 1 on a shared volume (the
    random part); ",S=" is the Maildir++ size Dovecot and Courier use for quota counting."""
    now = time.time()
    secs, usecs = int(now), int((now % 1) * 1_000_000)
    rand = os.urandom(6).hex()
    return f"{secs}.M{usecs}P{os.getpid()}Q{next(_counter)}R{rand}.{_HOST},S={size}"


def ensure(root: Path, maildir: Path, owner: Owner = None) -> None:
    """Create `maildir` (and the levels between `root` and it) plus cur/new/tmp, all 0700
    (and owned by `owner` when given)."""
    path = Path(root)
    levels = [path := path / part for part in maildir.relative_to(root).parts]
    for folder in (*levels, *(maildir / sub for sub in SUBDIRS)):
        try:
            os.mkdir(folder, DIR_MODE)
        except FileExistsError:
            continue
        if owner is not None:
            # Not following a symlink: the folder was made by us a moment ago.
            os.chown(folder, *owner, follow_symlinks=False)


def mailbox_path(root: Path, relative: str) -> Path:
    """The maildir under the mail root; refuses anything that would leave it."""
    root = Path(root).resolve()
    path = (root / relative).resolve()
    if root not in path.parents or not relative:
        raise ValueError(f"maildir path outside the mail root: {relative!r}")
    return path


def deliver(root: Path, maildir: Path, parts: list[bytes],
            owner: Owner = None) -> tuple[str, int]:
    """Write the concatenation of `parts` as one new message; return (name, size).

    Raises OSError (nothing left in tmp/ or new/) on any failure."""
    ensure(root, maildir, owner)
    size = sum(len(p) for p in parts)
    for _ in range(5):
        name = unique_name(size)
        tmp = maildir / "tmp" / name
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        try:
            try:
                if owner is not None:
                    os.fchown(fd, *owner)
                for part in parts:
                    _write_all(fd, part)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, maildir / "new" / name)
        except FileExistsError:
            _unlink(tmp)
            continue
        except BaseException:
            _unlink(tmp)
            raise
        _unlink(tmp)
        fsync_dir(maildir / "new")
        return name, size
    raise OSError(errno.EEXIST, "could not find a unique maildir name")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
