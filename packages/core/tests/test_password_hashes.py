# ruff: noqa: S105  (fixed test passwords)
"""Password hashes: every supported scheme checks against vectors made by other tools
(OpenSSL's `passwd`, OpenBSD's bcrypt test vectors), malformed hashes are refused, and the
parser survives hostile input."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from hypothesis import given, settings
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
    # rounds with a leading zero: libxcrypt refuses the setting (glibc read 5000 and wrote
    # "rounds=5000"), so no password could ever match; it was stored all the same
    "$6$rounds=05000$vpopmail$" + "a" * 86,
    "$5$rounds=0001000$vpopmail$" + "a" * 43,
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


# $2x$: crypt_blowfish before 1.1 (2011) sign-extended octets past 0x7F, so "\xff\xff\xa3"
# and "\xa3" make one hash; its fix told hosts to rename such $2a$ hashes $2x$ to keep
# them working. The first is crypt_blowfish's own test vector, the second libxcrypt's.
BCRYPT_2X_8BIT = "$2x$05$/OK.fbVrR/bpIqNJ5ianF.CE5elHaaO4EbggVDjb8P19RukzXSM3e"
BCRYPT_2X_ASCII = "$2x$05$/OK.fbVrR/bpIqNJ5ianF.gKRT/33uSp/5nsjXQyeItpMwPZHQxa2"


def test_a_2x_bcrypt_hash_is_checked_as_the_old_host_did() -> None:
    """A $2x$ hash (pre-2011 crypt_blowfish, vpopmail on an old glibc+Openwall host) was
    refused as "not a supported password hash": the import dropped the user and a hash
    set through the API was refused, while the old host and Dovecot (libxcrypt) accept
    it. It is checked as the old host did; it is upgraded like any legacy hash, except
    after an 8-bit password, since the bug lets another 8-bit password match it too."""
    latin1 = "\xff\xff\xa3".encode("latin-1").decode("utf-8", "surrogateescape")
    assert ph.scheme(BCRYPT_2X_8BIT) == "bcrypt" and ph.validate(BCRYPT_2X_8BIT)
    assert ph.verify(BCRYPT_2X_8BIT, latin1)
    alias = "\xa3".encode("latin-1").decode("utf-8", "surrogateescape")
    assert ph.verify(BCRYPT_2X_8BIT, alias)  # the bug: a password it never was matches
    assert not ph.reads_all(BCRYPT_2X_8BIT, latin1) and not ph.reads_all(BCRYPT_2X_8BIT, alias)
    assert not ph.verify(BCRYPT_2X_8BIT, "\xff\xff\xa3")  # its UTF-8 is other octets
    assert ph.verify(BCRYPT_2X_ASCII, "abc") and not ph.verify(BCRYPT_2X_ASCII, "abd")
    assert ph.needs_upgrade(BCRYPT_2X_ASCII) and ph.reads_all(BCRYPT_2X_ASCII, "abc")
    # an ASCII password reads as in $2a$: the same hash but for the prefix
    assert ph.verify("$2a$" + BCRYPT_2X_ASCII[4:], "abc")


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


def test_reads_all_knows_what_each_scheme_truncates() -> None:
    from mailyard.core import libcrypt
    des = libcrypt.crypt(b"secret12", "ab")
    assert des is not None and ph.verify(des, "secret12XYZ")  # DES reads 8 characters
    assert not ph.reads_all(des, "secret12XYZ") and not ph.reads_all(des, "secret12")
    short = libcrypt.crypt(b"C)pass", "ab")
    assert short is not None and ph.verify(short, "\u00e9pass")  # and 7 bits of each
    assert ph.reads_all(short, "C)pass") and not ph.reads_all(short, "\u00e9pass")
    bcrypt = libcrypt.crypt(b"b" * 72, "$2b$05$abcdefghijklmnopqrstuu")
    assert bcrypt is not None and ph.verify(bcrypt, "b" * 80)  # bcrypt reads 72 bytes
    assert not ph.reads_all(bcrypt, "b" * 72) and ph.reads_all(bcrypt, "b" * 71)
    assert not ph.reads_all(bcrypt, "\u00e9" * 36) and ph.reads_all(bcrypt, "\u00e9" * 35)
    for kind in ("md5-crypt", "sha256-crypt", "sha512-crypt"):
        assert ph.reads_all(LEGACY[kind], "x" * 500 + "\u00e9"), kind
    other = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=2).hash(PASSWORD)
    assert ph.reads_all(other, "x" * 1000)
    assert not ph.reads_all("bad$", PASSWORD)


@settings(deadline=2000, max_examples=60)
@given(st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), min_size=1,
               max_size=12),
       st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=4),
       st.sampled_from(["ab", "$2b$04$abcdefghijklmnopqrstuu", "$2x$04$abcdefghijklmnopqrstuu",
                        "$1$salt$"]))
def test_a_password_read_in_full_is_the_only_one_that_matches(
        base: str, tail: str, setting: str) -> None:
    """Whatever password q matches a hash of p (p itself, p with more after it),
    reads_all(hash, q) only when q is p: an upgrade never picks another one. (p's 7-bit
    alias, "C)" for "é", is read in full as itself: no client sends the stripped form of
    the password its user set; test_reads_all_knows_what_each_scheme_truncates.)"""
    from mailyard.core import libcrypt
    if setting.startswith("$2"):
        base = base * 8  # around bcrypt's 72 bytes
    stored = libcrypt.crypt(base.encode(), setting)
    assert stored is not None
    for q in {base, base + tail}:
        if ph.verify(stored, q) and ph.reads_all(stored, q):
            assert q == base, (stored, q)
