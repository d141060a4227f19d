"""RCPT TO: one recipient, checked by the rcpt checks (limit, DNSBL, relay, mailbox).

A bare <postmaster> (no domain, any case) must be accepted from anyone (RFC 5321 4.5.1),
so a client refused elsewhere, or on a DNSBL, can still reach a human: it becomes the
postmaster of `me` and passes only the recipient limit.

A bounce to one of our SRS addresses (a forward's rewritten sender) is taken for the
address it reverses to, the one relay SRS makes legitimate (srs_rcpt); any other address
pays a prefix test for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.core import srs
from mailyard.smtp_ingress import policy, replies, srs_rcpt
from mailyard.smtp_ingress.syntax import SyntaxProblem, parse_address, split_path

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session

POSTMASTER_CHECKS = ("rcpt_limit",)


async def rcpt(s: Session, arg: str) -> bool:
    tx = s.tx
    if tx is None:
        s.reject(replies.MAIL_FIRST, "sequence")
        return True
    if arg[:3].upper() != "TO:":
        s.reject(replies.RCPT_SYNTAX, "syntax")
        return True
    try:
        raw, rest = split_path(arg[3:])
        path = parse_address(raw, allow_empty=False)
    except SyntaxProblem as exc:
        s.reject(str(exc), "syntax")
        return True
    if rest:  # no DSN (NOTIFY/ORCPT) support, like qmail
        s.reject(replies.RCPT_PARAMETER, "syntax")
        return True
    if not path.ascii and not tx.smtputf8:
        s.reject(replies.NON_ASCII, "non_ascii")
        return True
    only = None
    if not path.domain and path.local.lower() == "postmaster":
        path = parse_address(f"postmaster@{s.app.me()}", allow_empty=False)
        only = POSTMASTER_CHECKS
    srs_reversed = False
    if path.domain and srs.is_srs(path.local) and srs_rcpt.ours(s, path.domain):
        reversed_path = await srs_rcpt.reverse(s, path)
        if isinstance(reversed_path, str):
            s.reject(reversed_path, "srs_invalid" if reversed_path[0] == "5" else "unavailable")
            return True
        path, srs_reversed = reversed_path, True
    tx.candidate, tx.candidate_srs = path, srs_reversed
    verdict = await policy.run("rcpt", s, only)
    tx.candidate, tx.candidate_srs = None, False
    if not verdict.accepted:
        # recipients past MAX_RECIPIENTS are sent again in another transaction (RFC 5321
        # 4.5.3.1.10): no error, or a big mailing would be cut with its accepted
        # recipients, unless the client goes on far past it (Postfix's overshoot limit)
        over = verdict.reason == "too_many_recipients"
        if over:
            tx.overshoot += 1
        s.reject(verdict.reply, verdict.reason,
                 error=not over or tx.overshoot > s.settings.rcpt_overshoot_limit)
        return True
    tx.recipients.append(path.address)
    s.reply(replies.RCPT_OK)
    return True
