# ruff: noqa: S106  (fixed test passwords)
"""No user enumeration by the work a login costs: an unknown user, a known user with a
wrong password and a known user with a legacy (cheaper) hash each cost one check with the
platform's argon2id parameters, and bursts of identical guesses cost the same for all.
Counted (mailyard_relay_auth_hash_checks_total), never timed."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import libcrypt

SCHEMES = ("argon2id", "argon2i", "des", "md5-crypt", "sha256-crypt", "sha512-crypt",
           "bcrypt", "invalid")


def checks() -> dict[str, float]:
    return {s: REGISTRY.get_sample_value("mailyard_relay_auth_hash_checks_total",
                                         {"scheme": s}) or 0.0 for s in SCHEMES}


def delta(before: dict[str, float]) -> dict[str, float]:
    return {s: n - before[s] for s, n in checks().items() if n != before[s]}


def login(user: str, password: str) -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(mechanism="PLAIN", username=user, password=password,
                                  client_ip="192.0.2.10")


async def test_every_wrong_login_costs_one_platform_check(start_directory: Any,
                                                          start_relay: Any) -> None:
    directory = await start_directory()
    await directory.stub.AddDomain(dpb.AddDomainRequest(name="example.org"))
    await directory.stub.AddMailbox(dpb.AddMailboxRequest(
        address="new@example.org", password="a platform hash"))  # the platform's argon2id
    await directory.stub.AddMailbox(dpb.AddMailboxRequest(
        address="old@example.org", password_hash=libcrypt.crypt(b"vpop1", "ab")))
    await directory.stub.AddMailbox(dpb.AddMailboxRequest(
        address="md5@example.org", password_hash="$1$vpop$ajlltFrlq56XIsFxRqI3M0"))
    relay = await start_relay(directory_addr=directory.address, auth_fail_limit_ip=100)
    expected = {"nobody@example.org": {"argon2id": 1},
                "new@example.org": {"argon2id": 1},
                "old@example.org": {"des": 1, "argon2id": 1},
                "md5@example.org": {"md5-crypt": 1, "argon2id": 1}}
    for user, work in expected.items():
        before = checks()
        reply = await relay.stub.Authenticate(login(user, "a wrong guess"))
        assert reply.result == pb.AUTH_RESULT_BAD_CREDENTIALS, user
        assert delta(before) == work, user
    # a right password is not padded: only its owner learns how long it took
    before = checks()
    assert (await relay.stub.Authenticate(login("old@example.org", "vpop1"))).result \
        == pb.AUTH_RESULT_OK
    assert delta(before) == {"des": 1}


async def test_a_burst_of_one_guess_costs_the_same_for_unknown_and_known_users(
        start_directory: Any, start_relay: Any) -> None:
    """Identical checks at once share one check for a known user (login_cache); an unknown
    user's ran one each, so a burst filled the pool (RESOURCE_EXHAUSTED) only for names
    that do not exist."""
    directory = await start_directory()
    await directory.stub.AddDomain(dpb.AddDomainRequest(name="example.org"))
    await directory.stub.AddMailbox(dpb.AddMailboxRequest(
        address="new@example.org", password="a platform hash"))
    relay = await start_relay(directory_addr=directory.address, auth_fail_limit_ip=100,
                              auth_fail_limit_pair=100)
    for user in ("new@example.org", "nobody@example.org"):
        before = checks()
        replies = await asyncio.gather(*(relay.stub.Authenticate(login(user, "one guess"))
                                         for _ in range(8)))
        assert all(r.result == pb.AUTH_RESULT_BAD_CREDENTIALS for r in replies), user
        assert delta(before) == {"argon2id": 1}, user


def test_the_dummy_check_has_the_platform_parameters() -> None:
    """What an unknown user costs is one argon2id check with the platform's parameters,
    the same as a known user's wrong password (the counts above cannot tell parameters)."""
    from mailyard.core import password_hashes
    from mailyard.core.directory import DirectoryView
    from mailyard.relay_auth.auth import Authenticator
    from mailyard.relay_auth.pool import PasswordPool
    from mailyard.relay_auth.throttle import Throttle

    pool = PasswordPool(1, 0)
    try:
        auth = Authenticator(DirectoryView(), Throttle(10, 5, 900), 300, pool, None)
        assert password_hashes.is_platform(auth._dummy_hash)
        assert not password_hashes.needs_upgrade(auth._dummy_hash)
    finally:
        pool.close()
