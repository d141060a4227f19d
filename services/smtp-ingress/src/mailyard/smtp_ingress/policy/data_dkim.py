"""DKIM signing's check: mail our own users send (AUTH, relay clients, lease holders) whose
From: domain has a signing key is signed at commit, when the sender may sign for that
domain (dkim_rights: another customer's domain is not signed); such a message must not
contain a line over 998 octets (RFC 5322 2.1.1), which a relay on the way would fold,
breaking the signature. Everything else passes untouched.

The DATA decoder has measured every line already: the message is scanned again only when
it says a line is too long, or a check edited the header section since."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mailyard.core.dkim_sign import MAX_LINE, domain_of, from_address, has_long_line
from mailyard.smtp_ingress.dkim_rights import may_sign
from mailyard.smtp_ingress.metrics import DKIM_SIGNED
from mailyard.smtp_ingress.policy import ACCEPT, Verdict
from mailyard.smtp_ingress.replies import LINE_TOO_LONG_TO_SIGN, UNAVAILABLE

if TYPE_CHECKING:
    from mailyard.smtp_ingress.session import Session

log = logging.getLogger(__name__)


async def check(s: Session) -> Verdict:
    assert s.tx is not None and s.tx.body is not None
    signer = s.app.signer
    if signer is None or s.may_relay is not True or not s.tx.real_size:
        return ACCEPT
    signer.reload()
    if not signer.by_domain:  # no keys: don't read back a spilled message for nothing
        DKIM_SIGNED.labels("no_key").inc()
        return ACCEPT
    message = await s.tx.body.whole()  # read back if it went to a spill file
    address = from_address(message)
    keys = signer.keys_for(domain_of(address)) if address else []
    if not keys:
        DKIM_SIGNED.labels("no_key").inc()
        return ACCEPT
    entitled = may_sign(s, keys[0].domain, address)
    if entitled is None:  # whose the domain is cannot be told yet: retry rather than not sign
        return Verdict(UNAVAILABLE, "unavailable")
    if not entitled:  # sent unsigned: it fails DMARC at the receiver, as it should
        DKIM_SIGNED.labels("not_entitled").inc()
        # who sent it: the login, or (no AUTH) the user the client's lease names
        lease_user = s.client.lease_user if s.client is not None else ""
        log.warning("not signed: the sender may not sign for the From: domain",
                    extra={"client_ip": s.ip, "auth_user": s.auth_user,
                           "lease_user": lease_user, "from_domain": domain_of(address),
                           "key_domain": keys[0].domain})
        return ACCEPT
    decoder, body = s.tx.decoder, s.tx.body
    measured = decoder is not None and decoder.longest <= MAX_LINE and not body.edited
    if not measured and has_long_line(message):
        DKIM_SIGNED.labels("long_line").inc()
        return Verdict(LINE_TOO_LONG_TO_SIGN, "long_line")
    s.tx.sign_with = keys
    return ACCEPT
