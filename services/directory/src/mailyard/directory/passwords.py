"""Password hashing (argon2id, PHC strings) and the opt-in CRAM-MD5 secret.

Hashing costs tens of milliseconds of CPU on purpose, so it runs in a worker thread and the
event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type

from mailyard.directory.errors import invalid

MAX_LENGTH = 1024  # longer "passwords" are a denial-of-service attempt on the hasher

_hasher = PasswordHasher(type=Type.ID)


def check(password: str, min_length: int) -> None:
    if not password:
        raise invalid("a password is required (there is no default password)")
    if len(password) < min_length:
        raise invalid(f"password too short: at least {min_length} characters")
    if len(password) > MAX_LENGTH:
        raise invalid(f"password too long: at most {MAX_LENGTH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise invalid("password must not contain control characters")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


def verify(phc: str, password: str) -> bool:
    """For tests and tools; relay-auth verifies logins itself."""
    try:
        return _hasher.verify(phc, password)
    except Exception:
        return False


def cram_md5_secret(password: str) -> str:
    """CRAM-MD5 needs the shared secret itself: hex of the password's UTF-8 bytes.

    This is plaintext-equivalent, so it is stored only when the operator opts in.
    """
    return password.encode().hex()
