"""vpasswd.cdb beside vpasswd: what the old host really used.

vpopmail's cdb backend answers logins and deliveries from vpasswd.cdb alone (vauth_getpw
builds it from vpasswd only when it is missing; vadduser, vpasswd and vmoduser rebuild it,
vmkpasswd on request). A vpasswd edited by hand without vmkpasswd therefore never took
effect. The import reads vpasswd; each user the two files disagree on is reported, and a
user only the cdb held (a mailbox with mail that the import would leave behind) is an error.

cdb (cr.yp.to/cdb/cdb.txt): 256 (position, slots) pairs of little-endian 32-bit numbers,
then the records one after another (key length, data length, key, data), then the hash
tables; the first table starts where the records end. vpopmail's key is the user name, its
data the rest of the vpasswd line up to the LF (a DOS line's CR included).
"""

from __future__ import annotations

import struct
from pathlib import Path

from mailyard.cli.qmail_import.problems import Problems
from mailyard.cli.qmail_import.sourcefile import decode

HEADER = 2048


def records(raw: bytes) -> dict[str, str]:
    """key -> data of every record (the first of a key, as cdb_seek finds it); ValueError
    when `raw` is not a cdb."""
    if len(raw) < HEADER:
        raise ValueError("shorter than a cdb header")
    tables = [struct.unpack_from("<II", raw, 8 * i) for i in range(256)]
    end = min(position for position, _ in tables)
    if not HEADER <= end <= len(raw) or any(
            position + 8 * slots > len(raw) for position, slots in tables):
        raise ValueError("its hash tables are not where its header says")
    out: dict[str, str] = {}
    pos = HEADER
    while pos < end:
        if pos + 8 > end:
            raise ValueError("a record runs into the hash tables")
        klen, dlen = struct.unpack_from("<II", raw, pos)
        start, pos = pos + 8, pos + 8 + klen + dlen
        if pos > end:
            raise ValueError("a record runs into the hash tables")
        out.setdefault(decode(raw[start:start + klen]), decode(raw[start + klen:pos]))
    return out


def compare(lines: list[str], raw: bytes, vpasswd: Path, cdb: Path,
            problems: Problems) -> None:
    try:
        held = records(raw)
    except ValueError as exc:
        problems.unsupported(cdb, 0, f"not a cdb ({exc}): what the old host used is not "
                             "known; vpasswd is imported")
        return
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        name, colon, data = line.partition(":")
        if not colon or not line.strip() or line.startswith("#"):
            continue
        seen.add(name)
        if name not in held:
            problems.unsupported(vpasswd, number, f"{name}: not in vpasswd.cdb, which the "
                                 "old host's logins and deliveries read (vmkpasswd was not "
                                 "run since this line was added): imported as vpasswd says")
        # make_vpasswd_cdb keeps the data up to the LF, so a CRLF line's record ends in the
        # CR that read_lines drops from the line: a line end, not a difference
        elif held[name].removesuffix("\r") != data:
            problems.unsupported(vpasswd, number, f"{name}: vpasswd.cdb, which the old "
                                 "host's logins and deliveries read, holds another line for "
                                 "it (vpasswd was edited and vmkpasswd not run): imported as "
                                 "vpasswd says")
    for name in sorted(set(held) - seen):
        problems.error(cdb, 0, f"{name}: in vpasswd.cdb, which the old host's logins and "
                       "deliveries read, but not in vpasswd: its mailbox and mail would stay "
                       "behind (put its line back in vpasswd, e.g. from cdbdump)")
