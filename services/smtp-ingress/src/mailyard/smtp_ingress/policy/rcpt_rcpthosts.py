"""The relay decision. Relay clients (tcp.smtp RELAYCLIENT, a POP-before-SMTP lease, or
AUTH) may send anywhere; everyone else only to rcpthosts = local domains + control
"rcpthosts". The domain is what follows the last @ outside quotes, and for domains we only
relay for, local parts with %, !, @ or quotes are refused, so no routing trick opens a
relay. If relay-auth did not answer we never relay: a temporary error instead."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    assert s.tx is not None and s.tx.candidate is not None
    path = s.tx.candidate
    relay = s.may_relay
    if relay or s.tx.candidate_srs:  # a bounce to one of our SRS addresses (srs_rcpt)
        return ACCEPT
    if path.domain and s.app.directory.is_local_domain(path.domain):
        return ACCEPT  # rcpt_unknown_user decides about the mailbox
    if path.domain and s.app.in_rcpthosts(path.domain):
        return Verdict(replies.RCPTHOSTS, "rcpthosts") if path.routing_local else ACCEPT
    if not s.app.views_ready():
        return Verdict(replies.UNAVAILABLE, "unavailable")
    if relay is None:
        return Verdict(replies.RELAY_UNAVAILABLE, "relay_unavailable")
    return Verdict(replies.RCPTHOSTS, "rcpthosts")
