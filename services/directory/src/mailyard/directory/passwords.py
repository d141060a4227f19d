"""Password hashing (the platform's argon2id, mailyard.core.password_hashes), hashes
brought from elsewhere (validated, stored as they are) and the opt-in CRAM-MD5 secret.

Hashing costs tens of milliseconds of CPU on purpose, so it runs in a worker thread and the
event loop keeps serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio

from mailyard.core import password_hashes
from mailyard.directory.errors import invalid

MAX_LENGTH = 1024  # longer "passwords" are a denial-of-service attempt on the hasher


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
    return await asyncio.to_thread(password_hashes.hash_password, password)


def existing_hash(stored: str) -> str:
    """A hash given instead of a password: stored as it is when Mailyard can check it."""
    try:
        return password_hashes.validate(stored.strip())
    except password_hashes.HashError as exc:
        raise invalid(f"password_hash refused: {exc}") from None


async def requested_hash(password: str, stored: str, cram: bool, min_length: int) -> str:
    """The hash to store for a request holding either `password` or `stored`."""
    if password and stored:
        raise invalid("give a password or a password_hash, not both")
    if stored:
        if cram:
            raise invalid("CRAM-MD5 needs the password itself, not a password_hash")
        return existing_hash(stored)
    check(password, min_length)
    return await hash_password(password)


def upgrade_hash(stored: str) -> str:
    """UpgradePasswordHash's new hash: the platform's own argon2id, nothing else."""
    new = existing_hash(stored)
    if password_hashes.scheme(new) != "argon2id" or password_hashes.needs_upgrade(new):
        raise invalid("new_hash must be argon2id with the platform's parameters")
    return new


def verify(phc: str, password: str) -> bool:
    """For tests and tools; relay-auth verifies logins itself."""
    return password_hashes.verify(phc, password)


def cram_md5_secret(password: str) -> str:
    """CRAM-MD5 needs the shared secret itself: hex of the password's UTF-8 bytes.

    This is plaintext-equivalent, so it is stored only when the operator opts in.
    """
    return password.encode().hex()
