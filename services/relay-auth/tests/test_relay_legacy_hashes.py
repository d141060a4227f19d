"""Hashes brought from a qmail + vpopmail host (crypt(3): DES, $1$, $5$, $6$, bcrypt) and
argon2id hashes with other parameters log in over PLAIN/LOGIN, and the first successful
login replaces them with the platform's argon2id through the real directory service."""

from __future__ import annotations

from typing import Any

import pytest
from argon2 import PasswordHasher

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import password_hashes

OLD = "old pass 1"
HASHES = {
    "des": "xyEh67oWezXc6",
    "md5-crypt": "$1$vpop$ajlltFrlq56XIsFxRqI3M0",
    "sha256-crypt": "$5$vpopmail$vvgGtHxY4uVtS0nWjOKABsnBG0j/nMybQh6k2bR6r27",
    "sha512-crypt": "$6$vpopmail$n4/pvnWmKWZH0lXl6xUJKQvtZt.CuhJgQ3EkYzCcwCk78mrIl96zsx3Hz0"
                    "29Dd8Lvftc.tDRCX9MEwpAhHHLU/",
    "bcrypt": "$2y$05$abcdefghijklmnopqrstuulVPrWkMVFW.Yf6.oevgz5SLvM7Mz/xS",
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
        wrong = await relay.stub.Authenticate(login("PLAIN", user, "not it at all"))
        assert wrong.result == pb.AUTH_RESULT_BAD_CREDENTIALS, kind
        assert directory.view.mailbox(user).password_hash == stored  # a failure changes nothing
        ok = await relay.stub.Authenticate(login("LOGIN" if kind == "des" else "PLAIN",
                                                 user, OLD))
        assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, user), kind

        async def upgraded(user: str = user, stored: str = stored) -> str:
            box = directory.view.mailbox(user)
            return box.password_hash if box.password_hash != stored else ""

        new = await eventually(upgraded)
        assert password_hashes.scheme(new) == "argon2id" and not password_hashes.needs_upgrade(new)
        assert password_hashes.verify(new, OLD)
        again = await relay.stub.Authenticate(login("PLAIN", user, OLD))
        assert again.result == pb.AUTH_RESULT_OK, kind
        still = await relay.stub.Authenticate(login("PLAIN", user, "not it at all"))
        assert still.result == pb.AUTH_RESULT_BAD_CREDENTIALS, kind

