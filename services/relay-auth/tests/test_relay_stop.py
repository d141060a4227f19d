"""A stop ends the open CheckClients streams at once: every smtp-ingress keeps one open for
its life, and the gRPC server's grace would otherwise wait for all of them to its end."""

from __future__ import annotations

import asyncio
import time
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
    started = time.monotonic()
    relay.stop.set()
    await asyncio.wait_for(relay.task, 15)
    took = time.monotonic() - started
    # the server's grace is 5 s: a stop that waits for the stream takes all of it
    assert took < 3.0, f"stop took {took:.1f} s"
    ended = await call.read()
    assert ended is grpc.aio.EOF or call.done()
    assert (await call.code()) in (grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE,
                                   grpc.StatusCode.CANCELLED)
