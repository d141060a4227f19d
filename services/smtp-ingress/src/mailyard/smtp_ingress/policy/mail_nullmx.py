"""RFC 7505: a sender domain whose only MX is "0 ." accepts no mail, so mail from it could
never be answered or bounced: 550 5.7.27. Only mail from outside is checked (our own
users' domains are ours); a lookup that fails or times out lets the sender through."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.authdns import TempError
from mailyard.smtp_ingress.metrics import AUTH_VERDICTS
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    assert s.tx is not None
    resolver = s.app.authdns
    domain = s.tx.sender.domain
    if resolver is None or s.may_relay is True or not domain:
        return ACCEPT
    try:
        mxs = await resolver.mx(domain)
    except TempError:
        AUTH_VERDICTS.labels("nullmx", "temperror").inc()
        return ACCEPT
    if len(mxs) == 1 and mxs[0][1] == "":
        AUTH_VERDICTS.labels("nullmx", "fail").inc()
        return Verdict(replies.NULL_MX, "null_mx")
    return ACCEPT
