"""Whether SPF or DKIM vouches for a message's envelope sender: the address its bounces go
to. DMARC asks this of the From: domain; a bounce asks it of MAIL FROM's. A sender nobody
vouches for may be forged, and a refusal after our 250 bounced to it is backscatter
(Envelope.sender_unverified: list posts refused after the 250, and the queue's bounces). A
sender is marked only when it is known not to be verified: a DNS timeout, or no SPF check,
leaves it unmarked (a resolver outage must not silence every bounce)."""

from __future__ import annotations

from mailyard.core.addresses import domain_of, to_ascii_domain
from mailyard.smtp_ingress.dkim_verify import DkimResult
from mailyard.smtp_ingress.dmarc_eval import ORG_DOMAINS
from mailyard.smtp_ingress.spf_check import SpfResult


def verified(sender: str, spf: SpfResult | None, dkims: list[DkimResult]) -> bool:
    """SPF passed for MAIL FROM, or a passing signature's d= shares the sender domain's
    organizational domain (DMARC's relaxed alignment, RFC 7489 3.1, applied to the
    envelope sender). The null sender gets no bounce and counts as verified."""
    if not sender:
        return True
    domain = _ascii(domain_of(sender))
    if spf is not None and spf.identity == "mailfrom" and spf.result == "pass" \
            and _ascii(spf.domain) == domain:
        return True
    passed = [_ascii(d.domain) for d in dkims if d.result == "pass" and d.domain]
    if not passed:
        return False
    org = ORG_DOMAINS.get_public_suffix(domain)
    return any(d == domain or ORG_DOMAINS.get_public_suffix(d) == org for d in passed)


def _ascii(domain: str) -> str:
    """A domain as SPF and DKIM name it: lower case A-labels, no trailing dot."""
    domain = domain.lower().rstrip(".")
    try:
        return to_ascii_domain(domain)
    except Exception:  # IDNA refuses it: compared as it is (it then matches nothing else)
        return domain


def unverified(sender: str, spf: SpfResult | None, dkims: list[DkimResult]) -> bool:
    """Known not verified: SPF was checked for MAIL FROM and answered something other than
    pass or temperror, no signature could not be checked for a DNS timeout, and none
    aligned passed (verified)."""
    if spf is None or spf.identity != "mailfrom" or spf.result == "temperror":
        return False
    if any(d.result == "temperror" for d in dkims):
        return False
    return not verified(sender, spf, dkims)
