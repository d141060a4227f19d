"""Reading the old host's files as they are: bytes, any encoding, DOS line ends.

qmail and vpopmail never promised an encoding: gecos fields written by qmailadmin are often
Latin-1, so a line that is not UTF-8 is read as Latin-1 (every byte maps to a character)
rather than refused. Nothing here ever opens a file for writing.
"""

from __future__ import annotations

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
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise Unreadable(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError as exc:
        raise Unreadable(f"{path}: is a directory") from exc
    except PermissionError as exc:
        raise Unreadable(f"{path}: permission denied") from exc
    return lines(raw)
