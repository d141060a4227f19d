"""At most MAX_RECIPIENTS per message (RFC 5321 asks for at least 100): 452, the client
sends the rest in another transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    assert s.tx is not None
    if len(s.tx.recipients) >= s.settings.max_recipients:
        return Verdict(replies.TOO_MANY_RCPTS, "too_many_recipients")
    return ACCEPT
