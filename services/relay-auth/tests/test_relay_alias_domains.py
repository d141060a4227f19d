"""SMTP AUTH as joe@alias.test (an alias domain of example.org) is joe@example.org's login,
as with vpopmail: the same password, the same user answered (Dovecot's, the lease's), and
the same failure count, whichever domain's name a guesser tries."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import bus
from mailyard.core.directory import domain_key

USER, PASSWORD = "alice@example.org", "correct horse battery staple"
ATTACKER = "203.0.113.66"


def login(user: str, password: str, ip: str = "192.0.2.10") -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(mechanism="PLAIN", username=user, password=password,
                                  client_ip=ip)


async def _alias_domains(js: Any, *names: str) -> None:
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(domain_key("example.org"), dpb.Domain(name="example.org").SerializeToString())
    for name in names:
        await kv.put(domain_key(name),
                     dpb.Domain(name=name, alias_of="example.org").SerializeToString())


async def test_an_alias_domain_login_is_the_real_mailboxs(start_relay: Any, js: Any,
                                                           seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD, cram=True)
    await _alias_domains(js, "alias.test")
    relay = await start_relay()
    ok = await relay.stub.Authenticate(login("Alice@Alias.TEST", PASSWORD))
    assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, USER)
    bad = await relay.stub.Authenticate(login("alice@alias.test", "wrong"))
    assert bad.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    nobody = await relay.stub.Authenticate(login("bob@alias.test", PASSWORD))
    assert nobody.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    challenge = await relay.stub.CramChallenge(pb.CramChallengeRequest(hostname="mx"))
    digest = hmac.new(PASSWORD.encode(), challenge.challenge.encode(), hashlib.md5)
    cram = await relay.stub.CramVerify(pb.CramVerifyRequest(
        challenge_id=challenge.challenge_id, username="alice@alias.test",
        digest=digest.hexdigest(), client_ip="192.0.2.10"))
    assert (cram.result, cram.user) == (pb.AUTH_RESULT_OK, USER)


async def test_guessing_through_alias_domains_meets_the_mailboxs_one_limit(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD)
    await _alias_domains(js, "a.test", "b.test", "c.test")
    relay = await start_relay(auth_fail_limit_pair=3, auth_fail_limit_user=100,
                              auth_fail_limit_ip=100)
    for name in ("a.test", "b.test", "c.test"):  # one guess per name: three for alice
        reply = await relay.stub.Authenticate(login(f"alice@{name}", "guess", ATTACKER))
        assert reply.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    for user in (USER, "alice@a.test", "alice@example.org"):
        blocked = await relay.stub.Authenticate(login(user, PASSWORD, ATTACKER))
        assert blocked.result == pb.AUTH_RESULT_THROTTLED, user
    ok = await relay.stub.Authenticate(login("alice@b.test", PASSWORD, "198.51.100.7"))
    assert (ok.result, ok.user) == (pb.AUTH_RESULT_OK, USER)


async def test_a_lease_may_name_a_mailbox_by_its_alias_domain_address(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    """`lease grant IP --user joe@alias.test` was NOT_FOUND although joe@alias.test logs in;
    the lease names the mailbox, as a login's lease does."""
    await seed_mailbox(js, USER, PASSWORD)
    await _alias_domains(js, "alias.test")
    relay = await start_relay()
    lease = await relay.stub.GrantLease(pb.GrantLeaseRequest(ip="192.0.2.70",
                                                             user="Alice@Alias.test"))
    assert lease.user == USER
    check = await relay.stub.CheckClient(pb.CheckClientRequest(ip="192.0.2.70"))
    assert check.allow_relay and check.lease_user == USER
