"""rblsmtpd: a listed client gets the list's TXT text at every RCPT (451 by default, 553
with DNSBL_PERMANENT, like rblsmtpd -b). Relay clients, authenticated users and rules with
RBLSMTPD="" are exempt; a lookup that timed out lets the client through (dnsbl.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    if s.dnsbl is None or s.auth_user:
        return ACCEPT
    listing = await s.dnsbl
    if listing is None:
        return ACCEPT
    return Verdict(listing.reply, "dnsbl")
