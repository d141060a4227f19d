"""qmail's users/assign as vpopmail writes it: one virtual domain per line, a "." line last.

    +example.com-:example.com:89:89:/home/vpopmail/domains/example.com:-::
    +alias.example-:example.com:89:89:/home/vpopmail/domains/example.com:-::
    .

Fields (qmail-users(5)): `+prefix:user:uid:gid:home:dash:ext:`. vpopmail's prefix is the
domain followed by "-", user is the real domain (an alias domain names its real domain
there), home the domain's directory. `=local:...` lines (one system user each) are qmail's
own, not vpopmail's, and are reported. qmail-newu stops at the "." line, so anything after
it never took effect on the old host and is not imported either.

The help page shows two entries on one line, separated by a blank. qmail-newu reads a line
up to the seventh ':' after its key and drops the rest, so the second entry never reached
users/cdb: that domain had no mail and no logins on the old host. It is reported, not
imported (vpopmail never writes a blank into these fields, so a blank ends the entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailyard.cli.qmail_import import names
from mailyard.cli.qmail_import.problems import Problems


@dataclass(frozen=True)
class AssignedDomain:
    name: str            # A-label, as the directory stores it
    real: str            # the domain it delivers to (== name unless an alias domain)
    uid: int
    gid: int
    home: str            # the domain directory on the old host
    line: int


def parse(lines: list[str], path: Path | str, problems: Problems) -> list[AssignedDomain]:
    out: list[AssignedDomain] = []
    ended = False
    for number, raw in enumerate(lines, 1):
        if ended:
            if raw.strip():
                problems.unsupported(path, number, "after the final '.' line: qmail-newu "
                                     "ignores it, so it is not imported")
            continue
        if raw.startswith("."):     # qmail-newu's test: what follows the dot is ignored
            ended = True
            continue
        if not raw.strip():
            problems.error(path, number, "empty line before the final '.' (qmail-newu "
                           "refuses the file)")
            continue
        if "\x00" in raw:
            problems.error(path, number, "NUL byte in the line (qmail-newu refuses the file)")
            continue
        first, *rest = raw.split()
        domain = _entry(first, number, path, problems)
        if domain is None:          # the line is reported already
            continue
        out.append(domain)
        for dropped in rest:
            problems.unsupported(path, number, f"{dropped.partition(':')[0]!r} after the "
                                 "line's first entry: qmail-newu drops what follows the first "
                                 "entry's last ':', so it never reached users/cdb (no mail, "
                                 "no logins on the old host); not imported")
    if not ended and lines:
        problems.error(path, len(lines), "no final '.' line: qmail-newu refuses the file, "
                       "so the old host never used this version of it")
    return out


def _entry(entry: str, number: int, path: Path | str,
           problems: Problems) -> AssignedDomain | None:
    if entry.startswith("="):
        problems.unsupported(path, number, f"exact assignment {entry.partition(':')[0]!r} (a "
                             "system user, not vpopmail): Mailyard has no system users")
        return None
    if not entry.startswith("+"):
        problems.error(path, number, f"expected +domain-:domain:uid:gid:dir:-:: in {entry!r}")
        return None
    fields = entry[1:].split(":")
    if len(fields) != 8 or fields[7] != "":
        problems.error(path, number, f"expected 7 fields, each ending in ':', in {entry!r}")
        return None
    prefix, real, uid, gid, home, dash, _ext, _ = fields
    if not prefix.endswith("-"):
        problems.unsupported(path, number, f"prefix {prefix!r} does not end in '-': not a "
                             "vpopmail domain")
        return None
    # at most 10 digits: qmail keeps them in C ints, and int() refuses 4301 or more
    if not all(f.isascii() and f.isdigit() and len(f) <= 10 for f in (uid, gid)):
        problems.error(path, number, f"uid and gid must be numbers in {entry!r}")
        return None
    if not home.startswith("/"):
        problems.error(path, number, f"domain directory {home!r} is not an absolute path")
        return None
    if dash != "-":
        problems.error(path, number, f"sixth field must be '-' in {entry!r}")
        return None
    try:
        name = names.domain(prefix[:-1])
        real_name = names.domain(real)
    except ValueError as exc:
        problems.error(path, number, str(exc))
        return None
    return AssignedDomain(name, real_name, int(uid), int(gid), home, number)
