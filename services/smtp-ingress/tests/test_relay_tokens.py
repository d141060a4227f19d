"""The relay-check stream (CheckClients) against the real relay-auth process with a token
table, as `mailyard up` runs them: the ingress's token goes with the stream too (it once
went with unary calls only, and every ingress logged an UNAUTHENTICATED stream at start
and fell back to unary calls), and a stream without the right token is still refused."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ingress_helpers import MakeIngress, wait_for

from mailyard.api.relayauth.v1.relayauth_pb2_grpc import RelayAuthStub
from mailyard.core import auth
from mailyard.core.natsserver import NatsServer
from mailyard.smtp_ingress.relay import RelayAuthClient
from mailyard.testing import grpc_service

RELAY_LOG = "mailyard.smtp_ingress.relay"


@pytest.fixture
def guarded_relay_auth(nats_server: NatsServer,
                       tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The real relay-auth enforcing a token table: (gRPC address, role -> token, table).
    Asked for before make_ingress, so it stops after the ingress: relay-auth's graceful stop
    waits out its 5 s grace for a relay stream an ingress still holds open."""
    table = tmp_path / "tokens"
    tokens = auth.write_table(table)
    proc, address = grpc_service("mailyard.relay_auth", "RELAYAUTH", nats_server.url,
                                 tmp_path / "logs", tokens_file=str(table))
    proc.start()
    yield address, tokens, table
    proc.stop()


async def test_ingress_relay_stream_is_accepted_at_start(
        guarded_relay_auth: tuple[str, dict[str, str], Path], make_ingress: MakeIngress,
        caplog: pytest.LogCaptureFixture) -> None:
    address, _, table = guarded_relay_auth
    caplog.set_level(logging.WARNING, logger=RELAY_LOG)
    # No tcp.smtp in control: at start the ingress asks relay-auth (over the stream) whether
    # its default rules are ours, the first check of every ingress under `mailyard up`.
    ingress = await make_ingress(relay_auth_addr=address, relay_auth_timeout=10.0,
                                 token_file=table)  # the ingress reads its own line
    relay = ingress.relay
    await wait_for(lambda: ingress.relay_view.default_confirmed, timeout=60)
    assert (relay.streams_opened, relay.unary_checks) == (1, 0)
    assert relay.stream_checks >= 1
    stream = relay._stream
    assert stream is not None and stream.opened and not stream.closed  # and stays open
    checks = relay.stream_checks
    answer = await relay._check_remote("192.0.2.1")  # what a connection asks of relay-auth
    assert answer is not None and answer.rule_version
    assert (relay.streams_opened, relay.stream_checks, relay.unary_checks) == (1, checks + 1, 0)
    assert relay._stream is stream and not stream.closed
    logged = [r.getMessage() for r in caplog.records if r.name == RELAY_LOG]
    assert not [m for m in logged if "UNAUTHENTICATED" in m or "stream ended" in m], logged


async def test_relay_stream_without_the_right_token_is_refused(
        guarded_relay_auth: tuple[str, dict[str, str], Path],
        caplog: pytest.LogCaptureFixture) -> None:
    address, tokens, _ = guarded_relay_auth
    caplog.set_level(logging.WARNING, logger=RELAY_LOG)
    wrong = "not-a-known-token-but-long-enough-to-look-real-000"
    cases = ((None, grpc.StatusCode.UNAUTHENTICATED),
             (wrong, grpc.StatusCode.UNAUTHENTICATED),
             (tokens["bridge"], grpc.StatusCode.PERMISSION_DENIED))  # a role without it
    for token, code in cases:
        # the stream itself, over real gRPC: ended by relay-auth before any answer
        channel = auth.aio_channel(address, token)
        call = RelayAuthStub(channel).CheckClients()
        assert await call.code() == code, token
        await channel.close()
        # the ingress's client: the check fails closed (no relaying), never open
        caplog.clear()
        client = RelayAuthClient(address, 10.0, token=token)
        try:
            assert await client.check_client("127.0.0.1") is None
            assert (client.stream_checks, client.streams_opened) == (0, 1)
        finally:
            await client.close()
        logged = [r.getMessage() for r in caplog.records if r.name == RELAY_LOG]
        assert f"relay-auth CheckClients stream ended: {code.name} " \
               "(1 checks waiting, unary fallback)" in logged, logged
        assert f"relay-auth CheckClient failed: {code.name}" in logged, logged
    # the right token on the same server: answered over the stream
    client = RelayAuthClient(address, 10.0, token=tokens["ingress"])
    try:
        answer = await client.check_client("127.0.0.1")
        assert answer is not None and answer.allow_connect
        assert (client.stream_checks, client.unary_checks) == (1, 0)
    finally:
        await client.close()
