"""RCPT to one of our SRS addresses (mailyard.core.srs): a bounce of a forwarded copy coming
back. Taken for the address it reverses to, relayed there even from a client that may not
relay: the one relay SRS makes legitimate, and only for addresses we made (a valid hash
under our secret) within the last 21 days, as postsrsd does. Anything else under the SRS
prefix at our domains is refused (550), so no one can relay through a made-up one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.core import srs
from mailyard.core.control import srs_domain
from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.syntax import Path, SyntaxProblem, parse_address

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


def ours(s: Session, domain: str) -> bool:
    """A domain our SRS addresses are made at: a hosted domain, or control/srsdomain."""
    if s.app.directory.is_local_domain(domain):
        return True
    return srs_domain(s.app.control) == domain


async def reverse(s: Session, path: Path) -> Path | str:
    """The address a bounce to `path` goes to, or the reply refusing it."""
    secrets = s.app.srs_secrets
    if secrets is None:
        return replies.UNAVAILABLE
    try:
        keys = await secrets.get()
    except Exception:  # the bucket cannot be read now: the bounce is tried again
        return replies.UNAVAILABLE
    try:
        original = srs.reverse(f"{path.local}@{path.domain}", keys)
        return parse_address(original, allow_empty=False)
    except (srs.SrsError, SyntaxProblem):
        return replies.SRS_INVALID
