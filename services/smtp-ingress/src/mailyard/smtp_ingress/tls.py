"""The TLS context for STARTTLS and port 465. Without a configured certificate a
self-signed pair is generated once into TLS_DIR (so `mailyard up` works out of the box)."""

from __future__ import annotations

import datetime
import fcntl
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HANDSHAKE_TIMEOUT = 30.0  # seconds for a client's side of the TLS handshake (STARTTLS, 465)


def self_signed(directory: Path, hostname: str) -> tuple[Path, Path]:
    """The pair in `directory`, made on first use. Replicas starting together share the
    folder: a lock makes exactly one of them write the pair, the others read it."""
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cert_path.exists() and key_path.exists()):
            _write_pair(cert_path, key_path, hostname)
    return cert_path, key_path


def _write_pair(cert_path: Path, key_path: Path, hostname: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname or "localhost")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    tmp = key_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    os.replace(tmp, key_path)
    tmp = cert_path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_path)  # last: its presence means the pair is complete


def server_context(cert: str, key: str, tls_dir: Path, hostname: str) -> ssl.SSLContext:
    if not cert:
        cert_path, key_path = self_signed(tls_dir, hostname)
        cert, key = str(cert_path), str(key_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    # TLS 1.3 sends session tickets after the handshake, two by default. A sending MTA
    # reconnects one connection at a time and needs one to resume; each ticket costs
    # the server about 25 us of CPU (of a ~290 us P-256 handshake, measured), mostly for
    # clients that never come back.
    context.num_tickets = 1
    return context


# OpenSSL's reasons, by what a postmaster can do about them
_PROTOCOL_VERSION = frozenset({"UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW", "WRONG_SSL_VERSION",
                               "TLSV1_ALERT_PROTOCOL_VERSION", "NO_PROTOCOLS_AVAILABLE"})
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST",
                      "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH"})


def handshake_failure(exc: BaseException) -> str:
    """Why a server-side handshake failed, as a label of TLS_FAILURES: a client offering only
    what this context refuses (old protocol versions, no cipher in common: it may then send
    in the clear, or not at all) is worth a look; one that hung up or timed out less so."""
    if isinstance(exc, TimeoutError) or (isinstance(exc, ConnectionAbortedError)
                                         and "taking longer than" in str(exc)):
        return "timeout"  # asyncio and uvloop alike abort a slow handshake with this text
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionError, EOFError)):
        return "closed"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason == "NO_SHARED_CIPHER":
            return "no_shared_cipher"
        if reason in _PROTOCOL_VERSION:
            return "protocol_version"
        if reason in _NOT_TLS:
            return "not_tls"
    return "other"
