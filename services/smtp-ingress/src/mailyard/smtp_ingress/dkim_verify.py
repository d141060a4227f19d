"""DKIM verification (RFC 6376, RFC 8463) of incoming mail with dkimpy's asyncio support;
the key records come through our resolver (authdns). At most MAX_SIGNATURES signatures
are checked, so a message stuffed with signatures costs a bounded number of lookups."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import dkim
import dkim.asyncsupport

from mailyard.smtp_ingress.authdns import AuthDns, TempError

log = logging.getLogger(__name__)
MAX_SIGNATURES = 5


@dataclass(frozen=True)
class DkimResult:
    result: str        # pass | fail | neutral | temperror | permerror
    domain: str = ""   # d=
    selector: str = ""  # s=
    b: str = ""        # the first 8 characters of b= (RFC 6008), to tell signatures apart


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else ""


async def verify(message: bytes, resolver: AuthDns) -> list[DkimResult]:
    """One result per DKIM-Signature (topmost first); [] when the message has none."""
    try:
        verifier = dkim.asyncsupport.DKIM(message, minkey=1024, timeout=resolver.timeout)
    except dkim.DKIMException:
        return [DkimResult("permerror")]
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    results = []
    for idx in range(min(count, MAX_SIGNATURES)):
        verifier.domain = verifier.selector = None
        verifier.signature_fields = {}
        try:
            ok = await verifier.verify(idx=idx, dnsfunc=resolver.dkim_key)
            result = "pass" if ok else "fail"
        except TempError:
            result = "temperror"
        except dkim.ValidationError as exc:
            # a well-formed signature that does not match (body hash): fail; one whose
            # fields are broken (d= not even read): permerror
            log.debug("dkim signature %d: %s", idx, exc)
            result = "fail" if verifier.domain else "permerror"
        except dkim.DKIMException as exc:   # no key, a bad key, a malformed message
            log.debug("dkim signature %d: %s", idx, exc)
            result = "permerror"
        b = "".join(_text(verifier.signature_fields.get(b"b")).split())[:8]
        results.append(DkimResult(result, _text(verifier.domain).lower(),
                                  _text(verifier.selector), b))
    return results
