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
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mailyard.local_delivery import maildir

FILE = "maildirsize"
MAX_FILE_SIZE = 5120
STALE_SECONDS = 15 * 60
_SIZE_RE = re.compile(r",S=(\d+)")


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


def read(path: Path, quota: Quota) -> tuple[int, int] | None:
    """(bytes, messages) from an up-to-date maildirsize, or None when it must be rebuilt."""
    got = _read(path, quota)
    return got[:2] if got is not None else None


def _read(path: Path, quota: Quota) -> tuple[int, int, int] | None:
    """read(), plus the number of usage lines."""
    try:
        with open(path / FILE, "rb") as f:
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


def _folders(path: Path) -> list[Path]:
    found = [path]
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        found += [Path(e.path) for e in entries
                  if e.name.startswith(".") and e.name not in (".", "..") and e.is_dir()]
    return found


def count(path: Path) -> tuple[int, int]:
    """Scan cur/ and new/ of the maildir and of every Maildir++ subfolder."""
    used_bytes = used_messages = 0
    for folder in _folders(path):
        for sub in ("cur", "new"):
            try:
                entries = list(os.scandir(folder / sub))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                match = _SIZE_RE.search(entry.name)
                if match:
                    size = int(match.group(1))
                else:
                    try:
                        size = entry.stat().st_size
                    except OSError:
                        continue  # removed while we looked
                used_bytes += size
                used_messages += 1
    return used_bytes, used_messages


def rebuild(path: Path, quota: Quota, owner: maildir.Owner = None) -> tuple[int, int]:
    used = count(path)
    text = f"{quota.definition()}\n{used[0]} {used[1]}\n".encode()
    tmp = path / "tmp" / f"{maildir.unique_name(len(text))}.maildirsize"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, maildir.FILE_MODE)
        try:
            if owner is not None:  # Dovecot (the mail user) appends to it too
                os.fchown(fd, *owner)
            os.write(fd, text)
        finally:
            os.close(fd)
        os.rename(tmp, path / FILE)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # The count is still right; only the cache could not be written.
    return used


def usage(path: Path, quota: Quota, owner: maildir.Owner = None) -> tuple[int, int]:
    used = read(path, quota)
    return used if used is not None else rebuild(path, quota, owner)


def over(path: Path, quota: Quota, size: int, owner: maildir.Owner = None) -> bool:
    """Is the maildir too full for a message of `size` bytes?"""
    if not quota.enabled:
        return False
    got = _read(path, quota)
    if got is None:
        return quota.exceeded(*rebuild(path, quota, owner), size)
    used_bytes, used_messages, lines = got
    if not quota.exceeded(used_bytes, used_messages, size):
        return False
    # "Over quota" is trusted only from one fresh summary line (Courier, Dovecot): appended
    # lines may count a message twice (a delivery that raced a rebuild), and an old file may
    # miss removals by a client that does not update it.
    try:
        stale = time.time() - os.stat(path / FILE).st_mtime > STALE_SECONDS
    except OSError:
        stale = True
    if stale or lines > 1:
        return quota.exceeded(*rebuild(path, quota, owner), size)
    return True


def add(path: Path, size: int, messages: int = 1) -> None:
    """Account one delivered message: one appended line (never creates the file; a missing
    file is rebuilt by the next check, which counts the new message anyway)."""
    try:
        fd = os.open(path / FILE, os.O_WRONLY | os.O_APPEND)
    except OSError:
        return
    try:
        os.write(fd, f"{size} {messages}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)
