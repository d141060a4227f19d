"""vpopmail's per-domain vpasswd: one mailbox per line.

    name:crypted:uid:gid:gecos:dir:quota[:clear]
    joe:$1$Xy0aBcDe$W0p8rqL8G3vpZ1NY4WUxd.:1:0:Joe User:/home/vpopmail/domains/d/joe:NOQUOTA:secret

uid holds vpopmail's login method (1), gid its flags (NO_POP, NO_SMTP, ...: userflags),
the seventh field ("shell") the quota: NOQUOTA, bytes ("5000000", vpopmail before 5.4),
"5000000S", "1000C" or "5000000S,1000C", or kilobytes and megabytes ("2048k", "5M") as
vsetuserquota before 5.4 stored them (vdelivermail multiplies them out when it reads them).
The eighth field, the clear password, is there when vpopmail was built with
--enable-clear-passwd; it may itself contain ':'.

Passwords are crypt(3) strings imported unchanged: DES (13 characters), MD5-crypt ($1$),
SHA-256-crypt ($5$), SHA-512-crypt ($6$) or bcrypt (also $2x$), as mailyard.core.password_hashes
reads them (the directory stores them, relay-auth checks them and replaces them with
argon2id at the first login).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mailyard.cli.qmail_import import names
from mailyard.cli.qmail_import.problems import Problems
from mailyard.core import password_hashes

_QUOTA_ITEM = re.compile(r"([0-9]{1,19})([SC]?)\Z")   # not \d: it takes Arabic digits
_QUOTA_UNITS = {"k": 2**10, "m": 2**20}
_QUOTA_KM = re.compile(r"([0-9]{1,16})([kKmM])\Z")   # format_maildirquota's, alone only


@dataclass(frozen=True)
class VUser:
    local: str           # as the directory stores it (lower case)
    crypted: str         # crypt(3) string, as it was
    hash_kind: str       # password_hashes.SCHEMES
    flags: int
    gecos: str
    home: str            # the user's directory on the old host (Maildir is home/Maildir)
    quota_bytes: int
    quota_messages: int
    clear: str | None
    line: int


def hash_kind(crypted: str) -> str:
    """The scheme of a vpasswd password field ("" when empty), by the same rules the
    directory applies to a hash it is given; HashError when it has none."""
    return password_hashes.scheme(crypted) if crypted else ""


def parse_quota(text: str) -> tuple[int, int]:
    """(bytes, messages) of a vpasswd quota field; 0 means no limit. ValueError if bad."""
    text = text.strip()
    if text in ("", "NOQUOTA"):
        return 0, 0
    size = count = 0
    seen: set[str] = set()
    if m := _QUOTA_KM.match(text):
        size = int(m.group(1)) * _QUOTA_UNITS[m.group(2).lower()]
    for item in [] if m else text.split(","):
        m = _QUOTA_ITEM.match(item.strip())
        if not m:
            raise ValueError(f"quota {text!r} is not NOQUOTA, BYTES, BYTESS, COUNTC, both, "
                             "KILOBYTESk or MEGABYTESM")
        unit = m.group(2) or "S"
        if unit in seen:
            raise ValueError(f"quota {text!r} names {unit} twice")
        seen.add(unit)
        if unit == "S":
            size = int(m.group(1))
        else:
            count = int(m.group(1))
    if size >= 2**64 or count >= 2**64:
        raise ValueError(f"quota {text!r} is too large")
    return size, count


def parse(lines: list[str], domain: str, path: Path | str,
          problems: Problems) -> list[VUser]:
    out: list[VUser] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        if "\x00" in raw:       # no C string holds one; a path with it fails os.open()
            problems.error(path, number, "NUL byte in the line")
            continue
        user = _line(raw, number, domain, path, problems)
        if user is None:
            continue
        if user.local in seen:
            problems.error(path, number, f"{user.local} already defined on line "
                           f"{seen[user.local]}")
            continue
        seen[user.local] = number
        out.append(user)
    return out


def _line(raw: str, number: int, domain: str, path: Path | str,
          problems: Problems) -> VUser | None:
    fields = raw.split(":")
    if len(fields) < 7:
        problems.error(path, number, f"expected name:crypted:uid:gid:gecos:dir:quota[:clear], "
                       f"got {len(fields)} field(s)")
        return None
    name, crypted, uid, gid, gecos, home, quota = fields[:7]
    clear = ":".join(fields[7:]) if len(fields) > 7 else None
    try:
        local = names.address(name, domain).rpartition("@")[0]
        gecos = names.gecos(gecos)
    except ValueError as exc:
        problems.error(path, number, str(exc))
        return None
    try:
        kind = hash_kind(crypted)
    except password_hashes.HashError as exc:
        problems.error(path, number, f"{local}: password field: {exc}")
        return None
    # at most 10 digits: vpopmail keeps them in C ints, and int() refuses 4301 or more
    if not all(f.isascii() and f.isdigit() and len(f) <= 10 for f in (uid, gid)):
        problems.error(path, number, f"{local}: uid and gid must be numbers")
        return None
    if home and not home.startswith("/"):      # "": vpopmail makes it at first use (plan)
        problems.error(path, number, f"{local}: directory {home!r} is not an absolute path")
        return None
    try:
        quota_bytes, quota_messages = parse_quota(quota)
    except ValueError as exc:
        problems.error(path, number, f"{local}: {exc}")
        return None
    flags = int(gid)        # reported by the plan (userflags), with the domain's limits
    # an empty password (vadduser -n) is kept: the plan locks such an account
    return VUser(local, crypted, kind, flags, gecos, home, quota_bytes, quota_messages,
                 clear or None, number)
