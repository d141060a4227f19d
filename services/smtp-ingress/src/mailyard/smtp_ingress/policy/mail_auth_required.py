"""Submission: AUTH before MAIL (RFC 6409 section 4.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    if s.listener.require_auth and not s.auth_user:
        return Verdict(replies.AUTH_REQUIRED, "auth_required")
    return ACCEPT
