"""DKIM signatures on the mail the platform writes itself: bounces and double bounces (the
queue's, From: MAILER-DAEMON@<me>) and vacation replies (local-delivery's, From: the
mailbox). They never pass smtp-ingress's signer, and their envelope sender is <>, so SPF
cannot align: unsigned, they fail DMARC wherever the From: domain says p=reject. qmail with
qmail-dkim and Postfix with OpenDKIM sign them on the way out, as here.

Only those origins. SMTP mail was signed at ingress if it could be, and only for those who
may sign for its From: domain; a forward's or list mail's From: is whoever wrote it,
possibly forged, and our signature would vouch for it.

Signed once per delivery attempt, on the bytes DATA sends (CRLF everywhere, before the
dot-stuffing the receiver undoes): what the receiver verifies. The keys, the header list
and the canonicalisation are smtp-ingress's (mailyard.core.dkim_sign): the keys of the
From: domain or of its nearest parent with keys. A vacation reply's From: is a mailbox,
so a hosted domain, a customer of its own even under another's domain: as smtp-ingress
does not sign that mailbox's mail with a parent's keys (dkim_rights), its reply is signed
with its own domain's keys only. A line over 998 octets is folded on the way out, which
would break the signature: such a message goes unsigned and is counted; a signature is
never a reason to hold mail back.
"""

from __future__ import annotations

import logging

from mailyard.api.mail.v1.envelope_pb2 import (
    ORIGIN_AUTOREPLY,
    ORIGIN_BOUNCE,
    ORIGIN_DOUBLE_BOUNCE,
    Origin,
)
from mailyard.core.dkim_sign import Signer, domain_of, from_address, sign
from mailyard.remote_delivery.linelength import fold
from mailyard.remote_delivery.metrics import DKIM_RESULTS, DKIM_SIGNED
from mailyard.remote_delivery.wire import Wire, normalise, stuffed

log = logging.getLogger(__name__)

SIGNED_ORIGINS = frozenset({ORIGIN_BOUNCE, ORIGIN_DOUBLE_BOUNCE, ORIGIN_AUTOREPLY})
_COUNT = {result: DKIM_SIGNED.labels(result) for result in DKIM_RESULTS}


class EgressSigner:
    def __init__(self, folder: str) -> None:
        self.signer = Signer(folder)

    def wire(self, data: bytes, queue_id: str, origin: Origin.ValueType) -> Wire:
        """The spooled message `data` (of one of SIGNED_ORIGINS) as it goes out, signed
        when it can be."""
        message = normalise(data)
        folded = fold(message)
        if folded is not message:  # fold() returns the message itself when nothing is long
            _COUNT["long_line"].inc()
            return Wire(len(folded), stuffed(folded))
        try:
            signer = self.signer
            signer.reload()
            address = from_address(message) if signer.by_domain else ""
            domain = domain_of(address) if address else ""
            keys = signer.keys_for(domain) if domain else []
            if keys and origin == ORIGIN_AUTOREPLY and keys[0].domain != domain:
                _COUNT["not_entitled"].inc()  # a parent's keys: another customer's name
                return Wire(len(message), stuffed(message))
            signature = sign(message, keys) if keys else b""
        except Exception:  # a dkimpy bug must not hold the mail: it goes unsigned
            log.exception("dkim signing failed", extra={"queue_id": queue_id})
            _COUNT["error"].inc()
            return Wire(len(message), stuffed(message))
        _COUNT["signed" if signature else "no_key"].inc()
        message = signature + message
        return Wire(len(message), stuffed(message))
