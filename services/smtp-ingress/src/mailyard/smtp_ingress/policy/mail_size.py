"""databytes against the client's SIZE= declaration, before any byte is sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    assert s.tx is not None
    limit = s.app.databytes()
    if limit and s.tx.size > limit:
        return Verdict(replies.DATABYTES, "databytes")
    return ACCEPT
