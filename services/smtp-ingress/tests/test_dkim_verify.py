"""The RSA step of DKIM verification runs in OpenSSL (dkim_verify._openssl_verify) and our
signing keys are parsed once (dkim_sign._parsed_pem): both must give dkimpy's own answers,
for good signatures, broken ones and the odd cases dkimpy's code keeps."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mailyard.core import dkim_sign
from mailyard.core.dkimkeys import KeyDir
from mailyard.smtp_ingress import dkim_verify

MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.net\r\nSubject: figures\r\n"
           b"Date: Thu, 03 Dec 2026 18:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\n"
           b"a line of body text\r\n" * 3)


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def numbers(key: rsa.RSAPrivateKey) -> dict[str, int]:
    public = key.public_key().public_numbers()
    return {"modulus": public.n, "publicExponent": public.e}


def both(digest: object, signature: bytes, public_key: dict[str, int]) -> bool:
    """OpenSSL's answer, checked against dkimpy's pure-Python one."""
    fast = dkim_verify._openssl_verify(digest.copy(), signature, public_key)  # type: ignore
    slow = dkim_verify._PURE_PYTHON_VERIFY(digest.copy(), signature, public_key)  # type: ignore
    assert fast == slow
    return fast


def test_openssl_and_dkimpy_agree(key: rsa.RSAPrivateKey) -> None:
    digest = hashlib.sha256(b"the signed headers")
    signature = key.sign(b"the signed headers", padding.PKCS1v15(), hashes.SHA256())
    assert both(digest, signature, numbers(key))
    assert not both(digest, bytes([signature[0] ^ 1]) + signature[1:], numbers(key))
    assert not both(hashlib.sha256(b"other headers"), signature, numbers(key))
    assert not both(digest, signature + b"\0", numbers(key))        # longer than the modulus
    assert not both(digest, b"", numbers(key))
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (any other key)
    assert not both(digest, signature, numbers(other))               # someone else's key
    # SHA-1 (a=rsa-sha1) stays with dkimpy, and still verifies
    # (RFC 8301 deprecates it; verifiers still meet it)
    sha1 = key.sign(b"old", padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
    assert dkim_verify._openssl_verify(hashlib.sha1(b"old"), sha1, numbers(key))  # noqa: S324


def test_a_signature_shorter_than_the_modulus_is_read_as_dkimpy_reads_it(
        key: rsa.RSAPrivateKey) -> None:
    # about 1 in 256 signatures starts with a zero octet; a signer that drops it still
    # verifies in dkimpy (str2int), so it does here too
    for i in range(5000):
        data = b"headers %d" % i
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        if signature[0] == 0:
            break
    else:
        pytest.fail("no signature with a leading zero octet in 5000")
    assert both(hashlib.sha256(data), signature[1:], numbers(key))


def test_whole_messages_verify_and_a_change_fails(tmp_path: Path) -> None:
    folder = KeyDir(tmp_path)
    folder.create("example.com", "rsa1", "rsa")
    signer = dkim_sign.Signer(tmp_path)
    keys = signer.keys_for("example.com")
    record = keys[0].public_record.encode()

    def lookup(name: bytes, timeout: float = 5) -> bytes:
        return record
    signed = dkim_sign.sign(MESSAGE, keys) + MESSAGE
    assert dkim.verify(signed, dnsfunc=lookup)
    assert not dkim.verify(signed.replace(b"Subject: figures", b"Subject: Figures!"),
                           dnsfunc=lookup)
    # our key is parsed once; a PEM we never loaded still goes through dkimpy's parser
    assert keys[0].private in dkim_sign._PARSED
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption())
    assert dkim_sign._parsed_pem(stranger)["modulus"] > 0
    assert stranger not in dkim_sign._PARSED
    with pytest.raises(dkim.KeyFormatError):
        dkim.DKIM(MESSAGE).sign(b"s", b"example.com", b"not a key")
