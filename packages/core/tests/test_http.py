"""The admin HTTP server: a taken port is an error at start, not a half-started process."""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import urllib.error
import urllib.request

import pytest

from mailyard.core.http import HttpServer, make_app


async def test_a_taken_port_fails_the_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = HttpServer(make_app("test", {}), "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(OSError) as info:
            await server.start()
        assert info.value.errno == errno.EADDRINUSE


async def test_serves_on_the_port_it_bound() -> None:
    server = HttpServer(make_app("test", {"probe": lambda: True}), "127.0.0.1", 0)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/readyz"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert json.loads(body) == {"ready": True, "checks": {"probe": True}}
    finally:
        await server.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "localhost.example.net", "::1:5", "127.0.0.1.nip.io"])
async def test_without_tokens_the_api_is_off_unless_on_loopback(host: str) -> None:
    """`host` is what the app was told it listens on (bound here on 127.0.0.1): only a
    loopback address or the name localhost itself keeps the API open without TOKENS_FILE."""
    app = make_app("test", {}, host=host)

    @app.get("/api/secret")
    async def secret() -> dict[str, str]:
        return {"secret": "yes"}

    server = HttpServer(app, "127.0.0.1", 0)
    await server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/api/secret"
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
        assert refused.value.code == 403
    finally:
        await server.stop()
