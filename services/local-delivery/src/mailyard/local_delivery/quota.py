"""Maildir++ quota: the `maildirsize` file Courier (deliverquota, maildrop) and Dovecot's
maildir quota backend keep in the root of a maildir, so either can serve the same folders.

Format: the first line is the quota, e.g. `10485760S,1000C` (bytes, messages); every
further line is `<bytes> <messages>` to add (negative on removal). Usage is the sum of those
lines. Writers append one line with a single O_APPEND write (atomic, no lock), and anyone
may rebuild the file by counting the folders, writing it under tmp/ and renaming it in.

We rebuild, as Courier and Dovecot do, when the file is missing, unreadable or sums below
zero, when its quota line differs from the mailbox's quota (an operator changed it), when it
grew past 5120 bytes, and when it says "over quota" but has more than one usage line or is
older than 15 minutes (a message counted twice by a delivery racing a rebuild, mail removed
by a client that does not update maildirsize). Every folder counts, Trash included
(Dovecot's default); message sizes come from ",S=<size>" in the file name, else from stat().

Each function takes the maildir as a path or as a descriptor from maildir.opened() (as
local-delivery does); either way no symbolic link inside it is followed: a maildirsize or a
tmp/ that is one fails with ELOOP (read() answers None only for a file it could read), and a
folder that is one is not counted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailyard.local_delivery import maildir

FILE = "maildirsize"
MAX_FILE_SIZE = 5120
STALE_SECONDS = 15 * 60
_SIZE_RE = re.compile(r",S=(\d+)")
Maildir = Path | int  # a maildir's path, or a descriptor of it from maildir.opened()


@dataclass(frozen=True)
class Quota:
    bytes: int = 0     # 0 = no limit
    messages: int = 0  # 0 = no limit

    @property
    def enabled(self) -> bool:
        return bool(self.bytes or self.messages)

    def definition(self) -> str:
        parts = []
        if self.bytes:
            parts.append(f"{self.bytes}S")
        if self.messages:
            parts.append(f"{self.messages}C")
        return ",".join(parts)

    def exceeded(self, used_bytes: int, used_messages: int, size: int) -> bool:
        """Would one more message of `size` bytes go over (vpopmail: usage + size > quota)?"""
        return bool((self.bytes and used_bytes + size > self.bytes)
                    or (self.messages and used_messages + 1 > self.messages))

    def never_fits(self, size: int) -> bool:
        """Is a message of `size` bytes larger than the whole quota (no expunge can make
        room: Dovecot's quota-status answers "toolarge")?"""
        return bool(self.bytes and size > self.bytes)


@contextlib.contextmanager
def _folder(where: Maildir) -> Iterator[int]:
    """A descriptor of the maildir (the caller's own when given one)."""
    if isinstance(where, int):
        yield where
        return
    fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def read(where: Maildir, quota: Quota) -> tuple[int, int] | None:
    """(bytes, messages) from an up-to-date maildirsize, or None when it must be rebuilt."""
    with _folder(where) as fd:
        got = _read(fd, quota)
    return got[:2] if got is not None else None


def _read(box: int, quota: Quota) -> tuple[int, int, int] | None:
    """read(), plus the number of usage lines."""
    try:
        # O_NONBLOCK: a FIFO put there would hold the delivery thread for good
        fd = os.open(FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=box)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise  # a symbolic link: rebuilding would only replace it, and hide who did
        return None
    with open(fd, "rb") as f:
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
                return None  # rebuilt: the new file is renamed over it (add() refuses it)
            raw = f.read(MAX_FILE_SIZE + 1)
        except OSError:
            return None
    if len(raw) > MAX_FILE_SIZE:
        return None
    lines = raw.decode("ascii", "replace").split("\n")
    if lines[0].strip() != quota.definition():
        return None
    used_bytes = used_messages = count = 0
    for line in lines[1:]:
        if not line.strip():
            continue
        count += 1
        fields = line.split()
        try:
            used_bytes += int(fields[0])
            used_messages += int(fields[1]) if len(fields) > 1 else 0
        except ValueError:
            return None  # a torn line: count again
    if used_bytes < 0 or used_messages < 0:
        return None  # damaged (it would switch the quota off): count again, as Dovecot does
    return used_bytes, used_messages, count


def _folders(box: int) -> list[str]:
    """The maildir's own folder (".") and its Maildir++ subfolders, not symbolic links."""
    found = ["."]
    with contextlib.suppress(OSError), os.scandir(box) as entries:
        found += [e.name for e in entries if e.name.startswith(".")
                  and e.name not in (".", "..") and e.is_dir(follow_symlinks=False)]
    return found


def _sizes(box: int, folder: str, sub: str) -> Iterator[int]:
    try:
        fd = os.open(f"{folder}/{sub}", maildir.FOLDER, dir_fd=box)
    except OSError:
        return
    try:
        with os.scandir(fd) as scan:
            entries = list(scan)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            match = _SIZE_RE.search(entry.name)
            if match:
                yield int(match.group(1))
                continue
            try:
                yield entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue  # removed while we looked
    finally:
        os.close(fd)


def count(where: Maildir) -> tuple[int, int]:
    """Scan cur/ and new/ of the maildir and of every Maildir++ subfolder."""
    used_bytes = used_messages = 0
    with _folder(where) as box:
        for folder in _folders(box):
            for sub in ("cur", "new"):
                for size in _sizes(box, folder, sub):
                    used_bytes += size
                    used_messages += 1
    return used_bytes, used_messages


def rebuild(where: Maildir, quota: Quota, owner: maildir.Owner = None) -> tuple[int, int]:
    with _folder(where) as box:
        used = count(box)
        _write_summary(box, f"{quota.definition()}\n{used[0]} {used[1]}\n".encode(), owner)
    return used


def _write_summary(box: int, text: bytes, owner: maildir.Owner) -> None:
    """Write maildirsize anew (under tmp/, renamed in). Only the cache is lost when this
    fails, the count is still right; but a symbolic link as tmp/ fails with ELOOP."""
    try:
        tmp = maildir.folder("tmp", box)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise
        return
    name = f"{maildir.unique_name(len(text))}.maildirsize"
    try:
        fd = os.open(name, maildir.NEW_FILE, maildir.FILE_MODE, dir_fd=tmp)
        try:
            if owner is not None:  # Dovecot (the mail user) appends to it too
                os.fchown(fd, *owner)
            os.write(fd, text)
        finally:
            os.close(fd)
        # rename replaces a symbolic link named maildirsize; it never writes through one
        os.rename(name, FILE, src_dir_fd=tmp, dst_dir_fd=box)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=tmp)
    finally:
        os.close(tmp)


def usage(where: Maildir, quota: Quota, owner: maildir.Owner = None) -> tuple[int, int]:
    used = read(where, quota)
    return used if used is not None else rebuild(where, quota, owner)


def over(where: Maildir, quota: Quota, size: int, owner: maildir.Owner = None) -> bool:
    """Is the maildir too full for a message of `size` bytes?"""
    if not quota.enabled:
        return False
    with _folder(where) as box:
        return check(box, quota, size, owner)[0]


def check(box: int, quota: Quota, size: int,
          owner: maildir.Owner = None) -> tuple[bool, tuple[int, int]]:
    """over(), with the usage (bytes, messages) it was decided on, so the quota warning
    needs no second read."""
    decided = cached(box, quota, size)
    return decided if decided is not None else recount(box, quota, size, owner)


def recount(box: int, quota: Quota, size: int,
            owner: maildir.Owner = None) -> tuple[bool, tuple[int, int]]:
    """check()'s answer from a count of the whole mailbox (rebuild()), for when cached()
    had none: a listing of every folder, which local-delivery does off its event loop."""
    used = rebuild(box, quota, owner)
    return quota.exceeded(*used, size), used


def cached(box: int, quota: Quota, size: int) -> tuple[bool, tuple[int, int]] | None:
    """check()'s answer from maildirsize alone (a read of a few KB), or None when the
    mailbox must be counted again (recount())."""
    got = _read(box, quota)
    if got is None:
        return None
    used_bytes, used_messages, lines = got
    if not quota.exceeded(used_bytes, used_messages, size):
        return False, (used_bytes, used_messages)
    # "Over quota" is trusted only from one fresh summary line (Courier, Dovecot): appended
    # lines may count a message twice (a delivery that raced a rebuild), and an old file may
    # miss removals by a client that does not update it.
    try:
        mtime = os.stat(FILE, dir_fd=box, follow_symlinks=False).st_mtime
        stale = time.time() - mtime > STALE_SECONDS
    except OSError:
        stale = True
    if stale or lines > 1:
        return None
    return True, (used_bytes, used_messages)


def add(where: Maildir, size: int, messages: int = 1) -> None:
    """Account one delivered message: one appended line (never creates the file, and never
    writes through a symbolic link or into a file linked elsewhere too; a missing or
    refused file is rebuilt by the next check, which counts the new message anyway)."""
    try:
        with _folder(where) as box:
            fd = os.open(FILE, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK
                         | os.O_CLOEXEC, dir_fd=box)
    except OSError:
        return
    try:
        info = os.fstat(fd)
        # a hard link to a file outside the maildir (Postfix's local checks the same)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
            os.write(fd, f"{size} {messages}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)
