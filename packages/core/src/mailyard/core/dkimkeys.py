"""DKIM keys of our domains, kept in one folder (qmail's control/domainkeys in spirit).

Layout of the folder (DKIM_DIR, default var/dkim; a Kubernetes Secret mounted read-only at
the signer works the same, as every name is flat):

    <selector>._domainkey.<domain>.pem   a private key (PKCS#8 PEM, RSA 2048 or Ed25519), 0600
    signing                              lines "<domain> <selector>": the keys that sign now

A key that exists but is not in `signing` is published-only: its DNS record stays up
while mail signed with it may still be in flight, or before it starts signing (rotation:
keygen S2, publish, activate S2, later retire S1). At most one signing key per domain and
key type, so a domain can sign with an RSA and an Ed25519 key at once (RFC 8463 section 4).

Private keys never leave this folder: the CLI prints public records only.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailyard.core.addresses import to_ascii_domain

SIGNING_FILE = "signing"
SUFFIX = ".pem"
KEY_TYPES = ("ed25519", "rsa")
RSA_BITS = 2048
# RFC 6376 section 3.1: a selector is dot-separated sub-domain labels.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# fullmatch: "$" also matches before a final "\n" ("example.com\n." became a file name)
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


class DkimKeyError(ValueError):
    """A bad domain, selector or key file; the text is for the operator."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    key_type: str            # "rsa" | "ed25519"
    private: bytes           # what dkimpy takes: PEM (RSA) or base64 seed (Ed25519)
    public_record: str       # the TXT record's text
    path: Path

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def algorithm(self) -> bytes:
        return b"ed25519-sha256" if self.key_type == "ed25519" else b"rsa-sha256"


def check_name(kind: str, value: str) -> str:
    value = value.strip().rstrip(".")
    # a domain as the directory stores it and the signer looks it up: the A-label
    value = to_ascii_domain(value) if kind == "domain" else value.lower()
    if len(value) > 253 or not _NAME.fullmatch(value):
        raise DkimKeyError(f"invalid {kind} {value!r}")
    return value


def file_name(domain: str, selector: str) -> str:
    return f"{selector}._domainkey.{domain}{SUFFIX}"


def split_file_name(name: str) -> tuple[str, str] | None:
    """(domain, selector) of a key file name, or None for anything else."""
    if not name.endswith(SUFFIX) or "._domainkey." not in name:
        return None
    selector, _, domain = name[:-len(SUFFIX)].partition("._domainkey.")
    try:
        return check_name("domain", domain), check_name("selector", selector)
    except DkimKeyError:
        return None


def generate(key_type: str) -> bytes:
    """A new private key as PKCS#8 PEM."""
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    elif key_type == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimKeyError(f"unknown key type {key_type!r}; use {' or '.join(KEY_TYPES)}")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_pem(domain: str, selector: str, pem: bytes, path: Path) -> DkimKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise DkimKeyError(f"{path.name}: not a private key ({exc})") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        # RFC 8463 section 4.2: p= is the raw 32-byte public key in base64
        return DkimKey(domain, selector, "ed25519", base64.b64encode(seed),
                       f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}", path)
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise DkimKeyError(f"{path.name}: RSA key of {key.key_size} bits is too small")
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
        legacy = key.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.NoEncryption())
        return DkimKey(domain, selector, "rsa", legacy,
                       f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}", path)
    raise DkimKeyError(f"{path.name}: only RSA and Ed25519 keys can sign DKIM")


def zone_line(key: DkimKey) -> str:
    """The record as a zone-file line; long values split in 255-octet strings (RFC 1035)."""
    text = key.public_record
    parts = " ".join(f'"{text[i:i + 255]}"' for i in range(0, len(text), 255))
    return f"{key.record_name}. IN TXT ( {parts} )" if len(text) > 255 else \
        f"{key.record_name}. IN TXT {parts}"


class KeyDir:
    """The folder: keys and the signing list. Writes are atomic (temp file + rename)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def keys(self) -> tuple[list[DkimKey], list[str]]:
        """Every readable key, and one problem text per unreadable file."""
        out: list[DkimKey] = []
        problems: list[str] = []
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return out, problems
        for name in names:
            parsed = split_file_name(name)
            if parsed is None:
                continue
            path = self.path / name
            try:
                out.append(load_pem(parsed[0], parsed[1], path.read_bytes(), path))
            except (OSError, DkimKeyError) as exc:
                problems.append(str(exc))
        return out, problems

    def signing(self) -> set[tuple[str, str]]:
        try:
            text = (self.path / SIGNING_FILE).read_text()
        except FileNotFoundError:
            return set()
        out = set()
        for line in text.splitlines():
            fields = line.split()
            if len(fields) == 2 and not line.lstrip().startswith("#"):
                out.add((fields[0].lower().rstrip("."), fields[1].lower()))
        return out

    def _write(self, name: str, data: bytes, mode: int) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path / name)

    def _set_signing(self, pairs: set[tuple[str, str]]) -> None:
        text = "".join(f"{d} {s}\n" for d, s in sorted(pairs))
        self._write(SIGNING_FILE, text.encode(), 0o644)

    def find(self, domain: str, selector: str) -> DkimKey:
        path = self.path / file_name(domain, selector)
        try:
            return load_pem(domain, selector, path.read_bytes(), path)
        except FileNotFoundError:
            raise DkimKeyError(f"no key {selector} for {domain}") from None

    def create(self, domain: str, selector: str, key_type: str) -> tuple[DkimKey, bool]:
        """A new key; it signs at once only if the domain has no signing key of its type
        (the first key), else it is published-only until activate(). (key, signs)."""
        domain, selector = check_name("domain", domain), check_name("selector", selector)
        if (self.path / file_name(domain, selector)).exists():
            raise DkimKeyError(f"{domain} already has a key with selector {selector}")
        pem = generate(key_type)
        self._write(file_name(domain, selector), pem, 0o600)
        key = self.find(domain, selector)
        signing = self.signing()
        same_type = {s for d, s in signing if d == domain and self._type(d, s) == key_type}
        if same_type:
            return key, False
        self._set_signing(signing | {(domain, selector)})
        return key, True

    def _type(self, domain: str, selector: str) -> str:
        try:
            return self.find(domain, selector).key_type
        except DkimKeyError:
            return ""

    def activate(self, domain: str, selector: str) -> DkimKey:
        """Sign with this key from now on, in place of the domain's key of the same type."""
        domain, selector = check_name("domain", domain), check_name("selector", selector)
        key = self.find(domain, selector)
        keep = {(d, s) for d, s in self.signing()
                if d != domain or self._type(d, s) != key.key_type}
        self._set_signing(keep | {(domain, selector)})
        return key

    def retire(self, domain: str, selector: str) -> None:
        """Delete a key that no longer signs (remove its DNS record afterwards)."""
        domain, selector = check_name("domain", domain), check_name("selector", selector)
        if (domain, selector) in self.signing():
            raise DkimKeyError(f"{selector} still signs for {domain}; activate another key first")
        path = self.path / file_name(domain, selector)
        try:
            path.unlink()
        except FileNotFoundError:
            raise DkimKeyError(f"no key {selector} for {domain}") from None
