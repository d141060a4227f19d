"""Greylisting, opt-in: control/greylist holds the minimum delay in seconds (no file: off).
Relay clients, lease holders, AUTH users and the networks in control/greylistexempt (one
CIDR per line) are never greylisted. See greylist.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.greylist import exempt
from mailyard.smtp_ingress.metrics import GREYLIST
from mailyard.smtp_ingress.policy import ACCEPT, Verdict

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    tx = s.tx
    assert tx is not None and tx.candidate is not None
    delay = s.app.control.integer("greylist", 0)
    if delay <= 0:
        return ACCEPT
    if s.may_relay is True or exempt(s.ip, s.app.control.lines("greylistexempt")):
        GREYLIST.labels("exempt").inc()
        return ACCEPT
    outcome = await s.app.greylist.check(s.ip, tx.sender.address, tx.candidate.address, delay)
    GREYLIST.labels(outcome).inc()
    if outcome in ("new", "early"):
        return Verdict(replies.GREYLISTED, "greylisted")
    return ACCEPT
