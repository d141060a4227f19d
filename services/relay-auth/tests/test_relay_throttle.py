"""Issue 14 item 3, lockout as a weapon: wrong passwords throttle the (user, address) pair
and the address, and slow the user down from everywhere, but never lock the right password
out from an address that has not failed. Before, five wrong passwords from anywhere locked
the user out from every address for 15 minutes."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import bus

USER, PASSWORD = "alice@example.org", "correct horse battery staple"


def login(password: str, ip: str, user: str = USER) -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(mechanism="PLAIN", username=user, password=password,
                                  client_ip=ip)


def delayed() -> float:
    return REGISTRY.get_sample_value("mailyard_relay_auth_delayed_total") or 0.0


async def test_a_guessing_address_cannot_lock_the_user_out(start_relay: Any, js: Any,
                                                           seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_pair=3, auth_fail_limit_user=3,
                              auth_fail_limit_ip=100, auth_delay_base=0.05,
                              auth_delay_max=0.1)
    attacker = "203.0.113.66"
    for _ in range(6):
        reply = await relay.stub.Authenticate(login("guess", attacker))
        assert reply.result in (pb.AUTH_RESULT_BAD_CREDENTIALS, pb.AUTH_RESULT_THROTTLED)
    # this address may not try this user any more, even with the right password ...
    blocked = await relay.stub.Authenticate(login(PASSWORD, attacker))
    assert blocked.result == pb.AUTH_RESULT_THROTTLED
    # ... but may try another user, and the user logs in from elsewhere
    other = await relay.stub.Authenticate(login("x", attacker, user="bob@example.org"))
    assert other.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    ok = await relay.stub.Authenticate(login(PASSWORD, "198.51.100.7"))
    assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, USER)
    assert not (await relay.stub.CheckClient(pb.CheckClientRequest(ip=attacker))).auth_throttled


async def test_distributed_guessing_is_slowed_never_refused(start_relay: Any, js: Any,
                                                            seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_pair=3, auth_fail_limit_user=4,
                              auth_fail_limit_ip=100, auth_delay_base=0.05,
                              auth_delay_max=0.2)
    before = delayed()
    for i in range(12):  # a botnet: one guess from each of 12 addresses
        reply = await relay.stub.Authenticate(login(f"guess {i}", f"192.0.2.{i + 1}"))
        assert reply.result == pb.AUTH_RESULT_BAD_CREDENTIALS  # slowed, never THROTTLED
    assert delayed() - before >= 12 - 4  # every check past the limit waited first
    for ip in ("192.0.2.1", "198.51.100.8"):  # a guessing address and a fresh one
        ok = await relay.stub.Authenticate(login(PASSWORD, ip))
        assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, USER), ip


async def test_an_address_failing_for_many_users_is_throttled(start_relay: Any, js: Any,
                                                              seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_ip=3, auth_fail_limit_pair=100)
    ip = "203.0.113.9"
    for i in range(3):
        await relay.stub.Authenticate(login("x", ip, user=f"u{i}@example.org"))
    assert (await relay.stub.Authenticate(login(PASSWORD, ip))).result == \
        pb.AUTH_RESULT_THROTTLED
    assert (await relay.stub.CheckClient(pb.CheckClientRequest(ip=ip))).auth_throttled


async def test_addresses_of_one_ipv6_network_are_one_client(start_relay: Any, js: Any,
                                                            seed_mailbox: Any) -> None:
    """A client on IPv6 holds a /64 at least (one LAN, one customer: 2**64 addresses to take
    a new one from for each guess), so its failures are counted for the /64, as Dovecot's
    auth penalty counts a network and not an address: each new address started afresh, so
    the per-address and per-(user, address) limits held nobody on IPv6."""
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_ip=4, auth_fail_limit_pair=2,
                              auth_fail_limit_user=100)
    for i in range(2):  # guesses at one user from two addresses of one /64
        reply = await relay.stub.Authenticate(login("guess", f"2001:db8:1:2::{i + 1:x}"))
        assert reply.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    pair = await relay.stub.Authenticate(login(PASSWORD, "2001:db8:1:2:ffff::9"))
    assert pair.result == pb.AUTH_RESULT_THROTTLED
    for i in range(2):  # and at other users, from yet other addresses of it
        await relay.stub.Authenticate(login("x", f"2001:db8:1:2::a:{i}", user=f"u{i}@example.org"))
    anyone = await relay.stub.Authenticate(login("x", "2001:db8:1:2::b", user="bob@example.org"))
    assert anyone.result == pb.AUTH_RESULT_THROTTLED
    assert (await relay.stub.CheckClient(pb.CheckClientRequest(ip="2001:db8:1:2::c"))
            ).auth_throttled
    # the next /64 is another client
    assert not (await relay.stub.CheckClient(pb.CheckClientRequest(ip="2001:db8:1:3::c"))
                ).auth_throttled
    ok = await relay.stub.Authenticate(login(PASSWORD, "2001:db8:1:3::1"))
    assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, USER)


async def test_a_name_too_long_for_any_mailbox_is_counted_under_a_short_key(
        start_relay: Any, js: Any, seed_mailbox: Any, caplog: pytest.LogCaptureFixture) -> None:
    """The counters' keys are NATS subjects. A 9,000-character user name (AUTH PLAIN fits it
    in smtp-ingress's 12,288-octet line) made a 12,000-character key, past nats-server's
    max_control_line (4 KiB): nats-server closed relay-auth's connection at every such
    guess (Maximum Control Line Exceeded), failing the calls in flight, and the name and
    (name, address) failures were never counted."""
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_ip=100, auth_fail_limit_pair=100,
                              auth_fail_limit_user=100)
    name = "x" * 9000 + "@example.org"
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            reply = await relay.stub.Authenticate(login("guess", "192.0.2.50", user=name))
            assert reply.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in said if "nats" in m or "not recorded" in m], said
    kv = await js.key_value(bus.KV_AUTH_FAILURES)
    counts = {key: json.loads((await kv.get(key)).value)["n"] for key in await kv.keys()}
    assert sorted(counts.values()) == [3, 3, 3], counts  # address, name, (name, address)
    assert max(len(key) for key in counts) < 200, counts
    ok = await relay.stub.Authenticate(login(PASSWORD, "192.0.2.50"))
    assert ok.result == pb.AUTH_RESULT_OK


async def test_a_longer_window_keeps_failures_for_its_whole_length(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    """The auth_failures bucket forgets a counter after twice AUTH_FAIL_WINDOW, but only
    the window the bucket was made with counted: raised later (0.5 s to 15 min here), the
    bucket still dropped failures after a second, and an address throttled for 15 minutes
    could try again after one (seen by a replica started meanwhile)."""
    import asyncio

    await seed_mailbox(js, USER, PASSWORD)
    first = await start_relay(auth_fail_window=0.5)  # the bucket as it was first made
    first.stop.set()
    await first.task
    relay = await start_relay(auth_fail_window=900, auth_fail_limit_pair=2,
                              auth_fail_limit_ip=100)
    attacker = "203.0.113.77"
    for _ in range(2):
        await relay.stub.Authenticate(login("guess", attacker))
    assert (await relay.stub.Authenticate(login(PASSWORD, attacker))).result \
        == pb.AUTH_RESULT_THROTTLED
    await asyncio.sleep(1.5)  # past the first bucket's TTL (2 x 0.5 s)
    replica = await start_relay(auth_fail_window=900, auth_fail_limit_pair=2,
                                auth_fail_limit_ip=100)
    assert (await replica.stub.Authenticate(login(PASSWORD, attacker))).result \
        == pb.AUTH_RESULT_THROTTLED
