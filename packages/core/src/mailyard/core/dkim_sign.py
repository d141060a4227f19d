"""DKIM signing (RFC 6376, Ed25519 per RFC 8463 and RSA), one implementation for the two
places that sign: smtp-ingress signs mail our own users send, once, at the end of DATA,
before the spool commit (after that point nothing in Mailyard changes a message; our
Received: and Authentication-Results: lines go above the signature and are not signed);
remote-delivery signs the mail the platform writes itself (bounces, vacation replies) on
the bytes it sends. A line over 998 octets would be folded on the way out and break the
signature, so mail we sign must not have one (ingress refuses it, remote-delivery leaves
it unsigned).

The key is chosen by the RFC5322.From domain, or its nearest parent with a key (relaxed
DMARC alignment). Every signing key of that domain signs (an RSA and an Ed25519 one at
once during the move to Ed25519). Headers: dkimpy's "should sign" list, with From, To, Cc,
Subject, Date, Message-ID, Reply-To and the MIME headers signed once more than they occur
("oversigned"), so nobody can add a second one later.

The keys come from the key folder (mailyard.core.dkimkeys); a change there (keygen,
activate, retire, a Secret update) is picked up within RELOAD seconds.
"""

from __future__ import annotations

import logging
import os
import time
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mailyard.core import (
    dkim_canon,  # noqa: F401  (installs the fast canonicalisation)
    dkim_parse,  # noqa: F401  (installs the linear header parsing)
    headers,
)
from mailyard.core.addresses import to_ascii_domain
from mailyard.core.dkimkeys import DkimKey, KeyDir

log = logging.getLogger(__name__)

# dkimpy computes RSA signatures with Python's pow(): 11 ms of CPU per 2048-bit signature,
# held on the event loop. dkimpy stays in charge of canonicalisation, the header list and
# the DKIM-Signature field; only the final RSASSA-PKCS1-v1_5 step of our own keys goes to
# OpenSSL (about 1 ms). A key we did not load (none in this process) keeps dkimpy's code.
# The tests verify every signature with dkimpy and with rspamd.
_RSA_KEYS: dict[int, rsa.RSAPrivateKey] = {}
_PURE_PYTHON_SIGN = dkim.RSASSA_PKCS1_v1_5_sign
_HASHES = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


def _openssl_sign(digest: dkim.HashThrough, private_key: dict[str, int]) -> bytes:
    key = _RSA_KEYS.get(private_key["modulus"])
    algorithm = _HASHES.get(digest.name)
    if key is None or algorithm is None:
        return bytes(_PURE_PYTHON_SIGN(digest, private_key))
    return key.sign(digest.digest(), padding.PKCS1v15(), Prehashed(algorithm()))


dkim.RSASSA_PKCS1_v1_5_sign = _openssl_sign

# dkimpy also parses the PEM key (ASN.1, in Python) at every signature: 0.4 ms of an RSA
# signature's ~2 ms (bench.sender_auth, sign-rsa). Our keys are parsed once, when loaded;
# any other PEM still goes through dkimpy's parser.
_PARSED: dict[bytes, dict[str, int]] = {}
_PARSE_PEM = dkim.parse_pem_private_key


def _parsed_pem(data: bytes) -> dict[str, int]:
    return _PARSED.get(data) or dict(_PARSE_PEM(data))


dkim.parse_pem_private_key = _parsed_pem


def _remember_rsa(key: DkimKey) -> None:
    if key.key_type == "rsa":
        loaded = serialization.load_pem_private_key(key.private, password=None)
        assert isinstance(loaded, rsa.RSAPrivateKey)
        _RSA_KEYS[loaded.private_numbers().public_numbers.n] = loaded
        _PARSED[key.private] = dict(_PARSE_PEM(key.private))
RELOAD = 1.0
OVERSIGN = (b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
            b"mime-version", b"content-type", b"content-transfer-encoding")
MAX_LINE = 998


def header_block(message: bytes) -> bytes:
    return headers.split(message)[0]


def from_address(message: bytes) -> str:
    """The one address in From:, as written, or "" (none, several, unparsable, no UTF-8).
    Read raw: the parser keeps a UTF-8 header's bytes as surrogate escapes, and the value
    it hands out has them replaced (U+FFFD), so "jörg@bücher.example" matched no key."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(header_block(message))
    values = [v for k, v in headers.raw_items() if k.lower() == "from"]
    if len(values) != 1:
        return ""
    try:
        addresses = [a for _, a in getaddresses([str(values[0])]) if a]
    except RecursionError:  # it reads nested comments and phrases recursively: "((((..."
        return ""
    except UnicodeError:  # UTF-8 and stray octets mixed: compat32's Header cannot say it
        return ""
    if len(addresses) != 1 or "@" not in addresses[0]:
        return ""
    address = addresses[0]
    if not address.isascii():
        try:
            address = address.encode("ascii", "surrogateescape").decode("utf-8")
        except UnicodeError:
            return ""
    return address


def domain_of(address: str) -> str:
    """The domain of a From: address as keys, logins and DNS name it: the IDNA A-label in
    lower case, no final dot."""
    return to_ascii_domain(address.rpartition("@")[2].rstrip("."))


def from_domain(message: bytes) -> str:
    """The domain of the one address in From:, or "" (none, several, or unparsable)."""
    address = from_address(message)
    return domain_of(address) if address else ""


def has_long_line(message: bytes) -> bool:
    """A line longer than RFC 5322's 998 octets (without CRLF)."""
    if len(message) <= MAX_LINE:
        return False
    start = 0
    while True:
        end = message.find(b"\r\n", start)
        if (end if end >= 0 else len(message)) - start > MAX_LINE:
            return True
        if end < 0:
            return False
        start = end + 2


class Signer:
    def __init__(self, folder: Path | str) -> None:
        self.folder = KeyDir(folder)
        self.by_domain: dict[str, list[DkimKey]] = {}
        self._state: tuple[tuple[str, int, int], ...] = ()
        self._checked = 0.0
        self.reload(force=True)

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        try:
            with os.scandir(self.folder.path) as entries:
                return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                                    for e in entries))
        except OSError:
            return ()

    def reload(self, force: bool = False) -> None:
        """Re-read the folder if it changed (checked at most every RELOAD seconds)."""
        now = time.monotonic()
        if not force and now - self._checked < RELOAD:
            return
        self._checked = now
        state = self._fingerprint()
        if state == self._state and not force:
            return
        self._state = state
        try:
            keys, problems = self.folder.keys()
            signing = self.folder.signing()
        except OSError as exc:
            # Not a folder, or not ours to read: mail goes on with the keys read before, if
            # any, else unsigned (as Postfix's does past an OpenDKIM that cannot start);
            # it never stops for it. Read again when the folder changes.
            log.warning("dkim key folder not read (the keys read before, if any, sign): %s",
                        exc)
            return
        for problem in problems:
            log.warning("dkim key not loaded: %s", problem)  # names a file, never key bytes
        by_domain: dict[str, list[DkimKey]] = {}
        for key in keys:
            if (key.domain, key.selector) in signing:
                by_domain.setdefault(key.domain, []).append(key)
                _remember_rsa(key)
        self.by_domain = by_domain
        log.info("dkim keys loaded", extra={"domains": len(by_domain)})

    def keys_for(self, domain: str) -> list[DkimKey]:
        """The signing keys of the domain or of its nearest parent that has any."""
        self.reload()
        labels = domain.split(".")
        for i in range(len(labels) - 1):
            keys = self.by_domain.get(".".join(labels[i:]))
            if keys:
                return keys
        return []

    def keys_for_message(self, message: bytes) -> list[DkimKey]:
        """The keys that sign this message: those of its From: domain (or a parent)."""
        self.reload()
        if not self.by_domain:  # no key at all: no need to parse the header
            return []
        domain = from_domain(message)
        return self.keys_for(domain) if domain else []


def sign(message: bytes, keys: list[DkimKey]) -> bytes:
    """The DKIM-Signature header lines to put on top of the message, one per key."""
    out = b""
    for key in keys:
        signer = dkim.DKIM(message, linesep=b"\r\n")
        signer.add_frozen(OVERSIGN)
        out += signer.sign(key.selector.encode(), key.domain.encode(), key.private,
                           signature_algorithm=key.algorithm,
                           canonicalize=(b"relaxed", b"relaxed"))
    return out
