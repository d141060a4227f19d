"""Quota warnings, as vpopmail's vdelivermail wrote them (QUOTA_WARN_PERCENT, .quotawarn.msg).

After a delivery that leaves a mailbox with a quota at or above the warning level, a warning
is written straight into its Maildir/new: not through the queue, so it arrives when the
mailbox is full and never bounces, and it is counted in maildirsize like any message
(Maildir++). At most one per mailbox per interval: the time is the mtime of the file
`quotawarn` in the maildir (vpopmail's own name and place, so it holds across replicas and
hosts sharing the maildirs, and a maildir moved from vpopmail keeps its last warning).

Replicas (and threads) deciding at once: a missing stamp goes to the one that creates it
(O_EXCL); a stale one to the one that renews its mtime holding flock() on it, the time read
again under the lock (flock works across NFS clients on Linux, as fcntl locks). flock is per
open file, so threads of one process also take a process lock first; a fresh stamp, what
every other delivery at or above the level finds, is one lstat and no lock.

The text is the control file `quotawarn.msg.<domain>` (the mailbox's domain, A-label), else
`quotawarn.msg` (vpopmail's domains/DOMAIN/.quotawarn.msg and domains/.quotawarn.msg), else
a built-in one: a message, its header optional, as vpopmail's files are. Return-Path: <>,
Date, Message-ID, To (the mailbox), MIME-Version and Auto-Submitted: auto-generated are
always ours, once; From (the domain's postmaster), Subject and Content-Type are added when
the text has none. Control characters (a stray CR, NUL) are taken out of its header lines,
and lines that are no field left out: either would end the header early.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import threading
import time
from email.utils import make_msgid

from mailyard.core import headers
from mailyard.local_delivery import maildir
from mailyard.local_delivery.quota import Quota

STAMP = "quotawarn"
CONTROL = "quotawarn.msg"
SUBJECT = "Mail quota warning"
_OURS = ("date", "message-id", "to", "auto-submitted", "return-path", "delivered-to",
         "mime-version")
# in a header line, any of these would end it early or be taken for the end of the header
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_FIELD = re.compile(r"^([!-9;-~]+):")
_IN_PROCESS = threading.Lock()
_CHARSET = re.compile(r'(charset\s*=\s*)"?([^";\s]+)"?', re.IGNORECASE)


def control_name(domain: str) -> str:
    """The control file of one domain's text (`domain` as an A-label)."""
    return f"{CONTROL}.{domain}"


def reached(limits: Quota, used: tuple[int, int], percent: float) -> bool:
    """Is the usage at or above `percent` of either limit?"""
    used_bytes, used_messages = used
    return bool((limits.bytes and used_bytes * 100 >= limits.bytes * percent)
                or (limits.messages and used_messages * 100 >= limits.messages * percent))


def default_text(limits: Quota, used: tuple[int, int]) -> str:
    shares = []
    if limits.bytes:
        shares.append(f"{used[0] * 100 // limits.bytes}% of its {limits.bytes} bytes")
    if limits.messages:
        shares.append(f"{used[1] * 100 // limits.messages}% of its {limits.messages} messages")
    return (f"Subject: {SUBJECT}\n\n"
            f"Your mailbox is nearly full: it holds {' and '.join(shares)}.\n\n"
            "So that you can continue to receive mail, please delete some messages\n"
            "(and empty the Trash folder). Mail that does not fit is returned to its\n"
            "senders.\n")


def claim(box: int, interval: float, owner: maildir.Owner, now: float | None = None) -> bool:
    """Take this interval's warning for the maildir open as `box`: True for the one caller
    that is to write it. OSError when `quotawarn` is no regular file."""
    now = time.time() if now is None else now
    try:
        info = os.stat(STAMP, dir_fd=box, follow_symlinks=False)
    except FileNotFoundError:
        pass
    else:
        # fresh: the usual answer above the level, one stat and no lock (a stamp's mtime
        # only moves on by a claim, so it cannot be wrong to say no)
        if stat.S_ISREG(info.st_mode) and abs(now - info.st_mtime) < interval:
            return False
    with _IN_PROCESS:
        return _claim(box, interval, owner, now)


def _claim(box: int, interval: float, owner: maildir.Owner, now: float) -> bool:
    try:
        fd = os.open(STAMP, maildir.NEW_FILE, maildir.FILE_MODE, dir_fd=box)
    except FileExistsError:
        pass
    else:  # the first warning of this maildir: whoever creates the stamp writes it
        try:
            if owner is not None:  # a maildir's files are the mail user's
                os.fchown(fd, *owner)
            os.utime(fd, (now, now))
        finally:
            os.close(fd)
        return True
    # O_NONBLOCK: a FIFO put there would hold the delivery thread
    fd = os.open(STAMP, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 dir_fd=box)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            # a folder or a FIFO put there (a symbolic link failed to open with ELOOP):
            # never touched, and said (deliver.py logs and counts it)
            raise OSError(errno.ELOOP, "not a regular file, left alone", STAMP)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another replica is deciding: it writes the warning if one is due
        info = os.fstat(fd)  # under the lock: the holder before us may have renewed it
        # a stamp from the future (a host's clock set back) counts as fresh for at most one
        # interval, not until that time comes
        if info.st_nlink == 0 or abs(now - info.st_mtime) < interval:
            return False  # removed meanwhile (release()), or fresh
        os.utime(fd, (now, now))
        return True
    finally:
        os.close(fd)  # and the lock with it


def release(box: int) -> None:
    """Give the claim back (the warning was not written), so a later delivery tries again."""
    with contextlib.suppress(OSError):
        os.unlink(STAMP, dir_fd=box)


def compose(text: str, address: str, domain: str, now: float | None = None) -> bytes:
    """The warning for `address` from `text` (a message; its header optional)."""
    header, body = _split(text)
    names = {_FIELD.match(line).group(1).lower()  # type: ignore[union-attr]
             for line in header if _FIELD.match(line)}
    kept = _without(header, _OURS)
    lines = ["Return-Path: <>",
             f"Date: {headers.date(time.time() if now is None else now)}",
             f"Message-ID: {make_msgid('quotawarn', domain=domain)}"]
    if "from" not in names:
        lines.append(f"From: Postmaster <postmaster@{domain}>")
    lines.append(f"To: <{address}>")
    if "subject" not in names:
        lines.append(f"Subject: {SUBJECT}")
    lines.append("Auto-Submitted: auto-generated")
    if body and not body.endswith("\n"):
        body += "\n"
    encoded = body.encode()
    charset = _charset(kept)
    if charset:
        # the text's own charset (vpopmail hosts kept Latin-1 files), else UTF-8 and the
        # header saying so: the body must be in the charset its Content-Type names
        try:
            encoded = body.encode(charset)
            if b"\x00" in encoded:  # UTF-16 and the like: no text for mail
                raise UnicodeError(charset)
        except (LookupError, UnicodeError):
            encoded = body.encode()
            kept = _to_utf8(kept)
    lines += kept
    # without MIME-Version a Content-Type means nothing (RFC 2045): always ours, once; a
    # text's own Content-Type is kept as it describes the body
    lines.append("MIME-Version: 1.0")
    if "content-type" not in names:
        ascii_only = (body + "".join(kept)).isascii()
        lines += [f"Content-Type: text/plain; charset={'us-ascii' if ascii_only else 'utf-8'}",
                  f"Content-Transfer-Encoding: {'7bit' if ascii_only else '8bit'}"]
    return ("\n".join(lines) + "\n\n").encode() + encoded


def _content_type(header: list[str]) -> list[bool]:
    """For each header line: is it (a line of) the Content-Type field?"""
    marks, in_type = [], False
    for line in header:
        if line[:1] not in " \t":
            in_type = line.lower().startswith("content-type:")
        marks.append(in_type)
    return marks


def _charset(header: list[str]) -> str:
    """The charset parameter of the header's Content-Type, or ""."""
    for line, in_type in zip(header, _content_type(header), strict=True):
        match = _CHARSET.search(line) if in_type else None
        if match:
            return match.group(2)
    return ""


def _to_utf8(header: list[str]) -> list[str]:
    """The header with its Content-Type's charset parameter made utf-8."""
    return [_CHARSET.sub(r"\g<1>utf-8", line) if in_type else line
            for line, in_type in zip(header, _content_type(header), strict=True)]


def _split(text: str) -> tuple[list[str], str]:
    """(header lines, body): a text that does not start with a header field is all body."""
    text = text.replace("\r\n", "\n")
    if not _FIELD.match(text):
        return [], text
    head, sep, body = text.partition("\n\n")
    if not sep:
        if not all(_FIELD.match(x) or x[:1] in " \t" for x in head.split("\n") if x):
            return [], text
        body = ""
    cleaned = (_CONTROL.sub("", x) for x in head.split("\n"))
    return [x for x in cleaned if x], body


def _without(header: list[str], names: tuple[str, ...]) -> list[str]:
    """The header lines less the fields in `names` (and their continuation lines)."""
    out: list[str] = []
    dropping = False
    for line in header:
        if line[:1] in " \t":
            if not dropping:
                out.append(line)
            continue
        match = _FIELD.match(line)
        # a line that is no field would end the header early: left out
        dropping = not match or match.group(1).lower() in names
        if not dropping:
            out.append(line)
    return out
