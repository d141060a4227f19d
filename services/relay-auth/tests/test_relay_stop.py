"""A stop ends the open CheckClients streams at once: every smtp-ingress keeps one open for
its life, and the gRPC server's grace would otherwise wait for all of them to its end."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb


async def test_a_stop_ends_the_open_check_streams_without_waiting_out_the_grace(
        start_relay: Any) -> None:
    relay = await start_relay()
    call = relay.stub.CheckClients()
    await call.write(pb.CheckClientStreamRequest(id=1, check=pb.CheckClientRequest(
        ip="192.0.2.1")))
    reply = await call.read()
    assert reply.id == 1 and not reply.error
    relay.stop.set()
    await asyncio.wait_for(relay.task, 15)
    # ended by the server with OK at the stop; a stream the stop waited for ends when the
    # grace runs out, with the server gone (UNAVAILABLE or CANCELLED), 5 s later
    assert await call.read() is grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
