"""vpopmail's domain limits: ~vpopmail/domains/DOMAIN/.qmailadmin-limits, or when a domain has
none, ~vpopmail/etc/vlimits.default (vget_limits' order; the default is not merged in).

    maxpopaccounts  -1
    # a comment
    disable_pop
    disable_smtp

A line is a name, then blanks, tabs or ':' and a value. vpopmail 5.4 ORs the flags of the
disable_* lines into those of every user of the domain who lacks V_OVERRIDE
(vlimits_setflags), so vchkpw refused those logins as if each user had the flag. The maxima
and perm_* lines are QmailAdmin's limits on the domain's administrators and are not read
here. Of the quota lines, quota and maxmsgcount cap the domain's mailboxes together
(vdelivermail built with --enable-domainquotas), which Mailyard cannot; default_quota and
default_maxmsgcount are what vadduser wrote into a new user's vpasswd quota field, so each
user already carries its own: all four are reported (plan), none is applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mailyard.cli.qmail_import import userflags
from mailyard.cli.qmail_import.problems import Problems

KEYS = {
    "disable_pop": userflags.NO_POP, "disable_imap": userflags.NO_IMAP,
    "disable_smtp": userflags.NO_SMTP, "disable_webmail": userflags.NO_WEBMAIL,
    "disable_external_relay": userflags.NO_RELAY, "disable_dialup": userflags.NO_DIALUP,
    "disable_spamassassin": userflags.NO_SPAMASSASSIN, "delete_spam": userflags.DELETE_SPAM,
    "disable_maildrop": userflags.NO_MAILDROP,
}
QUOTAS = ("quota", "maxmsgcount", "default_quota", "default_maxmsgcount")
_NAME = re.compile(r"[^ \t:]*")
# strtoll's reading of the value (saturating: 19 digits are enough), 0 unless a number
_NUMBER = re.compile(r"[ \t:]*(-?[0-9]{1,19})")


@dataclass
class Limits:
    flags: int = 0
    lines: list[int] = field(default_factory=list)   # where the flags were set, in order
    quotas: list[tuple[str, int, int]] = field(default_factory=list)  # (name, value, line)


def parse(lines: list[str]) -> Limits:
    """The flags a limits file sets (nothing in one is malformed to vpopmail: it skips what
    it does not know)."""
    out = Limits()
    for number, text in enumerate(lines, 1):
        for line in text.split("\r"):      # vlimits_read_limits_file ends a line at CR too
            if line.startswith("#"):
                continue
            match = _NAME.match(line)
            name = match.group(0) if match else ""
            value = _NUMBER.match(line, len(name)) if name in QUOTAS else None
            if value and int(value.group(1)) > 0:      # 0 or less: no limit
                out.quotas.append((name, int(value.group(1)), number))
            bit = KEYS.get(name, 0)
            if bit:
                out.flags |= bit
                if not out.lines or out.lines[-1] != number:
                    out.lines.append(number)
    return out


def report_quotas(limits: Limits, domain: str, path: Path, problems: Problems) -> None:
    for name, value, line in limits.quotas:
        if name.startswith("default_"):
            problems.unsupported(path, line, f"{name} {value}: vadduser wrote it into each new "
                                 f"user's vpasswd quota, which the users of {domain} keep (one "
                                 "without had none there); Mailyard gives new mailboxes no "
                                 "default: give one with mailyard user add --quota / "
                                 "--quota-messages")
        else:
            problems.unsupported(path, line, f"{name} {value}: a cap on all of {domain}'s "
                                 "mailboxes together (vdelivermail with --enable-domainquotas); "
                                 "Mailyard has per-mailbox quotas only: not imported, each "
                                 "mailbox keeps its own")
