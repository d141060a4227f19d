"""The header section must end within the head (message_body.HEAD, 64 KB), as Sendmail
refuses one past MaxHeadersLength (32 KB) and Exim one past header_maxsize (1 MB): past the
head nothing can edit it, so a forged Authentication-Results with our id behind 64 KB of
padding would reach the mailbox, and the sender checks would parse it whole, field by
field (2.5 million fields in 10 MB held the event loop about 8 s in dkimpy and the email
package)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    assert s.tx is not None and s.tx.body is not None
    if not s.tx.body.header_in_head:
        return Verdict(replies.HEADER_TOO_LARGE, "header_size")
    return ACCEPT
