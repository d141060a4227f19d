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
QA_ADMIN = 0x1000         # QmailAdmin's administrator of the domain
V_OVERRIDE = 0x2000       # the user is not subject to the domain's limits (vmoduser -o)
NO_SPAMASSASSIN = 0x4000  # vdelivermail's spam handling (--enable-spamassassin) ...
DELETE_SPAM = 0x8000
NO_MAILDROP = 0x40000     # ... and its maildrop filter (--enable-maildrop)

LOGINS = NO_POP | NO_IMAP | NO_SMTP
# the flags that changed what a user could do or what became of its mail on the old host;
# Mailyard keeps none of them. Not here: NO_PASSWD_CHNG and NO_WEBMAIL (no user changes a
# password or reads webmail through Mailyard), V_USER0-3 (they meant nothing to vpopmail).
REPORTED = {NO_POP: "NO_POP", NO_IMAP: "NO_IMAP", BOUNCE_MAIL: "BOUNCE_MAIL",
            NO_RELAY: "NO_RELAY", NO_DIALUP: "NO_DIALUP", NO_SMTP: "NO_SMTP",
            QA_ADMIN: "QA_ADMIN", NO_SPAMASSASSIN: "NO_SPAMASSASSIN",
            DELETE_SPAM: "DELETE_SPAM", NO_MAILDROP: "NO_MAILDROP"}


def locked(flags: int) -> bool:
    """Refused every login Mailyard offers on the old host."""
    return flags & LOGINS == LOGINS


def effective(own: int, domain: int) -> int:
    """A user's flags as vpopmail applied them: the domain's limits join unless V_OVERRIDE."""
    return own if own & V_OVERRIDE else own | domain


def report(own: int, domain: int, local: str, path: Path | str, line: int,
           problems: Problems) -> None:
    """One line per flag of the user's own that does not come over, and one when the user
    is locked by them, or by them and the domain's together (a domain whose limits alone
    lock its users says so once, at its limits file: domain_report)."""
    flags = effective(own, domain)
    if locked(flags):
        if not (locked(domain) and not own & V_OVERRIDE):
            webmail = ("" if flags & NO_WEBMAIL
                       else " (webmail was allowed there; Mailyard has none)")
            problems.unsupported(path, line, f"{local}: vpopmail refused it every login "
                                 f"(NO_POP, NO_IMAP, NO_SMTP){webmail}: imported locked, with "
                                 "its mail and a password nobody knows (mailyard user passwd "
                                 "opens it)")
        own &= ~LOGINS
    for bit, flag in REPORTED.items():
        if own & bit:
            problems.unsupported(path, line, f"{local}: vpopmail flag {flag} is not carried "
                                 "over (Mailyard has no per-user switch for it)")


def domain_report(domain: int, name: str, users: int, path: Path | str, line: int,
                  problems: Problems) -> None:
    """The flags a domain's limits file gives its `users` (those without V_OVERRIDE)."""
    if locked(domain):
        problems.unsupported(path, line, f"{name}: its limits refused every login (NO_POP, "
                             f"NO_IMAP, NO_SMTP) to its {users} user(s) without V_OVERRIDE: "
                             "they are imported locked, with their mail and a password nobody "
                             "knows (mailyard user passwd opens one)")
        domain &= ~LOGINS
    shown = [flag for bit, flag in REPORTED.items() if domain & bit]
    if shown:
        problems.unsupported(path, line, f"{name}: its limits set {', '.join(shown)} for its "
                             f"{users} user(s) without V_OVERRIDE: not carried over (Mailyard "
                             "has no per-user switch for it)")
