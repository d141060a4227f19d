"""/etc/tcp.smtp and vpopmail's open-smtp, read line by line with relay-auth's own parser.

tcp.smtp becomes the relay rules as they are (relay-auth reads tcprules syntax), minus the
lines it cannot use: `=host.name:` rules match the client's reverse DNS, which Mailyard
does not look up, and RELAYCLIENT rules covering every address (a catch-all
`:allow,RELAYCLIENT=""`, `0.0.0.0/0`, `0-255.`) are an open relay, which relay-auth
refuses; both are reported and left out (an import that kept them would fail).

open-smtp (POP-before-SMTP) holds one line per address that logged in recently:

    213.41.188.249:allow,RELAYCLIENT=" ",RBLSMTPD=" " 1029581749

the number being when (Unix time) it last logged in. clearopensmtp removes a line three
hours later (vpopmail's default --enable-clear-minutes=180), so each becomes a lease ending
when clearopensmtp would have removed it; lines already past that are expired, not
imported. open-smtp does not record who logged in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailyard.cli.qmail_import.problems import Problems
from mailyard.core.openrelay import open_relay
from mailyard.core.tcprules import Rule, RuleError, parse_ip, parse_line

CLEAR_MINUTES = 180


def rules_text(lines: list[str], path: Path | str, problems: Problems) -> tuple[str, int]:
    """The tcp.smtp text to import (comments kept, unusable lines left out) and its rules."""
    kept: list[str] = []
    rules: list[Rule] = []
    count = 0
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            kept.append(raw)
            continue
        if stripped.startswith("="):
            problems.unsupported(path, number, "host name rule (=host): Mailyard matches "
                                 "client addresses only; not imported")
            continue
        try:
            rule = parse_line(raw, number)
        except RuleError as exc:
            problems.error(path, number, exc.reason)
            continue
        if rule is not None and open_relay([rule]):
            # relay-auth's ImportRules refuses the whole text for it: say so in the dry run
            problems.unsupported(path, number, "a rule letting every address relay "
                                 "(RELAYCLIENT): an open relay, which Mailyard refuses; not "
                                 "imported (list the networks that may relay)")
            continue
        if rule is not None:
            rules.append(rule)
            if open_relay(rules):  # several rules that cover every address together
                problems.error(path, number, "with this rule the RELAYCLIENT rules let "
                               "every address relay: an open relay, which Mailyard refuses "
                               "(list the networks that may relay)")
                rules.pop()
                continue
        kept.append(raw)
        count += 1
    return "".join(line + "\n" for line in kept), count


@dataclass(frozen=True)
class OpenSmtpEntry:
    ip: str
    last_login: int      # Unix time
    line: int


def open_smtp(lines: list[str], path: Path | str, problems: Problems) -> list[OpenSmtpEntry]:
    out: list[OpenSmtpEntry] = []
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        words = stripped.split()
        stamp = words[-1]
        if len(words) < 2 or not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 18):
            problems.error(path, number, "expected ADDRESS:allow,... TIMESTAMP")
            continue
        try:
            rule = parse_line(stripped, number)
        except RuleError as exc:
            problems.error(path, number, exc.reason)
            continue
        if rule is None or not rule.allow:
            problems.error(path, number, "an open-smtp line allows one address")
            continue
        try:
            ip = parse_ip(rule.pattern)
        except ValueError:
            problems.error(path, number, f"{rule.pattern!r} is not one address")
            continue
        out.append(OpenSmtpEntry(str(ip), int(stamp), number))
    return out


def remaining(entry: OpenSmtpEntry, now: float, clear_minutes: int = CLEAR_MINUTES) -> float:
    """Seconds left before clearopensmtp would have removed the entry (<= 0: expired).

    A login stamped later than now (the old host's clock ahead of ours, or a garbled line)
    counts as one made now: no imported lease outlives a fresh login's."""
    return min(entry.last_login - now, 0) + clear_minutes * 60
