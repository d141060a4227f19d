"""Who may ask remote-delivery's Routing.Explain, over real gRPC and HTTP with a token table:
it looks names up in DNS and (probe) connects to the hosts they give, so it is the admin's
(as Postfix's `sendmail -bv` needs a local user), not the read role's, which only looks."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from remote_rig import Rig

from mailyard.api.routing.v1 import routing_pb2, routing_pb2_grpc
from mailyard.core import auth
from mailyard.core.grpcserver import GrpcServer, service_name
from mailyard.core.http import HttpServer, make_app
from mailyard.remote_delivery import web
from mailyard.remote_delivery.explain import RoutingService
from mailyard.testing.grpccalls import status_of


class Listener:
    """A port that counts the connections made to it (and greets them)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.write(b"220 probe.test ESMTP\r\n")
            await writer.drain()
            await reader.read(1024)
            writer.close()

        self.server = await asyncio.start_server(greet, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def guarded(rig: Rig, tmp_path: Path) -> AsyncIterator[tuple[Any, dict[str, str]]]:
    tokens = auth.write_table(tmp_path / "tokens")
    routing = RoutingService(rig.deliverer, probe_timeout=5)
    server = GrpcServer("127.0.0.1", 0, [(routing_pb2_grpc.add_RoutingServicer_to_server,
                                          routing, service_name(routing_pb2, "Routing"))],
                        tmp_path / "tokens")
    await server.start()
    app = make_app("remote-delivery", tokens_file=tmp_path / "tokens")
    web.mount(app, routing, rig.control)
    http = HttpServer(app, "127.0.0.1", 0)
    await http.start()
    yield (server, http), tokens
    await http.stop()
    await server.stop(0)


def _get(port: int, path: str, token: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 (http:// only)
            json.loads(resp.read())
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        json.loads(exc.read())
        return exc.code


async def test_explain_and_its_probe_are_the_admins(rig: Rig, guarded: Any) -> None:
    (server, http), tokens = guarded
    listener = Listener()
    port = await listener.start()
    await rig.routes(f"probe.test:127.0.0.1:{port}\n")
    request = routing_pb2.ExplainRequest(address="a@probe.test", probe=True)
    async with auth.aio_channel(f"127.0.0.1:{server.port}", tokens["read"]) as channel:
        read = routing_pb2_grpc.RoutingStub(channel)
        assert await status_of(read.Explain(request, timeout=20)) == \
            grpc.StatusCode.PERMISSION_DENIED
    explain = "/api/routes/explain?address=a@probe.test&probe=true"
    assert await asyncio.to_thread(_get, http.port, explain, tokens["read"]) == 403
    assert listener.connections == 0  # a read token made the platform connect nowhere
    # the read role still sees the routes themselves (control/smtproutes)
    assert await asyncio.to_thread(_get, http.port, "/api/routes", tokens["read"]) == 200
    async with auth.aio_channel(f"127.0.0.1:{server.port}", tokens["admin"]) as channel:
        out = await routing_pb2_grpc.RoutingStub(channel).Explain(request, timeout=20)
        assert out.hops[0].answers
    assert await asyncio.to_thread(_get, http.port, explain, tokens["admin"]) == 200
    assert listener.connections == 2
