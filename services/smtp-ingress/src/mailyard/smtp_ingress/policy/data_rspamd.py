"""The content scanner (rspamd, rspamd.py), opt-in by control/rspamd (the URL). Its action
is applied with qmail-style texts: reject -> 554 5.7.1, soft reject / greylist -> 451 4.7.1,
add header -> X-Spam: Yes, rewrite subject -> the subject rspamd gives. Every scanned
message gets X-Spamd-Result. Not scanned (down, slow, nonsense): accepted and counted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailyard.smtp_ingress import replies
from mailyard.smtp_ingress.metrics import SCANNER
from mailyard.smtp_ingress.policy import ACCEPT, Verdict
from mailyard.smtp_ingress.rspamd import rewrite_subject

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session


async def check(s: Session) -> Verdict:
    tx = s.tx
    assert tx is not None
    url = (s.app.control.lines("rspamd") or [""])[0]
    if not url or tx.body is None or not tx.real_size:
        return ACCEPT
    message = await tx.body.whole()   # read back if it went to a spill file
    scan = await s.app.rspamd.check(url, message, ip=s.ip, helo=s.helo,
                                    sender=tx.sender.address, recipients=tx.recipients,
                                    user=s.auth_user)
    SCANNER.labels(scan.action).inc()
    if scan.action == "reject":
        return Verdict(replies.SPAM, "spam")
    if scan.action in ("soft_reject", "greylist"):
        return Verdict(replies.SPAM_LATER, "spam")
    if scan.action == "rewrite_subject" and scan.subject:
        subject = scan.subject
        tx.body.edit_header(lambda header: rewrite_subject(header, subject))
    if scan.scanned:
        tx.scan_headers = scan.header()
    return ACCEPT
