"""MAIL FROM: the sender, ESMTP parameters (SIZE, BODY, SMTPUTF8), then the mail checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import policy, replies
from mailyard.smtp_ingress.syntax import SyntaxProblem, parse_address, parse_params, split_path
from mailyard.smtp_ingress.transaction import Transaction

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def mail(s: Session, arg: str) -> bool:
    if not s.helo:
        s.reject(replies.HELO_FIRST, "sequence")
        return True
    if s.tx is not None:
        s.reject(replies.NESTED_MAIL, "sequence")
        return True
    if arg[:5].upper() != "FROM:":
        s.reject(replies.MAIL_SYNTAX, "syntax")
        return True
    try:
        raw, rest = split_path(arg[5:])
        tx = Transaction(sender=parse_address(raw, allow_empty=True))
        problem = _params(s, tx, parse_params(rest))
    except SyntaxProblem as exc:
        s.reject(str(exc), "syntax")
        return True
    if problem:
        s.reject(problem, "syntax")
        return True
    if not tx.sender.ascii and not tx.smtputf8:
        s.reject(replies.NON_ASCII, "non_ascii")
        return True
    if not s.app.spool_has_room(tx.size):  # before DATA, not at its end (a full disk)
        s.reject(replies.INSUFFICIENT_STORAGE, "storage")
        return True
    s.tx = tx
    verdict = await policy.run("mail", s)
    if not verdict.accepted:
        s.tx = None
        s.reject(verdict.reply, verdict.reason)
        return True
    s.reply(replies.MAIL_OK)
    return True


def _params(s: Session, tx: Transaction, params: dict[str, str]) -> str:
    if params and not s.esmtp:
        return replies.PARAMS_NEED_EHLO
    for key, value in params.items():
        if key == "SIZE" and value.isdigit() and len(value) < 20:
            tx.size = int(value)
        elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
            tx.body_8bit = value.upper() == "8BITMIME"
        elif key == "SMTPUTF8" and not value:
            tx.smtputf8 = True
        elif key == "AUTH":  # RFC 4954 AUTH=<>: accepted, not trusted
            continue
        else:
            return replies.unsupported_parameter(key)
    return ""
