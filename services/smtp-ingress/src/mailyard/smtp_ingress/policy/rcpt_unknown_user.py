"""A local domain's unknown user is refused at RCPT (550 5.1.1) instead of bounced later,
so no backscatter (chkuser's job in the vpopmail world)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    assert s.tx is not None and s.tx.candidate is not None
    path = s.tx.candidate
    directory = s.app.directory
    if path.domain and directory.is_local_domain(path.domain) \
            and not directory.accepts(path.address):
        return Verdict(replies.UNKNOWN_USER, "unknown_user")
    return ACCEPT
