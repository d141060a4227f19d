"""A service's channel to another (core.auth.aio_channel) comes back soon after its peer does.

gRPC's default reconnect backoff grows to 120 s, and a call on a channel waiting out its
backoff fails at once (UNAVAILABLE) without trying to connect: after relay-auth was away for
a few minutes (a node drained, a rolling update), logins and relay checks kept failing for
up to two minutes after it was back. Here the peer is a real grpc.aio server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailyard.core import auth
from mailyard.core.grpcserver import GrpcServer

CHECK = health_pb2.HealthCheckRequest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def answered(health: health_pb2_grpc.HealthStub) -> bool:
    try:
        await health.Check(CHECK, timeout=1)
        return True
    except grpc.aio.AioRpcError as exc:
        assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return False


async def test_a_channel_reconnects_within_a_second_or_two_of_its_peer_coming_back() -> None:
    port = free_port()
    async with auth.aio_channel(f"127.0.0.1:{port}", None) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        # The peer is away for 6 s while calls keep failing: the default backoff has
        # grown past 4 s by then (1, 1.6, 2.56, 4.1 s ... each +-20 %).
        away_until = time.monotonic() + 6
        while time.monotonic() < away_until:
            assert not await answered(health)
            await asyncio.sleep(0.2)
        server = GrpcServer("127.0.0.1", port, [])
        await server.start()
        try:
            back = time.monotonic()
            # The default's next attempt comes 2.3-4.9 s after the peer is back; ours
            # within 1.2 s (max_reconnect_backoff 1 s, +20 % jitter).
            while not await answered(health):
                assert time.monotonic() - back < 2.0, "the channel did not reconnect"
                await asyncio.sleep(0.1)
        finally:
            await server.stop()
