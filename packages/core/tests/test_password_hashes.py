# ruff: noqa: S105  (fixed test passwords)
"""Password hashes: every supported scheme checks against vectors made by other tools
(OpenSSL's `passwd`, OpenBSD's bcrypt test vectors), malformed hashes are refused, and the
parser survives hostile input."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from mailyard.core import password_hashes as ph

PASSWORD = "old pass 1"
# openssl passwd -1/-5/-6 -salt ..., crypt(3) DES, and bcrypt (same password)
LEGACY = {
    "des": "xyEh67oWezXc6",
    "md5-crypt": "$1$vpop$ajlltFrlq56XIsFxRqI3M0",
    "sha256-crypt": "$5$vpopmail$vvgGtHxY4uVtS0nWjOKABsnBG0j/nMybQh6k2bR6r27",
    "sha512-crypt": "$6$vpopmail$n4/pvnWmKWZH0lXl6xUJKQvtZt.CuhJgQ3EkYzCcwCk78mrIl96zsx3Hz0"
                    "29Dd8Lvftc.tDRCX9MEwpAhHHLU/",
    "bcrypt": "$2y$05$abcdefghijklmnopqrstuulVPrWkMVFW.Yf6.oevgz5SLvM7Mz/xS",
}
MALFORMED = [
    "", "secret", "bad$", "*", "!", "x" * 600,
    "$1$vpop$ajlltFrlq56XIsFxRqI3M",                    # hash one character short
    "$1$toolongsalt$ajlltFrlq56XIsFxRqI3M0",            # MD5 salt > 8
    "$6$rounds=10$vpopmail$" + "a" * 86,                 # rounds below 1000
    "$6$vpopmail$" + "a" * 85,
    "$2y$03$" + "a" * 53,                                # bcrypt cost below 4
    "$2x$05$" + "a" * 52,
    # accepted, and one check took a core for minutes or hours (a guess per worker stopped
    # every login): 999,999,999 rounds of SHA-512-crypt at 0.3 us each, bcrypt's 2**31
    "$6$rounds=999999999$vpopmail$" + "a" * 86,
    "$5$rounds=20000000$vpopmail$" + "a" * 43,
    "$2b$31$" + "a" * 53,
    "$2y$17$" + "a" * 53,
    "$argon2id$v=19$m=9999999,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",  # 9.5 GiB
    "$argon2id$v=19$m=19456,t=2,p=1$!!!$aGFzaGhhc2hoYXNo",
    "$argon2d$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA",
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA\n",
    "xyEh67oWezXc\u00e9",
]


@pytest.mark.parametrize("kind", sorted(LEGACY))
def test_legacy_hashes_verify_and_ask_for_an_upgrade(kind: str) -> None:
    stored = LEGACY[kind]
    assert ph.scheme(stored) == kind
    assert ph.verify(stored, PASSWORD)
    assert not ph.verify(stored, "old pass 2" if kind != "des" else "other")
    assert ph.needs_upgrade(stored)


def test_bcrypt_reference_vector() -> None:
    # from OpenBSD's bcrypt test vectors
    assert ph.verify("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U")


def test_argon2_platform_and_foreign_parameters() -> None:
    mine = ph.hash_password(PASSWORD)
    assert ph.scheme(mine) == "argon2id" and ph.verify(mine, PASSWORD)
    assert f"m={ph.ARGON2_MEMORY_KIB},t={ph.ARGON2_TIME_COST},p={ph.ARGON2_PARALLELISM}" in mine
    assert not ph.needs_upgrade(mine)
    other = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=2).hash(PASSWORD)
    assert ph.verify(other, PASSWORD) and ph.needs_upgrade(other)
    assert not ph.verify(other, "wrong")


@pytest.mark.parametrize("stored", MALFORMED)
def test_malformed_hashes_are_refused(stored: str) -> None:
    with pytest.raises(ph.HashError):
        ph.scheme(stored)
    assert not ph.verify(stored, PASSWORD)
    assert not ph.needs_upgrade(stored)


def test_a_nul_in_the_password_never_matches() -> None:
    assert not ph.verify(LEGACY["md5-crypt"], PASSWORD + "\0")


@given(st.text(max_size=200))
def test_scheme_only_raises_hash_error(text: str) -> None:
    try:
        kind = ph.scheme(text)
    except ph.HashError:
        return
    assert kind in ph.SCHEMES


@given(st.from_regex(r"\$(1|5|6|2y|argon2id)\$[ -~]{0,120}", fullmatch=True))
def test_hash_like_garbage_is_refused_or_checkable(text: str) -> None:
    try:
        ph.scheme(text)
    except ph.HashError:
        return
    assert ph.verify(text, PASSWORD) in (True, False)
