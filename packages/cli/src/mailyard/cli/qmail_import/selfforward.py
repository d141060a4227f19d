"""A mailbox's .qmail forwarding to the mailbox itself: a loop on the old host, not a copy.

qmail-local forwards with its own Delivered-To line (example.com-joe@example.com) and bounces
a message that already has it (#5.4.6); vdelivermail forwards with "Delivered-To:
joe@example.com" and bounces a message that has it ("mail is looping"). Either way,
&joe@example.com in .qmail-joe or in joe's own .qmail kept no copy: the message went out
through the file's other lines, came back and bounced. (A line naming joe's Maildir is what
kept one.)
"""

from __future__ import annotations

from mailyard.cli.qmail_import import names
from mailyard.cli.qmail_import.dotqmail import DotQmail
from mailyard.cli.qmail_import.problems import Problems


def drop(dot: DotQmail, address: str, targets: list[str], problems: Problems) -> list[str]:
    """`targets` without `address` (compared without case, as both loop checks do), each of
    the file's lines naming it reported."""
    kept = [t for t in targets if t.lower() != address]
    if len(kept) == len(targets):
        return targets
    for text, number in dot.forwards:
        try:
            same = names.target(text).lower() == address
        except ValueError:
            continue                    # reported by the plan already
        if same:
            problems.unsupported(dot.path, number, f"forward to {text}, the mailbox itself: "
                                 "the old host found the loop when the message came back and "
                                 "bounced it, after the file's other lines, keeping no copy; "
                                 "left out here, so mail goes where the other lines send it "
                                 "(to the Maildir when there are none)")
    return kept
