"""Our Received: line, in qmail's spirit: who (HELO, reverse name, IP, authenticated user),
us, how (RFC 3848 protocol names, TLS version and cipher), the queue id and the time."""

from __future__ import annotations

import email.utils
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session
    from mailyard.smtp_ingress.transaction import Transaction


def _safe(text: str, utf8: bool) -> str:
    """Nothing that could end the comment or the header (qmail's safehost)."""
    out = []
    for ch in text[:255]:
        if ch in "()\\\r\n" or ord(ch) < 33 or ord(ch) == 127 or (ord(ch) > 127 and not utf8):
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


_date: tuple[int, str] = (-1, "")  # the date of the last second asked for, made once


def date_now() -> str:
    """RFC 5322's date of now, qmail's "-0000" for UTC; made once a second, not per
    message (email.utils was a few percent of smtp-ingress's CPU per message)."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second).replace("+0000", "-0000"))
    return _date[1]


def reverse_name(s: Session) -> str:
    task = s.ptr
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return ""
    return task.result()


def protocol(s: Session, tx: Transaction) -> str:
    """RFC 3848's ESMTP, ESMTPS, ESMTPA, ESMTPSA; with SMTPUTF8 RFC 6531's UTF8SMTP,
    UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA (no E: SMTPUTF8 implies EHLO), which readers of
    Received: lines match to tell an authenticated submission."""
    how = ("S" if s.tls else "") + ("A" if s.auth_user else "")
    if tx.smtputf8:
        return "UTF8SMTP" + how
    return ("ESMTP" if s.esmtp else "SMTP") + how


def received_line(s: Session, tx: Transaction, queue_id: str) -> bytes:
    utf8 = tx.smtputf8
    host = _safe(reverse_name(s), utf8) or "unknown"
    lines = [f"Received: from {host} (HELO {_safe(s.helo, utf8)}) ({s.ip})"]
    if s.auth_user:
        lines.append(f"  (authenticated user {_safe(s.auth_user, utf8)})")
    via = f"  by {s.app.me()} with {protocol(s, tx)}"
    if s.tls:
        via += f" ({s.tls})"
    lines.append(f"{via} id {queue_id};")
    lines.append(f"  {date_now()}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
