"""Issue 21, 20 logins at once: a correct login verified moments ago is not checked again,
identical checks running at once are one check, and none of it lets an old password, a
removed mailbox or a throttled address in."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import REGISTRY

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.relay_auth.login_cache import LoginCache

USER, PASSWORD = "alice@example.org", "correct horse battery staple"
HASH_A, HASH_B = "$argon2id$...a", "$argon2id$...b"  # stand-ins: the cache never parses them


def cache_count(result: str) -> float:
    return REGISTRY.get_sample_value("mailyard_relay_auth_cache_total", {"result": result}) or 0


class Checks:
    """The verification the cache wraps: answers `right` and counts how often it ran."""

    def __init__(self, right: dict[tuple[str, str], bool] | None = None) -> None:
        self.right = right if right is not None else {(HASH_A, PASSWORD): True}
        self.runs = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def __call__(self, stored: str, password: str) -> Any:
        async def check() -> bool:
            self.runs += 1
            await self.gate.wait()
            return self.right.get((stored, password), False)
        return check


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_verified_login_is_remembered_for_its_ttl_only() -> None:
    clock, checks = Clock(), Checks()
    cache = LoginCache(ttl=60, size=100, clock=clock)
    assert await cache.verify(USER, HASH_A, PASSWORD, checks(HASH_A, PASSWORD)) == (True, False)
    assert await cache.verify(USER, HASH_A, PASSWORD, checks(HASH_A, PASSWORD)) == (True, True)
    assert checks.runs == 1
    clock.now += 61
    assert await cache.verify(USER, HASH_A, PASSWORD, checks(HASH_A, PASSWORD)) == (True, False)
    assert checks.runs == 2


async def test_wrong_passwords_and_new_hashes_are_never_answered_from_memory() -> None:
    checks = Checks()
    cache = LoginCache(ttl=60, size=100, clock=Clock())
    await cache.verify(USER, HASH_A, PASSWORD, checks(HASH_A, PASSWORD))
    for _ in range(3):  # each wrong guess costs its own check
        assert await cache.verify(USER, HASH_A, "guess", checks(HASH_A, "guess")) == (False,
                                                                                      False)
    assert checks.runs == 4
    # the password changed: the stored hash is another one, the old password is checked
    # against it (and fails) although it was verified a moment ago
    assert await cache.verify(USER, HASH_B, PASSWORD, checks(HASH_B, PASSWORD)) == (False,
                                                                                    False)
    assert await cache.verify("bob@example.org", HASH_A, PASSWORD,
                              checks(HASH_A, PASSWORD)) == (True, False)  # another user
    assert checks.runs == 6


async def test_checks_of_the_same_login_at_once_run_once() -> None:
    checks = Checks()
    checks.gate.clear()
    cache = LoginCache(ttl=0, size=100, clock=Clock())  # sharing works with the cache off
    logins = [asyncio.ensure_future(cache.verify(USER, HASH_A, PASSWORD,
                                                 checks(HASH_A, PASSWORD))) for _ in range(5)]
    guesses = [asyncio.ensure_future(cache.verify(USER, HASH_A, "guess",
                                                  checks(HASH_A, "guess"))) for _ in range(5)]
    await asyncio.sleep(0)
    logins[0].cancel()  # the first client left: the others still get the answer
    checks.gate.set()
    assert [await f for f in logins[1:]] == [(True, True)] * 4
    assert logins[0].cancelled()
    assert [await f for f in guesses] == [(False, False)] + [(False, True)] * 4
    assert checks.runs == 2
    assert len(cache) == 0  # TTL 0: nothing kept


async def test_the_oldest_entries_go_first_when_full() -> None:
    clock, checks = Clock(), Checks({(HASH_A, f"pw{i}"): True for i in range(4)})
    cache = LoginCache(ttl=60, size=2, clock=clock)
    for i in range(4):
        clock.now += 1
        await cache.verify(USER, HASH_A, f"pw{i}", checks(HASH_A, f"pw{i}"))
    assert len(cache) == 2
    assert (await cache.verify(USER, HASH_A, "pw3", checks(HASH_A, "pw3")))[1] is True
    assert (await cache.verify(USER, HASH_A, "pw0", checks(HASH_A, "pw0")))[1] is False


async def test_a_busy_pool_reaches_every_waiting_login() -> None:
    class Boom(Exception):
        pass

    async def check() -> bool:
        await asyncio.sleep(0)
        raise Boom

    cache = LoginCache(ttl=60, size=10, clock=Clock())
    results = await asyncio.gather(*(cache.verify(USER, HASH_A, PASSWORD, check)
                                     for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, Boom) for r in results)
    assert len(cache) == 0


# -- the real service over gRPC ------------------------------------------------------------

def login(password: str, ip: str = "192.0.2.10", user: str = USER) -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(mechanism="PLAIN", username=user, password=password,
                                  client_ip=ip, protocol="imap")


async def test_new_password_counts_at_once_despite_the_cache(start_relay: Any, js: Any,
                                                             seed_mailbox: Any,
                                                             eventually: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay()
    hits = cache_count("hit")
    for _ in range(3):
        ok = await relay.stub.Authenticate(login(PASSWORD))
        assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, USER)
        assert ok.lease.ip == "192.0.2.10"  # a remembered login still refreshes the lease
    assert cache_count("hit") - hits == 2

    await seed_mailbox(js, USER, "the new one")  # what `mailyard user passwd` writes

    async def new_works() -> bool:
        reply = await relay.stub.Authenticate(login("the new one"))
        return reply.result == pb.AUTH_RESULT_OK
    await eventually(new_works)
    old = await relay.stub.Authenticate(login(PASSWORD))
    assert old.result == pb.AUTH_RESULT_BAD_CREDENTIALS and not old.HasField("lease")


async def test_removed_mailbox_and_throttled_address_are_not_let_in_by_the_cache(
        start_relay: Any, js: Any, seed_mailbox: Any, eventually: Any) -> None:
    from mailyard.core import bus
    from mailyard.core.directory import record_key

    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_pair=3, auth_fail_limit_ip=100)
    guesser = "203.0.113.5"
    assert (await relay.stub.Authenticate(login(PASSWORD, guesser))).result == pb.AUTH_RESULT_OK
    for _ in range(3):
        await relay.stub.Authenticate(login("guess", guesser))
    # the right, remembered password from the address that guessed: still throttled
    blocked = await relay.stub.Authenticate(login(PASSWORD, guesser))
    assert blocked.result == pb.AUTH_RESULT_THROTTLED

    assert (await relay.stub.Authenticate(login(PASSWORD))).result == pb.AUTH_RESULT_OK
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.delete(record_key("mailbox", USER))  # `mailyard user del`

    async def gone() -> bool:
        reply = await relay.stub.Authenticate(login(PASSWORD, "198.51.100.9"))
        return reply.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    await eventually(gone)
    assert (await relay.stub.Authenticate(login(PASSWORD))).result != pb.AUTH_RESULT_OK


async def test_one_client_opening_many_connections_costs_one_check(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    clients = 8
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay()
    misses = cache_count("miss")
    replies = await asyncio.gather(*(relay.stub.Authenticate(login(PASSWORD))
                                     for _ in range(clients)))
    assert all(r.result == pb.AUTH_RESULT_OK for r in replies)
    assert cache_count("miss") - misses == 1  # the rest shared that check or hit its result
