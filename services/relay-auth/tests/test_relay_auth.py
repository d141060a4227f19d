"""SMTP AUTH over gRPC: PLAIN, LOGIN, CRAM-MD5 (single use), and throttling."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from typing import Any

import pytest

from mailyard.api.directory.v1 import directory_pb2 as dpb
from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.core import bus
from mailyard.core.directory import record_key

USER, PASSWORD = "alice@example.org", "correct horse battery staple"


def auth(mech: str, user: str, password: str, ip: str = "192.0.2.10") -> pb.AuthenticateRequest:
    return pb.AuthenticateRequest(mechanism=mech, username=user, password=password,
                                  client_ip=ip)


def cram_digest(challenge: str, password: str) -> str:
    return hmac.new(password.encode(), challenge.encode(), hashlib.md5).hexdigest()


async def test_plain_and_login(start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay()
    for mech in ("PLAIN", "LOGIN", "plain"):
        ok = await relay.stub.Authenticate(auth(mech, "Alice@Example.ORG", PASSWORD))
        assert ok.result == pb.AUTH_RESULT_OK and ok.user == USER
    bad = await relay.stub.Authenticate(auth("PLAIN", USER, "wrong"))
    assert bad.result == pb.AUTH_RESULT_BAD_CREDENTIALS and bad.user == ""
    nobody = await relay.stub.Authenticate(auth("LOGIN", "bob@example.org", PASSWORD))
    assert nobody.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    odd = await relay.stub.Authenticate(auth("XOAUTH2", USER, PASSWORD))
    assert odd.result == pb.AUTH_RESULT_MECHANISM_UNAVAILABLE


async def test_cram_md5_and_replay(start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD, cram=True)
    relay = await start_relay()
    one = await relay.stub.CramChallenge(pb.CramChallengeRequest(client_ip="192.0.2.10",
                                                                 hostname="mx.example.org"))
    two = await relay.stub.CramChallenge(pb.CramChallengeRequest(client_ip="192.0.2.10",
                                                                 hostname="mx.example.org"))
    assert one.challenge != two.challenge and one.challenge_id != two.challenge_id
    assert one.challenge.startswith("<") and one.challenge.endswith("@mx.example.org>")

    answer = pb.CramVerifyRequest(challenge_id=one.challenge_id, username=USER,
                                  digest=cram_digest(one.challenge, PASSWORD),
                                  client_ip="192.0.2.10")
    ok = await relay.stub.CramVerify(answer)
    assert ok.result == pb.AUTH_RESULT_OK and ok.user == USER
    replay = await relay.stub.CramVerify(answer)
    assert replay.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    wrong = await relay.stub.CramVerify(pb.CramVerifyRequest(
        challenge_id=two.challenge_id, username=USER,
        digest=cram_digest(two.challenge, "guess"), client_ip="192.0.2.10"))
    assert wrong.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    # an answer to one challenge does not fit another
    three = await relay.stub.CramChallenge(pb.CramChallengeRequest(hostname="mx"))
    moved = await relay.stub.CramVerify(pb.CramVerifyRequest(
        challenge_id=three.challenge_id, username=USER,
        digest=cram_digest(one.challenge, PASSWORD)))
    assert moved.result == pb.AUTH_RESULT_BAD_CREDENTIALS
    # the digest is what an SMTP client sent (base64 of any UTF-8): not hex is a wrong answer
    four = await relay.stub.CramChallenge(pb.CramChallengeRequest(hostname="mx"))
    odd = await relay.stub.CramVerify(pb.CramVerifyRequest(
        challenge_id=four.challenge_id, username=USER, digest="é" * 32))
    assert odd.result == pb.AUTH_RESULT_BAD_CREDENTIALS


async def test_unanswered_challenges_are_bounded(start_relay: Any, js: Any,
                                                seed_mailbox: Any) -> None:
    """Each AUTH CRAM-MD5 keeps a challenge in KV `cram_challenges` until CRAM_TTL (5
    minutes), answered or not: clients asking in a loop (20 a connection before the error
    limit, then a new connection, from as many addresses as a botnet has) grew the bucket
    without bound. It holds the newest CRAM_MAX_CHALLENGES; a flood pushes out the oldest,
    which a real client has long answered, and the newest still verify."""
    await seed_mailbox(js, USER, PASSWORD, cram=True)
    relay = await start_relay(cram_max_challenges=100)
    asked = [await relay.stub.CramChallenge(pb.CramChallengeRequest(
        client_ip=f"198.51.100.{n % 250}", hostname="mx")) for n in range(300)]
    info = await js.stream_info(f"KV_{bus.KV_CRAM}")
    assert info.state.messages <= 100
    first, last = asked[0], asked[-1]
    for challenge, result in ((first, pb.AUTH_RESULT_BAD_CREDENTIALS),
                              (last, pb.AUTH_RESULT_OK)):
        answer = await relay.stub.CramVerify(pb.CramVerifyRequest(
            challenge_id=challenge.challenge_id, username=USER,
            digest=cram_digest(challenge.challenge, PASSWORD), client_ip="198.51.100.1"))
        assert answer.result == result


async def test_concurrent_answers_to_one_challenge_succeed_once(
        start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD, cram=True)
    relay = await start_relay()
    ch = await relay.stub.CramChallenge(pb.CramChallengeRequest(hostname="mx"))
    answer = pb.CramVerifyRequest(challenge_id=ch.challenge_id, username=USER,
                                  digest=cram_digest(ch.challenge, PASSWORD))
    results = await asyncio.gather(*(relay.stub.CramVerify(answer) for _ in range(5)))
    assert sorted(r.result for r in results).count(pb.AUTH_RESULT_OK) == 1


async def test_cram_md5_needs_the_opt_in(start_relay: Any, js: Any, seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD, cram=False)
    relay = await start_relay()
    ch = await relay.stub.CramChallenge(pb.CramChallengeRequest(hostname="mx"))
    result = await relay.stub.CramVerify(pb.CramVerifyRequest(
        challenge_id=ch.challenge_id, username=USER, digest=cram_digest(ch.challenge, PASSWORD)))
    assert result.result == pb.AUTH_RESULT_MECHANISM_UNAVAILABLE


async def test_ip_throttled_and_flagged_in_check_client(start_relay: Any, js: Any,
                                                       seed_mailbox: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_ip=2, auth_fail_limit_user=100)
    ip = "198.51.100.20"
    assert not (await relay.stub.CheckClient(pb.CheckClientRequest(ip=ip))).auth_throttled
    for user in ("x@example.org", "y@example.org"):
        await relay.stub.Authenticate(auth("LOGIN", user, "nope", ip=ip))
    blocked = await relay.stub.Authenticate(auth("LOGIN", USER, PASSWORD, ip=ip))
    assert blocked.result == pb.AUTH_RESULT_THROTTLED
    assert (await relay.stub.CheckClient(pb.CheckClientRequest(ip=ip))).auth_throttled
    elsewhere = await relay.stub.Authenticate(auth("LOGIN", USER, PASSWORD, ip="198.51.100.21"))
    assert elsewhere.result == pb.AUTH_RESULT_OK


async def test_throttle_window_ends(start_relay: Any, js: Any, seed_mailbox: Any,
                                   eventually: Any) -> None:
    await seed_mailbox(js, USER, PASSWORD)
    relay = await start_relay(auth_fail_limit_user=1, auth_fail_window=0.5)
    await relay.stub.Authenticate(auth("PLAIN", USER, "guess"))

    async def allowed_again() -> bool:
        reply = await relay.stub.Authenticate(auth("PLAIN", USER, PASSWORD, ip="192.0.2.200"))
        return reply.result == pb.AUTH_RESULT_OK

    await eventually(allowed_again)


async def test_a_stored_hash_that_cannot_be_checked_refuses_and_says_why(
        start_relay: Any, js: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A mailbox record whose password_hash is nothing Mailyard can check (written past the
    directory's validation: vpopmail's clear password put there by a script, a scheme from
    elsewhere) fails closed, the right password too, and the log says why: every login was
    a wrong password, with nothing to tell the postmaster the mailbox could never log in."""
    kv = await bus.ensure_kv(js, bus.KV_DIRECTORY)
    await kv.put(record_key("mailbox", USER),
                 dpb.Mailbox(address=USER, password_hash=PASSWORD).SerializeToString())
    relay = await start_relay()
    with caplog.at_level(logging.WARNING, logger="mailyard.relay_auth"):
        reply = await relay.stub.Authenticate(auth("PLAIN", USER, PASSWORD))
    assert reply.result == pb.AUTH_RESULT_BAD_CREDENTIALS and reply.user == ""
    said = [r.getMessage() for r in caplog.records if r.name.startswith("mailyard.relay_auth")]
    assert any(USER in m and "not a supported password hash" in m for m in said), said
    assert not any(PASSWORD in m for m in said)
