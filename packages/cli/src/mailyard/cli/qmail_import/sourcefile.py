"""Reading the old host's files as they are: bytes, any encoding, DOS line ends.

qmail and vpopmail never promised an encoding: gecos fields written by qmailadmin are often
Latin-1, so a line that is not UTF-8 is read as Latin-1 (every byte maps to a character)
rather than refused. Nothing here ever opens a file for writing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MAX_FILE_BYTES = 64 * 1024 * 1024  # larger than any real control file; a guard, not a limit


class Unreadable(OSError):
    """The file exists but cannot be read (permissions, a directory, too large)."""


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def lines(raw: bytes) -> list[str]:
    """Lines split at LF only (qmail's rule), a trailing CR dropped (files edited on DOS),
    each decoded on its own so one Latin-1 gecos does not garble the UTF-8 lines around it."""
    out = raw.split(b"\n")
    if out and out[-1] == b"":
        out.pop()
    return [decode(line[:-1] if line.endswith(b"\r") else line) for line in out]


def read_lines(path: Path) -> list[str] | None:
    """The file's lines, None when it does not exist; Unreadable when it cannot be read."""
    raw = read_bytes(path)
    return None if raw is None else lines(raw)


def read_bytes(path: Path) -> bytes | None:
    """The file's bytes, None when it does not exist; Unreadable when it cannot be read.

    Opened without blocking and checked to be a regular file before reading: a FIFO would
    wait for a writer forever, and a device (a symlink to /dev/zero) says 0 bytes and
    never ends. At most MAX_FILE_BYTES are read, whatever stat() said."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise Unreadable(f"{path}: permission denied") from exc
    except OSError as exc:       # a symlink loop, a path through a file, ...
        raise Unreadable(f"{path}: {exc.strerror}") from exc
    st = os.fstat(fd)
    problem = ("is a directory" if stat.S_ISDIR(st.st_mode)
               else "not a regular file" if not stat.S_ISREG(st.st_mode)
               else f"larger than {MAX_FILE_BYTES} bytes" if st.st_size > MAX_FILE_BYTES
               else "")
    if problem:
        os.close(fd)
        raise Unreadable(f"{path}: {problem}")
    with open(fd, "rb") as fh:
        try:
            raw = fh.read(MAX_FILE_BYTES + 1)
        except OSError as exc:   # EIO on a failing disk
            raise Unreadable(f"{path}: {exc.strerror}") from exc
    if len(raw) > MAX_FILE_BYTES:   # grew since fstat()
        raise Unreadable(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    return raw
