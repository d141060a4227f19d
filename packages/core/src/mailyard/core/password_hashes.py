"""The password hashes a mailbox may hold, and the one way every service checks them.

New passwords are argon2id with the platform's parameters (ARGON2_*). A mailbox may also
hold a hash brought from another system as it was: an argon2id/argon2i PHC string, or a
crypt(3) hash from vpopmail's vpasswd or /etc/shadow: DES (13 characters), MD5-crypt
`$1$`, SHA-256-crypt `$5$`, SHA-512-crypt `$6$`, bcrypt `$2a$`/`$2b$`/`$2y$`/`$2x$`. Such a hash
is checked with the same algorithm (libxcrypt) and replaced by the platform's argon2id
hash at the first successful login (`needs_upgrade`), as is an argon2id hash made with
other parameters, when the login's password is all the legacy scheme read (`reads_all`).

Parameters (RFC 9106 / OWASP's "m=19 MiB, t=2, p=1" line), for a 2-core host serving
bursts of logins: one hash uses one core (p=1) and 19 MiB, so the relay-auth pool (one
worker per core) holds under 40 MiB of hash memory whatever the number of logins waiting.
The relay-auth README gives the measured cost.

`scheme()` is the parser of hostile input here (an operator's or an import's hash string):
it accepts only the exact formats below, since libcrypt reads almost anything as *some*
setting ("bad$" is a DES salt "ba").
"""

from __future__ import annotations

import hmac
import re

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from mailyard.core import libcrypt

ARGON2_TIME_COST = 2
ARGON2_MEMORY_KIB = 19456
ARGON2_PARALLELISM = 1
HASHER = PasswordHasher(time_cost=ARGON2_TIME_COST, memory_cost=ARGON2_MEMORY_KIB,
                        parallelism=ARGON2_PARALLELISM, type=Type.ID)

# An imported argon2 hash costs its own parameters at every check until it is replaced:
# refuse the ones that would let one login take a core or a GiB.
MAX_ARGON2_MEMORY_KIB = 262144
MAX_ARGON2_TIME_COST = 16
MAX_ARGON2_PARALLELISM = 16
# The same for crypt(3), each a few seconds of a core (measured on the 2-core host: 0.3 us
# per SHA-512-crypt round, 60 ms for bcrypt cost 10): the formats allow 999,999,999 rounds
# and cost 31 (34 hours), and a wrong password is checked at full cost every time.
MAX_SHA_CRYPT_ROUNDS = 10_000_000
MAX_BCRYPT_COST = 16

_B64 = r"[./0-9A-Za-z]"
_PHC_B64 = r"[A-Za-z0-9+/]"
_FORMATS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("argon2", re.compile(rf"\$argon2(id|i)\$v=19\$m=\d{{1,10}},t=\d{{1,10}},p=\d{{1,3}}"
                          rf"\${_PHC_B64}{{11,}}\${_PHC_B64}{{6,}}")),
    ("des", re.compile(rf"{_B64}{{13}}")),
    ("md5-crypt", re.compile(rf"\$1\${_B64}{{0,8}}\${_B64}{{22}}")),
    ("sha256-crypt", re.compile(rf"\$5\$(rounds=(\d{{4,9}})\$)?{_B64}{{0,16}}\${_B64}{{43}}")),
    ("sha512-crypt", re.compile(rf"\$6\$(rounds=(\d{{4,9}})\$)?{_B64}{{0,16}}\${_B64}{{86}}")),
    # $2x$: made by crypt_blowfish before 1.1 (2011), which sign-extended octets past 0x7F;
    # its fix had hosts rename such $2a$ hashes $2x$ so that they keep working, and
    # libxcrypt checks them the old way, as Dovecot does (see reads_all)
    ("bcrypt", re.compile(rf"\$2[abxy]\$(\d\d)\${_B64}{{53}}")),
)
SCHEMES = ("argon2id", "argon2i", "des", "md5-crypt", "sha256-crypt", "sha512-crypt", "bcrypt")


class HashError(ValueError):
    """Not a password hash Mailyard can check; the message says why."""


def scheme(stored: str) -> str:
    """The scheme of a stored hash (one of SCHEMES), or HashError."""
    if not stored:
        raise HashError("empty password hash")
    if len(stored) > 512 or not stored.isascii():
        raise HashError("not a password hash (too long or not ASCII)")
    for name, pattern in _FORMATS:
        m = pattern.fullmatch(stored)
        if m is None:
            continue
        if name == "argon2":
            return _argon2(stored, m.group(1))
        if name == "bcrypt" and not 4 <= int(m.group(1)) <= MAX_BCRYPT_COST:
            raise HashError(f"bcrypt cost out of range (4..{MAX_BCRYPT_COST})")
        rounds = m.group(2) if name.startswith("sha") else None
        if rounds is not None and not 1000 <= int(rounds) <= MAX_SHA_CRYPT_ROUNDS:
            raise HashError(f"{name} rounds out of range (1000..{MAX_SHA_CRYPT_ROUNDS})")
        if rounds is not None and rounds.startswith("0"):
            # libxcrypt refuses the setting (glibc read the number and wrote it without the
            # zero), so no password would ever match a hash stored as it is
            raise HashError(f"{name} rounds with a leading zero (no password can match)")
        return name
    raise HashError("not a supported password hash (argon2id PHC, or crypt(3): DES, "
                    "$1$, $5$, $6$, $2a$/$2b$/$2y$/$2x$)")


def _argon2(stored: str, variant: str) -> str:
    try:
        params = extract_parameters(stored)
    except InvalidHashError:
        raise HashError("malformed argon2 hash") from None
    if not (1 <= params.time_cost <= MAX_ARGON2_TIME_COST
            and 1 <= params.parallelism <= MAX_ARGON2_PARALLELISM
            and 8 * params.parallelism <= params.memory_cost <= MAX_ARGON2_MEMORY_KIB):
        raise HashError(f"argon2 parameters out of range (t<={MAX_ARGON2_TIME_COST}, "
                        f"8*p<=m<={MAX_ARGON2_MEMORY_KIB} KiB, p<={MAX_ARGON2_PARALLELISM})")
    return "argon2" + variant


def validate(stored: str) -> str:
    """`stored` itself when it is a hash Mailyard can check, else HashError."""
    scheme(stored)
    return stored


def octets(password: str) -> bytes:
    """The octets a password is: its UTF-8, or, for a password a client sent in another
    encoding (smtp-ingress and the login bridge decode those with surrogateescape), the
    octets it was sent as. Every hash is made and checked of these, so a password typed as
    text keeps its UTF-8 hash, and an ISO-8859-1 one still matches the crypt(3) hash the old
    host made of its bytes. UnicodeEncodeError for other lone surrogates."""
    return password.encode("utf-8", "surrogateescape")


def hash_password(password: str) -> str:
    """The platform's argon2id hash (CPU-heavy: call it from a worker thread)."""
    return HASHER.hash(octets(password))


def verify(stored: str, password: str) -> bool:
    """Does `password` match `stored`? False for a malformed or unsupported hash."""
    try:
        kind = scheme(stored)
        data = octets(password)
    except (HashError, UnicodeEncodeError):
        return False
    if kind.startswith("argon2"):
        try:
            return bool(HASHER.verify(stored, data))
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
    computed = libcrypt.crypt(data, stored)
    return computed is not None and hmac.compare_digest(computed, stored)


def is_platform(stored: str) -> bool:
    """Is `stored` the platform's own argon2id (what one check of an unknown user costs)?"""
    try:
        kind = scheme(stored)
    except HashError:
        return False
    return kind == "argon2id" and not HASHER.check_needs_rehash(stored)


def needs_upgrade(stored: str) -> bool:
    """Should a login that matched `stored` replace it with the platform's hash?"""
    try:
        kind = scheme(stored)
    except HashError:
        return False
    return kind != "argon2id" or HASHER.check_needs_rehash(stored)


# What crypt(3) reads of a password (libxcrypt, as glibc on the old host): traditional DES
# the low 7 bits of the first 8 bytes (a shorter password is padded with NULs, so a hash of
# 7 bytes or fewer read it all), bcrypt the first 72 bytes including the terminating NUL
# (71 bytes read it all); `$2x$` the same of ASCII, but an octet past 0x7F overwrites the
# three before it (the bug), so "\xa3" matches a hash of "\xff\xff\xa3": such a hash stays
# as the old host had it. MD5- and SHA-crypt read every byte; argon2 too. A NUL never gets
# this far: libcrypt.crypt refuses it, so such a password matches no crypt(3) hash.
_DES_READS = 7
_BCRYPT_READS = 71


def reads_all(stored: str, password: str) -> bool:
    """Did the scheme of `stored` read every bit of `password`? Only then may a login that
    matched replace `stored` with a hash of `password`: a DES hash of "secret12" also
    matches "secret12XYZ" (and "é" matches "C)"), and cannot tell which of them the user
    set; a hash of the one a login sent would refuse the others from then on. (An ASCII
    password is taken as read in full even though an 8-bit one may share its 7 bits: no
    client sends the stripped form of the password its user set.)"""
    try:
        kind = scheme(stored)
        data = octets(password)  # what the scheme was given: an 8-bit password's own octets
    except (HashError, UnicodeEncodeError):
        return False
    if kind == "des":
        return len(data) <= _DES_READS and data.isascii()
    if kind == "bcrypt":
        return len(data) <= _BCRYPT_READS and (data.isascii() or not stored.startswith("$2x$"))
    return True
