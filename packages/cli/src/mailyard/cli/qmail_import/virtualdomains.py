"""qmail's control/virtualdomains: which domains qmail-send handed to vpopmail.

    example.com:example.com          vadddomain's line: the domain to its users/assign prefix
    lists.example.net:ezmlm          a system user's prefix (not vpopmail)
    .example.com:example.com         every subdomain
    joe@example.org:joe-forward      one address

The key is case-insensitive and ends at the first ':' (qmail-send's constmap). A vpopmail
domain of users/assign without its own line got no mail on the old host (qmail-send sent it
out as remote mail, which bounced with 5.4.6), and a line to anything else is mail nothing
imported takes: both are reported. Without the file nothing can be told, and nothing is said.
"""

from __future__ import annotations

from pathlib import Path

from mailyard.cli.qmail_import.assign import AssignedDomain
from mailyard.cli.qmail_import.problems import Problems


def check(lines: list[str], path: Path, assigned: list[AssignedDomain], assign_path: Path,
          problems: Problems) -> None:
    vpopmail = {d.name for d in assigned}
    delivered: set[str] = set()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, prefix = line.partition(":")
        key = key.lower()
        if key in vpopmail and prefix.lower() == key:
            delivered.add(key)
            continue
        what = ("every other domain" if not key else f"every subdomain of {key[1:]}"
                if key.startswith(".") else f"the address {key}" if "@" in key else key)
        problems.unsupported(path, number, f"mail for {what} went to the qmail prefix "
                             f"{prefix!r}, not to its vpopmail domain of users/assign: not "
                             "imported (Mailyard refuses it unless it is set up by hand)")
    for d in assigned:
        if d.name not in delivered:
            problems.unsupported(assign_path, d.line, f"{d.name} has no {d.name}:{d.name} "
                                 f"line in {path.name}: qmail-send never handed its mail to "
                                 "vpopmail on the old host (it went out as remote mail and "
                                 "bounced); imported, it receives mail here")
