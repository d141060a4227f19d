"""SPF (RFC 7208) for mail from outside, at MAIL: the MAIL FROM identity (postmaster@HELO
for the null sender) and the HELO identity. The results go into Authentication-Results and
DMARC. control/spfpolicy: "tag" (default) only records a fail; "reject" refuses a -all
fail with 550 5.7.23. temperror (a DNS timeout) never rejects."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.metrics import AUTH_VERDICTS
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    tx = s.tx
    assert tx is not None
    checker = s.app.spf
    if checker is None or s.may_relay is True:
        return ACCEPT
    if tx.sender.address:
        spf, helo = await asyncio.gather(
            checker.check(s.ip, tx.sender.address, s.helo), checker.check_helo(s.ip, s.helo))
        tx.spf_helo = helo
        AUTH_VERDICTS.labels("spf_helo", helo.result).inc()
    else:
        spf = await checker.check(s.ip, "", s.helo)
    tx.spf = spf
    AUTH_VERDICTS.labels("spf", spf.result).inc()
    if spf.result == "fail" and s.app.policy_word("spfpolicy", "tag") == "reject":
        return Verdict(replies.spf_fail(spf.domain, s.ip), "spf")
    return ACCEPT
