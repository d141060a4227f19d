"""qmail's control/badmailfrom: whole addresses, or "@domain" for a whole domain."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.core.addresses import split
from mailyard.core.directory import canonical
from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    assert s.tx is not None
    sender = s.tx.sender
    if not sender.address:
        return ACCEPT
    address, domain = sender.address.lower(), sender.domain
    # Compared as the directory keys addresses (NFC local part, A-label domain; ASCII is
    # that already): a sender in the form an entry was not written in got through.
    if not sender.ascii:
        address = canonical(sender.address)
        domain = split(address)[1]
    for line in s.app.control.lines("badmailfrom"):
        entry = line.lower() if line.isascii() else canonical(line)
        if entry == address or (entry.startswith("@") and entry[1:] == domain):
            return Verdict(replies.BADMAILFROM, "badmailfrom")
    return ACCEPT
