"""users/cdb beside users/assign: what qmail really used.

qmail-lspawn looks users up in users/cdb alone, which qmail-newu builds from users/assign
(vadddomain and vdeldomain run it). An assign edited without qmail-newu never took effect:
a domain the cdb lacks got no mail on the old host, and one only the cdb holds did. A '+'
line is the record "!" + its lower-cased prefix, with user, uid, gid, home, dash and ext
NUL-terminated (the ext's terminator left off); the "" record lists the wildcard characters.
"""

from __future__ import annotations

from pathlib import Path

from mailyard.cli.qmail_import.assign import AssignedDomain
from mailyard.cli.qmail_import.problems import Problems
from mailyard.cli.qmail_import.vpasswdcdb import records


def compare(assigned: list[AssignedDomain], raw: bytes, assign_path: Path, cdb_path: Path,
            problems: Problems) -> None:
    try:
        held = records(raw)
    except ValueError as exc:
        problems.unsupported(cdb_path, 0, f"not a cdb ({exc}): what the old host used is not "
                             "known; users/assign is imported")
        return
    # wildcard ('+') records only: an exact ('=') one's key ends in NUL
    wild = {key[1:]: data.split("\x00") for key, data in held.items()
            if key.startswith("!") and not key.endswith("\x00")}
    for d in assigned:
        fields = wild.pop(f"{d.name}-", None)
        if fields is None:
            problems.unsupported(assign_path, d.line, f"{d.name}: not in users/cdb, which "
                                 "qmail read (qmail-newu was not run since this line was "
                                 "added): the old host did not deliver its mail; imported, "
                                 "it receives mail here")
        elif fields[:1] != [d.real] or fields[3:4] != [d.home]:
            problems.unsupported(assign_path, d.line, f"{d.name}: users/cdb, which qmail "
                                 f"read, maps it to {':'.join(fields[:1] + fields[3:4])} "
                                 "(qmail-newu was not run since this line changed): imported "
                                 "as users/assign says")
    for prefix in sorted(p for p in wild if p.endswith("-")):
        problems.error(cdb_path, 0, f"{prefix[:-1]}: in users/cdb, which qmail read, but not "
                       "in users/assign: the old host delivered its mail and the import would "
                       "leave it out (put its line back in users/assign)")
