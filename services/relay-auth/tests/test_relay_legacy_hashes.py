"""Hashes brought from a qmail + vpopmail host (crypt(3): DES, $1$, $5$, $6$, bcrypt) and
argon2id hashes with other parameters log in over PLAIN/LOGIN, and the first successful
login replaces them with the platform's argon2id through the real directory service."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import libcrypt, password_hashes

OLD = "old pass 1"
# DES reads 8 characters: a login with the 10 of OLD matches but is not upgraded
# (test_login_with_more_than_the_legacy_hash_read_keeps_the_hash); this is "old pas".
OLD_DES = "old pas"
HASHES = {
    "des": "xyrUd2rj39RF6",
    "md5-crypt": "$1$vpop$ajlltFrlq56XIsFxRqI3M0",
    "sha256-crypt": "$5$vpopmail$vvgGtHxY4uVtS0nWjOKABsnBG0j/nMybQh6k2bR6r27",
    "sha512-crypt": "$6$vpopmail$n4/pvnWmKWZH0lXl6xUJKQvtZt.CuhJgQ3EkYzCcwCk78mrIl96zsx3Hz0"
                    "29Dd8Lvftc.tDRCX9MEwpAhHHLU/",
    "bcrypt": "$2y$05$abcdefghijklmnopqrstuulVPrWkMVFW.Yf6.oevgz5SLvM7Mz/xS",
    # pre-2011 crypt_blowfish's mark, made by libxcrypt as that one made it
    "bcrypt-2x": libcrypt.crypt(OLD.encode(), "$2x$05$abcdefghijklmnopqrstuu") or "",
    # argon2id, but not the platform's parameters (argon2-cffi's old defaults, made cheap)
    "argon2id": PasswordHasher(time_cost=1, memory_cost=8192, parallelism=2).hash(OLD),
}


def login(mech: str, user: str, password: str) -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(mechanism=mech, username=user, password=password,
                                  client_ip="192.0.2.10")


@pytest.fixture
async def platform(start_directory: Any, start_relay: Any) -> tuple[Any, Any]:
    directory = await start_directory()
    await directory.stub.AddDomain(dpb.AddDomainRequest(name="example.org"))
    for kind, stored in HASHES.items():
        await directory.stub.AddMailbox(dpb.AddMailboxRequest(
            address=f"{kind}@example.org", password_hash=stored))
    relay = await start_relay(directory_addr=directory.address, auth_fail_limit_ip=100)
    return directory, relay


async def test_legacy_hashes_log_in_and_are_upgraded(platform: tuple[Any, Any],
                                                     eventually: Any) -> None:
    directory, relay = platform
    for kind, stored in HASHES.items():
        user = f"{kind}@example.org"
        old = OLD_DES if kind == "des" else OLD
        wrong = await relay.stub.Authenticate(login("PLAIN", user, "not it at all"))
        assert wrong.result == pb.AUTH_RESULT_BAD_CREDENTIALS, kind
        assert directory.view.mailbox(user).password_hash == stored  # a failure changes nothing
        ok = await relay.stub.Authenticate(login("LOGIN" if kind == "des" else "PLAIN",
                                                 user, old))
        assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, user), kind

        async def upgraded(user: str = user, stored: str = stored) -> str:
            box = directory.view.mailbox(user)
            return box.password_hash if box.password_hash != stored else ""

        new = await eventually(upgraded)
        assert password_hashes.scheme(new) == "argon2id" and not password_hashes.needs_upgrade(new)
        assert password_hashes.verify(new, old)
        again = await relay.stub.Authenticate(login("PLAIN", user, old))
        assert again.result == pb.AUTH_RESULT_OK, kind
        still = await relay.stub.Authenticate(login("PLAIN", user, "not it at all"))
        assert still.result == pb.AUTH_RESULT_BAD_CREDENTIALS, kind



def _rehashes(result: str) -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("mailyard_relay_auth_rehash_total",
                                     {"result": result}) or 0.0


async def test_login_with_more_than_the_legacy_hash_read_keeps_the_hash(
        start_directory: Any, start_relay: Any, eventually: Any) -> None:
    """DES reads the low 7 bits of the first 8 bytes, bcrypt the first 72 bytes: a longer
    (or 8-bit) password that matches must not become the only accepted one, or the password
    the user set (and their other clients send) stops working."""
    from mailyard.core import libcrypt
    real = {"des8@example.org": "secret12", "des-alias@example.org": "C)pass",
            "bcrypt72@example.org": "b" * 72}
    sent = {"des8@example.org": "secret12XYZ", "des-alias@example.org": "\u00e9pass",
            "bcrypt72@example.org": "b" * 72 + "tail"}
    settings = {"des8@example.org": "ab", "des-alias@example.org": "cd",
                "bcrypt72@example.org": "$2b$05$abcdefghijklmnopqrstuu"}
    directory = await start_directory()
    await directory.stub.AddDomain(dpb.AddDomainRequest(name="example.org"))
    stored = {}
    for user, password in real.items():
        stored[user] = libcrypt.crypt(password.encode(), settings[user])
        assert stored[user] is not None
        await directory.stub.AddMailbox(dpb.AddMailboxRequest(address=user,
                                                              password_hash=stored[user]))
    relay = await start_relay(directory_addr=directory.address, auth_fail_limit_ip=100)
    for user, password_set in real.items():
        before = sum(map(_rehashes, ("upgraded", "superseded", "failed", "kept")))
        ok = await relay.stub.Authenticate(login("PLAIN", user, sent[user]))
        assert ok.result == pb.AUTH_RESULT_OK, user  # it matched on the old host too

        async def decided(before: float = before) -> bool:
            return sum(map(_rehashes, ("upgraded", "superseded", "failed", "kept"))) > before

        await eventually(decided)
        assert directory.view.mailbox(user).password_hash == stored[user], user
        # the password the user set last: "C)pass" is read in full and upgraded, after
        # which its 8-bit alias no longer matches (no client sends one for the other)
        for password in (sent[user], password_set):
            again = await relay.stub.Authenticate(login("PLAIN", user, password))
            assert again.result == pb.AUTH_RESULT_OK, (user, password)


async def test_login_with_what_the_legacy_hash_read_is_upgraded(
        start_directory: Any, start_relay: Any, eventually: Any) -> None:
    """The password a DES hash read in full (ASCII, under 8 bytes: the hash shows it ended
    there) or a bcrypt hash did (under 72 bytes) is upgraded as before."""
    from mailyard.core import libcrypt
    real = {"des7@example.org": ("secret1", "ab"),
            "bcrypt71@example.org": ("b" * 71, "$2b$05$abcdefghijklmnopqrstuu")}
    directory = await start_directory()
    await directory.stub.AddDomain(dpb.AddDomainRequest(name="example.org"))
    for user, (password, setting) in real.items():
        await directory.stub.AddMailbox(dpb.AddMailboxRequest(
            address=user, password_hash=libcrypt.crypt(password.encode(), setting)))
    relay = await start_relay(directory_addr=directory.address, auth_fail_limit_ip=100)
    for user, (password, _setting) in real.items():
        ok = await relay.stub.Authenticate(login("PLAIN", user, password))
        assert ok.result == pb.AUTH_RESULT_OK, user

        async def upgraded(user: str = user) -> bool:
            return password_hashes.scheme(directory.view.mailbox(user).password_hash) \
                == "argon2id"

        await eventually(upgraded)
        assert password_hashes.verify(directory.view.mailbox(user).password_hash, password)


async def test_an_8bit_password_matches_the_crypt_hash_of_its_octets(
        start_directory: Any, start_relay: Any, eventually: Any) -> None:
    """A qmail user whose client sends its password in ISO-8859-1 ("pässwort" as the one
    octet 0xE4) matched the crypt(3) hash on the old host, which read bytes: the octets
    reach the same check here (password_octets) and match it, and the argon2id hash the
    login upgrades to is of the same octets, so the same client keeps working and the
    password's UTF-8 form (which the old hash never matched) still fails. The platform's
    argon2id hash of a password set as text never matches such octets."""
    from mailyard.core import libcrypt

    text = "p\u00e4sswort"
    latin1 = text.encode("latin-1")
    old = libcrypt.crypt(latin1, "$1$vpop$")
    assert old is not None
    directory = await start_directory()
    await directory.stub.AddDomain(dpb.AddDomainRequest(name="example.org"))
    await directory.stub.AddMailbox(dpb.AddMailboxRequest(address="latin@example.org",
                                                          password_hash=old))
    await directory.stub.AddMailbox(dpb.AddMailboxRequest(address="utf8@example.org",
                                                          password=text))
    relay = await start_relay(directory_addr=directory.address, auth_fail_limit_ip=100)

    def octets(user: str, data: bytes) -> pb.AuthenticateRequest:
        return pb.AuthenticateRequest(mechanism="PLAIN", username=user, password_octets=data,
                                      client_ip="192.0.2.10")

    text = await relay.stub.Authenticate(login("PLAIN", "latin@example.org", "p\u00e4sswort"))
    assert text.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    ok = await relay.stub.Authenticate(octets("latin@example.org", latin1))
    assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, "latin@example.org")

    async def upgraded() -> str:
        box = directory.view.mailbox("latin@example.org")
        return box.password_hash if box.password_hash != old else ""

    new = await eventually(upgraded)
    assert password_hashes.scheme(new) == "argon2id"
    again = await relay.stub.Authenticate(octets("latin@example.org", latin1))
    assert again.result == pb.AUTH_RESULT_OK
    text = await relay.stub.Authenticate(login("PLAIN", "latin@example.org", "p\u00e4sswort"))
    assert text.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    for data in (latin1, b"\xff\xfe", b"p\xe4sswort\xc3"):
        refused = await relay.stub.Authenticate(octets("utf8@example.org", data))
        assert refused.result == pb.AUTH_RESULT_BAD_CREDENTIALS, data
    fine = await relay.stub.Authenticate(login("PLAIN", "utf8@example.org", "p\u00e4sswort"))
    assert fine.result == pb.AUTH_RESULT_OK
