"""vpopmail's per-user flags (vpopmail.h's bits in vpasswd's gid field) and what they become.

Mailyard keeps no per-protocol switch on a mailbox, so a flag that refused one login or
service is reported per user and not carried over. One case cannot be left at that: an
account vchkpw refused every login Mailyard offers (POP3, IMAP and SMTP AUTH: how vmoduser
-p -i -s disables an account while its mail is still delivered) would open everywhere with
its old password. It comes over locked instead: its mail, and a password nobody knows.
"""

from __future__ import annotations

from pathlib import Path

from mailyard.cli.qmail_import.problems import Problems

NO_POP = 0x02
NO_WEBMAIL = 0x04
NO_IMAP = 0x08
BOUNCE_MAIL = 0x10
NO_RELAY = 0x20
NO_DIALUP = 0x40
NO_SMTP = 0x800

LOGINS = NO_POP | NO_IMAP | NO_SMTP
# the flags that change what a user may do on the old host; Mailyard keeps none of them
REPORTED = {NO_POP: "NO_POP", NO_IMAP: "NO_IMAP", BOUNCE_MAIL: "BOUNCE_MAIL",
            NO_RELAY: "NO_RELAY", NO_DIALUP: "NO_DIALUP", NO_SMTP: "NO_SMTP"}


def locked(flags: int) -> bool:
    """Refused every login Mailyard offers on the old host."""
    return flags & LOGINS == LOGINS


def report(flags: int, local: str, path: Path | str, line: int, problems: Problems) -> None:
    """One line per flag that does not come over; a locked account's login flags are one."""
    shown = flags & ~LOGINS if locked(flags) else flags
    if locked(flags):
        webmail = "" if flags & NO_WEBMAIL else " (webmail was allowed there; Mailyard has none)"
        problems.unsupported(path, line, f"{local}: vpopmail refused it every login (NO_POP, "
                             f"NO_IMAP, NO_SMTP){webmail}: imported locked, with its mail and "
                             "a password nobody knows (mailyard user passwd opens it)")
    for bit, flag in REPORTED.items():
        if shown & bit:
            problems.unsupported(path, line, f"{local}: vpopmail flag {flag} is not carried "
                                 "over (Mailyard has no per-user switch for it)")
