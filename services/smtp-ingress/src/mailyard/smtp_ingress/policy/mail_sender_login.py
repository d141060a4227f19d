"""Opt-in (add it to MAIL_CHECKS): an AUTH user's envelope sender must be its own, as
Postfix's reject_authenticated_sender_login_mismatch, so a stolen or shared password
cannot send as the boss. Own means the login itself, or an address the directory leads to
that mailbox and nowhere else: an alias (or chain of aliases) or a forwarding mailbox
(no keep_copy) whose one target is the login. Not own: a list (its mail is the list's
expansion, never a member's submission), an alias shared with others (every one of them
would speak for all), a catch-all (it makes every unknown name of the domain, security@
or billing@, the target's), other domains. The login's own addresses in an alias domain
(joe@alias.test for joe@real.test) and with an extension (joe+tag@, where that address has
no record of its own) are its own: the directory delivers them to its mailbox. <> is allowed, as
Postfix does: it names nobody (MDNs, auto-replies). Sessions without AUTH (relay rules,
leases, mail from outside) have no login to compare and are not checked.

Compared in the directory's canonical form (mailyard.core.directory.canonical: local part
lower-cased as vpopmail does, domain as IDNA A-label). The usual case, the login itself,
costs that one normalisation; an alias a few lookups in the in-memory directory."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mailyard.api.directory.v1 import directory_pb2 as pb
from mailyard.core.directory import DirectoryView, canonical
from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session

# aliases followed from the sender towards the login; local-delivery refuses deeper nesting
# (20) anyway, and a loop ends here
MAX_HOPS = 10


async def check(s: Session) -> Verdict:
    assert s.tx is not None
    sender = s.tx.sender.address
    if not s.auth_user or not sender:
        return ACCEPT
    address = canonical(sender)
    if address == s.auth_user:
        return ACCEPT
    directory = s.app.directory
    if not directory.ready:  # whether an alias is the user's cannot be told yet
        return Verdict(replies.UNAVAILABLE, "unavailable")
    if leads_only_to(directory, address, s.auth_user):
        return ACCEPT
    return Verdict(replies.sender_not_owned(sender, s.auth_user), "sender_login")


def leads_only_to(directory: DirectoryView, address: str, mailbox: str) -> bool:
    """Does all mail for `address` (canonical) end in `mailbox` (canonical) alone?"""
    for _ in range(MAX_HOPS):
        res = directory.resolve(address)
        if res.kind == pb.RESOLUTION_KIND_MAILBOX:
            if canonical(res.mailbox) == mailbox:  # by an alias domain or an extension
                return True
            if not res.targets:  # a mailbox of its own: only the login itself is its user
                return False
            record = directory.mailbox(res.resolved or address)
            if record is None or record.keep_copy:
                return False
        elif res.kind != pb.RESOLUTION_KIND_ALIAS:
            return False
        target = _only_target(res.targets)
        if target is None:
            return False
        if target == mailbox:
            return True
        address = target
    return False


def _only_target(targets: Sequence[str]) -> str | None:
    """The one address `targets` name (canonical), None if they name several or none;
    stops at the first other one (an alias may hold thousands)."""
    if not targets:
        return None
    first = canonical(targets[0])
    return first if all(canonical(t) == first for t in targets[1:]) else None
