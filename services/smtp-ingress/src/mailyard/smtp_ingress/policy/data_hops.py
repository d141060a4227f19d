"""qmail-smtpd's loop guard: more than 100 Received:/Delivered-To: header lines."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session

MAX_HOPS = 100


def hops(message: bytes) -> int:
    end = message.find(b"\r\n\r\n")
    header = message[:end + 2] if end >= 0 else message
    count = 0
    for line in header.lower().split(b"\r\n"):
        if line.startswith((b"received:", b"delivered-to:")):
            count += 1
    return count


async def check(s: Session) -> Verdict:
    assert s.tx is not None and s.tx.body is not None
    if hops(s.tx.body.head) > MAX_HOPS:
        return Verdict(replies.HOPS, "hops")
    return ACCEPT
