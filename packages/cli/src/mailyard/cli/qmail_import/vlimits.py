"""vpopmail's domain limits: ~vpopmail/domains/DOMAIN/.qmailadmin-limits, or when a domain has
none, ~vpopmail/etc/vlimits.default (vget_limits' order; the default is not merged in).

    maxpopaccounts  -1
    # a comment
    disable_pop
    disable_smtp

A line is a name, then blanks, tabs or ':' and a value. vpopmail 5.4 ORs the flags of the
disable_* lines into those of every user of the domain who lacks V_OVERRIDE
(vlimits_setflags), so vchkpw refused those logins as if each user had the flag. The maxima,
quotas and perm_* lines are QmailAdmin's limits on the domain's administrators and are not
read here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mailyard.cli.qmail_import import userflags

KEYS = {
    "disable_pop": userflags.NO_POP, "disable_imap": userflags.NO_IMAP,
    "disable_smtp": userflags.NO_SMTP, "disable_webmail": userflags.NO_WEBMAIL,
    "disable_external_relay": userflags.NO_RELAY, "disable_dialup": userflags.NO_DIALUP,
    "disable_spamassassin": userflags.NO_SPAMASSASSIN, "delete_spam": userflags.DELETE_SPAM,
    "disable_maildrop": userflags.NO_MAILDROP,
}
_NAME = re.compile(r"[^ \t:]*")


@dataclass
class Limits:
    flags: int = 0
    lines: list[int] = field(default_factory=list)   # where the flags were set, in order


def parse(lines: list[str]) -> Limits:
    """The flags a limits file sets (nothing in one is malformed to vpopmail: it skips what
    it does not know)."""
    out = Limits()
    for number, text in enumerate(lines, 1):
        for line in text.split("\r"):      # vlimits_read_limits_file ends a line at CR too
            if line.startswith("#"):
                continue
            match = _NAME.match(line)
            bit = KEYS.get(match.group(0) if match else "", 0)
            if bit:
                out.flags |= bit
                if not out.lines or out.lines[-1] != number:
                    out.lines.append(number)
    return out
