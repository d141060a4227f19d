"""A local domain's unknown user is refused at RCPT (550 5.1.1) instead of bounced later,
so no backscatter (chkuser's job in the vpopmail world). So is a list's command address
(news-subscribe@), saying where to write instead."""

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
        # asked only of a refusal, so what is accepted costs nothing more
        if (command := directory.list_command(path.address)) is not None:
            return Verdict(replies.list_command(*command), "unknown_user")
        return Verdict(replies.UNKNOWN_USER, "unknown_user")
    return ACCEPT
