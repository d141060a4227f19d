"""The gRPC servers' bounds (core.limits): calls at once and idle connections, on a real
grpc.aio server on 127.0.0.1 with the health and reflection services every server has."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mailyard.core.grpcserver import GrpcServer

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, GOAWAY = 4, 7


def frame(kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """An HTTP/2 frame on stream 0 (RFC 9113 4.1)."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + bytes(4) + payload


async def goaway(reader: asyncio.StreamReader) -> bytes:
    """The GOAWAY frame's payload (last stream id, error code, debug data), once the server
    sends it; the frames before it are skipped."""
    while True:
        head = await reader.readexactly(9)
        payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
        if head[3] == GOAWAY:
            return payload


async def test_past_max_rpcs_a_call_gets_resource_exhausted() -> None:
    """A flood of calls (here health Watch streams, which never end) was held whole, each
    with its task and buffers; past max_rpcs a call now fails at once."""
    server = GrpcServer("127.0.0.1", 0, [], max_rpcs=4)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watches = [health.Watch(health_pb2.HealthCheckRequest()) for _ in range(4)]
            for watch in watches:
                assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            for watch in watches:
                watch.cancel()
            for _ in range(100):  # until the server has seen them end
                try:
                    await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    break
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError("still refused after the streams ended")
    finally:
        await server.stop(0)


async def test_an_idle_connection_is_closed() -> None:
    """A connection with no call for max_idle gets GOAWAY and is closed (a client channel
    connects again on its next call): idle connections were kept for ever."""
    server = GrpcServer("127.0.0.1", 0, [], max_idle=0.5)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(PREFACE + frame(SETTINGS))
        payload = await asyncio.wait_for(goaway(reader), 10)
        assert payload[8:] == b"connection idle"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await server.stop(0)

