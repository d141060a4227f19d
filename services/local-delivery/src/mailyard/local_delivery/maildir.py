"""Maildir++ delivery (qmail-local's maildir_child, the way Dovecot and Courier read it).

A message becomes visible in one atomic step: it is written under tmp/, fsynced, then
hard-linked into new/ (link, not rename, so an existing name is never replaced) and new/ is
fsynced before we report success. A failure anywhere (a full volume included) removes the
tmp/ file and leaves new/ untouched, so a reader never sees half a message.

No symbolic link below the mail root is followed (local-delivery may run as root, and the
mail user, or anyone who breaks into Dovecot, can write into the maildirs): each folder is
opened with O_DIRECTORY | O_NOFOLLOW relative to its parent's descriptor, and every file in
it with O_NOFOLLOW relative to the folder's. A symbolic link in the way fails with ELOOP
(deliver.py defers and says so in the log) and nothing is written through it.

Folders are created 0700 and files 0600: mail is private to the mail user. When
local-delivery runs as root with MAIL_UID / MAIL_GID set (`mailyard up` as root), everything
it creates is handed to that user (fchown on the open file before it is linked into new/,
fchown on each folder it made), so Dovecot, running as the same user, can read and expunge.

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
import stat
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path, PurePosixPath

DIR_MODE = 0o700
FILE_MODE = 0o600
SUBDIRS = ("cur", "new", "tmp")

write: Callable[[int, memoryview], int] = os.write  # test hook, see the module docstring

_counter = itertools.count(1)
Owner = tuple[int, int] | None  # (uid, gid) to give created files and folders; None = ours
Fsync = Callable[[int], Awaitable[None]]


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


FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def folder(name: str, dir_fd: int) -> int:
    """A descriptor of the folder `name` in `dir_fd`; OSError ELOOP when it is a symbolic
    link."""
    try:
        return os.open(name, FOLDER, dir_fd=dir_fd)
    except NotADirectoryError:
        # Linux says ENOTDIR for a symbolic link opened O_DIRECTORY | O_NOFOLLOW
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise OSError(errno.ELOOP, "a symbolic link, not followed", name) from None
        raise


def open_folder(name: str, dir_fd: int, owner: Owner = None) -> int:
    """A descriptor of the folder `name` in `dir_fd`, made (0700, given to `owner`) when
    missing; OSError ELOOP when `name` is a symbolic link."""
    # Opened first: it is there on every delivery but a mailbox's first, and a mkdir that
    # fails costs a system call and an exception per level.
    try:
        return folder(name, dir_fd)
    except FileNotFoundError:
        pass
    try:
        os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
        made = True
    except FileExistsError:  # made meanwhile (another delivery to the same mailbox)
        made = False
    fd = folder(name, dir_fd)
    if made and owner is not None:
        try:
            os.fchown(fd, *owner)
        except BaseException:
            os.close(fd)
            raise
    return fd


@contextlib.contextmanager
def opened(root: Path, maildir: Path, owner: Owner = None) -> Iterator[int]:
    """A descriptor of `maildir` with its cur/, new/ and tmp/, each folder from `root` down
    made when missing and opened without following a symbolic link (`root` itself is the
    operator's and may be one)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in maildir.relative_to(root).parts:
            child = open_folder(part, fd, owner)
            os.close(fd)
            fd = child
        for sub in SUBDIRS:
            os.close(open_folder(sub, fd, owner))
        yield fd
    finally:
        os.close(fd)


def ensure(root: Path, maildir: Path, owner: Owner = None) -> None:
    """Create `maildir` (and the levels between `root` and it) plus cur/new/tmp, all 0700
    (and owned by `owner` when given)."""
    with opened(root, maildir, owner):
        pass


def mailbox_path(root: Path, relative: str) -> Path:
    """The maildir under the mail root; refuses anything that would leave it. Read as
    written, without resolving symbolic links: opened() refuses any it meets."""
    parts = PurePosixPath(relative).parts
    if not parts or parts[0] == "/" or ".." in parts:
        raise ValueError(f"maildir path outside the mail root: {relative!r}")
    return Path(root).joinpath(*parts)


async def deliver(box: int, parts: list[bytes], owner: Owner,
                  fsync: Fsync) -> tuple[str, int]:
    """Write the concatenation of `parts` as one new message into the maildir open as
    `box` (opened()); return (name, size). Every step but the two fsyncs is done here, on
    the caller's thread; `fsync` is awaited for those (local-delivery's hands those of
    concurrent deliveries to its pool together, core.fsync_batch: a delivery done whole in
    a pool thread paid two thread switches for each of its twenty-odd system calls, the
    pool and the event loop taking the GIL in turn).

    Raises OSError (nothing left in tmp/ or new/) on any failure."""
    size = sum(len(p) for p in parts)
    tmp = folder("tmp", box)
    try:
        new = folder("new", box)
        try:
            for _ in range(5):
                name = unique_name(size)
                if await _link_new(tmp, new, name, parts, owner, fsync):
                    await fsync(new)
                    return name, size
        finally:
            os.close(new)
    finally:
        os.close(tmp)
    raise OSError(errno.EEXIST, "could not find a unique maildir name")


async def _link_new(tmp: int, new: int, name: str, parts: list[bytes], owner: Owner,
                    fsync: Fsync) -> bool:
    """Write tmp/`name` and link it into new/; False when the name is taken."""
    try:
        fd = os.open(name, NEW_FILE, FILE_MODE, dir_fd=tmp)
    except FileExistsError:
        return False
    try:
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            for part in parts:
                _write_all(fd, part)
            await fsync(fd)
        finally:
            os.close(fd)
        # follow_symlinks=False: whatever tmp/<name> has become, never what it points to
        os.link(name, name, src_dir_fd=tmp, dst_dir_fd=new, follow_symlinks=False)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=tmp)
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
