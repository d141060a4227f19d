"""DKIM verification (RFC 6376, RFC 8463) of incoming mail with dkimpy's asyncio support;
the key records come through our resolver (authdns). At most MAX_SIGNATURES signatures
are checked, so a message stuffed with signatures costs a bounded number of lookups, and
only signature fields dkimpy checks in bounded time (checkable)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

import dkim
import dkim.asyncsupport
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mailyard.core import (  # noqa: F401  (installed into dkimpy when imported)
    dkim_canon,
    dkim_parse,
)
from mailyard.smtp_ingress.authdns import AuthDns, TempError

log = logging.getLogger(__name__)
MAX_SIGNATURES = 5
# dkimpy checks a signature's b= and h= values, and cuts b= out of its field before hashing,
# with patterns that scan a run of white space again from each of its octets: 40,000
# spaces in b= held the event loop 6 s before any key lookup, 40,000 octets of folding
# after it 9 s (in ARC's threads as well: a regular expression keeps the GIL). Signers
# fold with a CRLF and a tab or a few spaces; a field with a run longer than MAX_RUN, or
# longer than MAX_FIELD, is not given to dkimpy, which keeps those scans to milliseconds.
MAX_RUN = 64
MAX_FIELD = 16384
_LONG_RUN = re.compile(rb"\s{%d}" % (MAX_RUN + 1))

# dkimpy checks RSA signatures in Python: pow() and its byte-by-byte int2str/str2int, about
# 0.55 ms of CPU per 2048-bit signature on the event loop (0.04 ms in OpenSSL; measured
# while bench.sender_auth showed mail from new sender domains at a third of the baseline
# rate). dkimpy keeps canonicalisation, the header hash and the key's checks; only the final
# RSASSA-PKCS1-v1_5 step goes to OpenSSL, as for our own signatures (dkim_sign). RFC 8017
# 8.2.2: a signature that is not as long as the modulus is invalid; a shorter one (leading
# zero octets dropped) is padded, as dkimpy's str2int reads it. Keys under MIN_OPENSSL_BITS,
# hashes other than SHA-256 and numbers OpenSSL refuses keep dkimpy's code and its errors.
_PURE_PYTHON_VERIFY = dkim.RSASSA_PKCS1_v1_5_verify
MIN_OPENSSL_BITS = 1024
# Key records parsed once, not at every message (dkimpy decodes the base64 and walks the
# ASN.1 in Python, ~3 % of the busy time on mail from outside): keyed by the key's name and
# the record's text, so a changed record is simply another entry; a record dkimpy refuses
# raises again each time. OpenSSL's key objects likewise, by exponent and modulus.
KEY_CACHE = 4096


@lru_cache(maxsize=KEY_CACHE)
def _openssl_key(exponent: int, modulus: int) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(exponent, modulus).public_key()


dkim.evaluate_pk = lru_cache(maxsize=KEY_CACHE)(dkim.evaluate_pk)


def _openssl_verify(digest: dkim.HashThrough, signature: bytes,
                    public_key: dict[str, int]) -> bool:
    modulus, exponent = public_key["modulus"], public_key["publicExponent"]
    if digest.name != "sha256" or modulus.bit_length() < MIN_OPENSSL_BITS:
        return bool(_PURE_PYTHON_VERIFY(digest, signature, public_key))
    try:
        key = _openssl_key(exponent, modulus)
    except ValueError:
        return bool(_PURE_PYTHON_VERIFY(digest, signature, public_key))
    size = (modulus.bit_length() + 7) // 8
    try:
        key.verify(signature.rjust(size, b"\0"), digest.digest(), padding.PKCS1v15(),
                   Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


dkim.RSASSA_PKCS1_v1_5_verify = _openssl_verify


@dataclass(frozen=True)
class DkimResult:
    result: str        # pass | fail | neutral | temperror | permerror
    domain: str = ""   # d=
    selector: str = ""  # s=
    b: str = ""        # the first 8 characters of b= (RFC 6008), to tell signatures apart


def checkable(value: bytes) -> bool:
    """Whether dkimpy may be given this signature field (see MAX_RUN)."""
    return len(value) <= MAX_FIELD and not _LONG_RUN.search(value)


def ascii_text(value: object) -> str:
    """A dkimpy field (bytes, or None when absent) as text."""
    return value.decode("ascii", "replace") if isinstance(value, bytes) else ""


async def verify(message: bytes, resolver: AuthDns) -> list[DkimResult]:
    """One result per DKIM-Signature (topmost first); [] when the message has none."""
    try:
        verifier = dkim.asyncsupport.DKIM(message, minkey=1024, timeout=resolver.timeout)
    except dkim.DKIMException:
        return [DkimResult("permerror")]
    fields = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    for idx, field in enumerate(fields[:MAX_SIGNATURES]):
        if not checkable(field):
            results.append(DkimResult("permerror"))
            continue
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
        b = "".join(ascii_text(verifier.signature_fields.get(b"b")).split())[:8]
        results.append(DkimResult(result, ascii_text(verifier.domain).lower(),
                                  ascii_text(verifier.selector), b))
    return results
