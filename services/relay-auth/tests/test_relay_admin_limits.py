"""The admin plane's bounds (mailyard.core.limits) as a real service takes them from its
settings: MAILYARD_<SERVICE>_HTTP_MAX_CONNECTIONS, _ADMIN_MAX_BODY, ... (the module's
constants were all a service had)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import grpc

from mailyard.api.relayauth.v1 import relayauth_pb2 as pb
from mailyard.api.relayauth.v1 import relayauth_pb2_grpc as rpc


def _answer(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += sock.recv(65536)
        return int(head.split()[1]), json.loads(body)


async def test_a_service_takes_its_admin_limits_from_its_settings(
        nats_server: Any, relay_process: Any) -> None:
    big = 8 << 20
    proc, address = relay_process(nats_server.url, http_max_connections="10",
                                  admin_max_body=str(big))
    proc.start()
    port = proc.http_port
    # a body past the 4 MiB default, within the operator's 8 MiB: read, then judged
    # (422: it is no tcp.smtp), not refused for its size; past 8 MiB a 413 naming 8 MiB
    rules = json.dumps({"text": "#" * (5 << 20)}).encode()
    status, answer = await asyncio.to_thread(
        _answer, port, b"PUT /api/rules HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                       b"\r\nContent-Length: %d\r\n\r\n%s" % (len(rules), rules))
    assert status != 413, answer
    status, answer = await asyncio.to_thread(
        _answer, port, b"PUT /api/rules HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                       b"\r\nContent-Length: %d\r\n\r\n" % (big + 1))
    assert status == 413 and str(big) in answer["detail"]
    # gRPC takes the same body size: a 5 MiB ImportRules is read (and judged)
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await rpc.RelayAuthStub(channel).ImportRules(
                pb.ImportRulesRequest(text="#" * (5 << 20)), timeout=20)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED, exc.details()
    # 10 connections at once, not 100
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
    try:
        deadline = time.monotonic() + 10
        while (status := (await asyncio.to_thread(
                _answer, port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"))[0]) != 503:
            assert time.monotonic() < deadline, "no 503 with 10 connections open"
            await asyncio.sleep(0.05)
    finally:
        for sock in idle:
            sock.close()


def test_a_limit_past_its_bounds_stops_the_start_in_one_line(
        nats_server: Any, relay_process: Any) -> None:
    proc, _ = relay_process(nats_server.url, http_max_connections="0")
    proc.start(wait=None)
    assert proc.proc.wait(30) == 2
    lines = proc.logs().strip().splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith("mailyard-relay-auth: refusing to start: ")
    assert "MAILYARD_RELAYAUTH_HTTP_MAX_CONNECTIONS:" in lines[0]
