"""DKIM verification and DMARC (RFC 7489) for mail from outside, at the end of DATA; the
result (with SPF's from MAIL) becomes our one Authentication-Results header, and incoming
ones claiming our authserv-id are removed first. control/dmarcpolicy: "reject" (default)
refuses a DMARC fail whose policy is p=reject with 550 5.7.1; "tag" only records it.
temperror (a DNS timeout) never rejects. Whether SPF or DKIM vouched for the envelope
sender is kept with the message (sender_verified), for whoever would bounce it later.
Mail of our own users gets no checks and no header, but a forged A-R with our id is
removed from it as well. An ARC chain, when the
message has one, is validated and recorded (arc_verify), never acted on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.core.dkim_sign import from_domain
from mailyard.smtp_ingress import (
    arc_verify,
    authresults,
    dkim_verify,
    dmarc_eval,
    replies,
    sender_verified,
)
from mailyard.smtp_ingress.metrics import AUTH_VERDICTS
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    tx = s.tx
    assert tx is not None
    resolver = s.app.authdns
    if resolver is None or tx.body is None or not tx.real_size:
        return ACCEPT
    me = s.app.me()
    tx.body.edit_header(lambda message: authresults.strip_ours(message, me))
    if s.may_relay is True:
        return ACCEPT
    # a message streamed to a spill file is read back only if it carries a signature
    header = tx.body.header()
    lower = header.lower() if header is not None else b""
    sets = arc_verify.seals(lower)
    signed = header is None or b"dkim-signature" in lower or sets > 0
    message = await tx.body.whole() if signed or header is None else header
    dkims = await dkim_verify.verify(message, resolver)
    for d in dkims or [dkim_verify.DkimResult("none")]:
        AUTH_VERDICTS.labels("dkim", d.result).inc()
    dmarc = await dmarc_eval.evaluate(resolver, from_domain(message), tx.spf, dkims)
    AUTH_VERDICTS.labels("dmarc", dmarc.result).inc()
    arc = None
    if s.app.arc is not None:
        if header is None:   # a header section past the head: count its seals in full
            sets = arc_verify.seals(message.split(b"\r\n\r\n", 1)[0].lower())
        arc = await s.app.arc.verify(message, sets)
        if arc is not None:
            AUTH_VERDICTS.labels("arc", arc.result).inc()
    tx.auth_results = authresults.header(me, tx.spf, tx.spf_helo, dkims, dmarc, arc)
    tx.sender_unverified = sender_verified.unverified(tx.sender.address, tx.spf, dkims)
    if dmarc.result == "fail" and dmarc.policy == "reject" and \
            s.app.policy_word("dmarcpolicy", "reject") == "reject":
        AUTH_VERDICTS.labels("dmarc", "rejected").inc()
        return Verdict(replies.dmarc_reject(dmarc.domain), "dmarc")
    return ACCEPT
